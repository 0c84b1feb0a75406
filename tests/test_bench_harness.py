"""The benchmark harness: interleaved timing records per-round samples; paired ratios."""

import pytest

from benchmarks import _harness


def test_paired_ratios_cancel_a_slow_spell_that_hits_both_variants():
    # the machine is 3x slower in the middle rounds; the variant is always 10% slower
    base = [1.0, 1.0, 3.0, 3.0, 3.0, 1.0, 1.0]
    timings = {
        "float": _harness.summarize(base),
        "quant": _harness.summarize([1.1 * b for b in base]),
    }
    paired = _harness.paired_ratios(timings, "float")
    assert paired["float"] == 1.0
    assert paired["quant"] == pytest.approx(1.1)
    # the ratio of medians is fooled when the spell hits the variants' rounds unevenly
    skewed = {
        "float": _harness.summarize(base),
        "quant": _harness.summarize([1.1 * b for b in [1.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0]]),
    }
    assert _harness.ratios(skewed, "float")["quant"] == pytest.approx(3.3)
    assert _harness.paired_ratios(skewed, "float")["quant"] == pytest.approx(1.1)


def test_time_interleaved_keeps_one_sample_per_round_in_order():
    calls = []
    t = _harness.time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=5, warmup=1
    )
    assert t["a"]["rounds"] == 5 and len(t["a"]["samples_s"]) == 5
    assert calls[:2] == ["a", "b"] and calls.count("a") == calls.count("b") == 6
    assert t["a"]["p10_s"] <= t["a"]["median_s"] <= t["a"]["p90_s"]


def test_median_ci_uses_the_binomial_order_statistics():
    ten = [1.05, 1.01, 1.03, 1.02, 1.04, 1.00, 1.06, 1.07, 1.08, 1.09]
    assert _harness.median_ci(ten) == (1.01, 1.08)  # ranks 2 and 9: coverage 97.9%
    assert _harness.median_ci(ten, level=0.85) == (1.02, 1.07)  # ranks 3 and 8: 89.1%
    twenty = [float(i) for i in range(20)]
    assert _harness.median_ci(twenty) == (5.0, 14.0)  # ranks 6 and 15: coverage 95.9%
    assert _harness.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few: the full range
    with pytest.raises(ValueError, match="no values"):
        _harness.median_ci([])
    with pytest.raises(ValueError, match="level must be in"):
        _harness.median_ci(ten, level=1.0)


def test_results_index_leaves_out_smoke_runs(tmp_path, monkeypatch):
    from benchmarks import run_all

    for stem in ("quant_overhead", "quant_overhead_quick"):
        (tmp_path / f"{stem}.json").write_text('{"environment": {"backend": "cpu"}}')
        (tmp_path / f"{stem}.md").write_text(f"# {stem} table\n")
    monkeypatch.setattr(run_all, "RESULTS", tmp_path)
    text = run_all.write_index().read_text()
    assert "[quant_overhead](quant_overhead.md)" in text
    assert "## quant_overhead table" in text
    assert "quick" not in text  # git ignores *_quick results: a link would break in a clone
