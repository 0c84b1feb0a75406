"""Shared benchmark helpers: interleaved timing with medians, and result files.

The machine is shared and noisy, so variants are never timed one after the other: each
round runs every variant once, in a rotated order, and the figure reported is the median
over rounds. Targets are ratios between variants measured in the same run.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def block(x: Any) -> Any:
    """Waits for every array in ``x``."""
    return jax.block_until_ready(x)


def time_interleaved(
    variants: Mapping[str, Callable[[], Any]],
    *,
    rounds: int = 30,
    warmup: int = 3,
    inner: int = 1,
) -> dict[str, dict[str, float]]:
    """Times zero-argument callables in interleaved rounds; returns per-variant statistics.

    Each callable must do its work and block on it (``jax.block_until_ready``). ``inner``
    calls are timed together per round (for very short steps). The order inside a round is
    rotated every round so no variant always runs first.

    Returns:
      ``{name: {"median_s", "p10_s", "p90_s", "rounds", "samples_s"}}`` (seconds per call;
      ``samples_s``: one per round, in round order, for :func:`paired_ratios`).
    """
    names = list(variants)
    for _ in range(warmup):
        for n in names:
            variants[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            fn = variants[n]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[n].append((time.perf_counter() - t0) / inner)
    return {n: summarize(s) for n, s in samples.items()}


def summarize(samples: list[float]) -> dict[str, Any]:
    """``{"median_s", "p10_s", "p90_s", "rounds", "samples_s"}`` of per-round seconds."""
    q = statistics.quantiles(samples, n=10) if len(samples) >= 2 else [samples[0]] * 9
    return {
        "median_s": statistics.median(samples),
        "p10_s": q[0],
        "p90_s": q[-1],
        "rounds": len(samples),
        "samples_s": list(samples),
    }


def paired_ratios(timings: Mapping[str, Mapping[str, Any]], baseline: str) -> dict[str, float]:
    """Median over rounds of ``variant / baseline`` timed in the *same* round.

    Each round runs every variant back to back, so a slow spell of a shared machine hits a
    round's numerator and denominator alike; the per-round ratio cancels it, where the ratio
    of two medians does not.
    """
    base = timings[baseline]["samples_s"]
    return {
        n: statistics.median(a / b for a, b in zip(t["samples_s"], base, strict=True))
        for n, t in timings.items()
    }


def median_ci(values: list[float], level: float = 0.9) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics ``(x_(k), x_(n+1-k))``.

    ``k`` is the largest rank whose interval covers the true median with probability at least
    ``level`` for any continuous distribution (the number of values below the median is
    Binomial(n, 1/2)). With 10 sessions and ``level=0.9`` that is the 2nd smallest and 2nd
    largest value (coverage 97.9%; the 3rd / 8th would give only 89.1%). Fewer than 5 values
    cannot reach 90%: the interval is then the full range.

    Example:
      >>> median_ci([1.05, 1.01, 1.03, 1.02, 1.04, 1.00, 1.06, 1.07, 1.08, 1.09])
      (1.01, 1.08)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"median_ci: level must be in (0, 1), got {level!r}")
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("median_ci: no values")

    def coverage(k: int) -> float:  # P(k <= #values below the median <= n - k)
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return x[k - 1], x[n - k]


def ratios(timings: Mapping[str, Mapping[str, float]], baseline: str) -> dict[str, float]:
    """Median time of each variant divided by the baseline's median."""
    base = timings[baseline]["median_s"]
    return {n: t["median_s"] / base for n, t in timings.items()}


def environment() -> dict[str, Any]:
    """Facts about the run that a reader needs to compare figures."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def markdown_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (dicts), floats to 4 significant digits."""
    if not rows:
        return ""
    columns = columns or list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, data: Mapping[str, Any], markdown: str) -> pathlib.Path:
    """Writes ``benchmarks/results/{name}.json`` (with the environment) and ``{name}.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": environment(), **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    return RESULTS / f"{name}.json"
