"""The method recipes (configs/mnist_*.py) run end to end on tiny settings, and the exported
artifact: real file bytes, exact reproduction of the recorded metrics, the layouts it picks.

Each recipe runs on the embedded digits data (``--config.data.name=digits``) with a 32-unit
model and a handful of steps, so the whole file stays cheap; the figures in the recipes'
docstrings come from full runs.
"""

import contextlib
import io
import json
import pathlib

import ml_collections
import numpy as np
import pytest

import jaxcompress as jc
from jaxcompress.cli import _config, _inspect, _run, recipes
from jaxcompress.cli._errors import UsageError
from jaxcompress.cli.main import main

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
STEPS = 6
TINY = [
    "--config.data.name=digits",
    f"--config.train.steps={STEPS}",
    f"--config.baseline.steps={STEPS}",
    "--config.model.kwargs.features=(32, 10)",
    "--config.train.batch_size=32",
    "--config.eval.batch_size=250",
    "--config.output.plots=false",
    "--config.output.checkpoint_every=0",
]
NO_BASELINE = "--config.baseline.enabled=false"  # compress the initial weights (cheaper)
# Per recipe: the extra overrides that make its schedule act within STEPS steps.
EXTRA = {
    "mnist_int4_lsq": [NO_BASELINE],
    "mnist_nm24": [NO_BASELINE],
    "mnist_rigl90": [
        NO_BASELINE,
        "--config.compress.end=4",
        "--config.compress.update_every=2",
    ],
    "mnist_kd": ["--config.baseline.model.kwargs.features=(64, 10)"],
    "mnist_deep_compression": [NO_BASELINE, "--config.compress.share_at=3"],
}


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _run_recipe(name, out, extra=()):
    rc, stdout, err = _main(
        ["run", str(CONFIGS / f"{name}.py"), *TINY, *EXTRA[name], *extra, "--out", str(out)]
    )
    assert rc == 0, err
    rep = json.loads((out / "report.json").read_text())
    info = jc.io.artifact_info(out / "artifact" / "params.jca")
    return rep, {leaf.path: leaf for leaf in info.leaves}, stdout


def get_config(name):
    return _config.load(str(CONFIGS / f"{name}.py"))


def _kernels(leaves):
    return {p: leaf for p, leaf in leaves.items() if p.endswith("kernel")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each new recipe, run once on tiny settings: {name: (report, artifact leaves, dir)}."""
    root = tmp_path_factory.mktemp("recipes")
    out = {}
    for name in EXTRA:
        rep, leaves, _ = _run_recipe(name, root / name)
        out[name] = (rep, leaves, root / name)
    return out


def test_int4_lsq_learns_step_sizes_and_exports_4_bit(runs):
    rep, leaves, _ = runs["mnist_int4_lsq"]
    rows = {r["path"]: r for r in rep["summary"]["leaves"]}
    for path, leaf in _kernels(leaves).items():
        assert rows[path]["bits"] == 4
        # at most 15 levels per channel: 4-bit integers or 4-bit codebook indices
        assert leaf.values in ("grid", "codebook") and leaf.per_channel and leaf.bits <= 4
    assert rep["size"]["artifact_file_bytes"] < 0.3 * rep["size"]["float32_bytes"]


def test_nm24_exports_exactly_half_of_every_kernel_sparse(runs):
    rep, leaves, _ = runs["mnist_nm24"]
    for path, leaf in _kernels(leaves).items():
        assert leaf.layout == "sparse", path
        assert leaf.nnz == int(np.prod(leaf.shape)) // 2  # exactly 2 of every 4
    rows = {r["path"]: r for r in rep["summary"]["leaves"]}
    assert rows["Dense_0/kernel"]["sparsity"] == 0.5


def test_rigl90_trains_sparse_from_scratch(runs):
    rep, leaves, _ = runs["mnist_rigl90"]
    assert get_config("mnist_rigl90").baseline.warm_start is False
    rows = {r["path"]: r for r in rep["summary"]["leaves"]}
    kept = total = 0
    for path, leaf in _kernels(leaves).items():
        size = int(np.prod(leaf.shape))
        active = round(size * (1 - rows[path]["sparsity"]))
        assert leaf.layout == "sparse" and leaf.nnz <= active  # regrown weights start at 0
        kept, total = kept + active, total + size
    assert abs(kept / total - 0.1) < 0.01  # ERK spreads 10% density over the layers


def test_kd_distills_a_bigger_teacher_into_the_student(runs):
    rep, _, _ = runs["mnist_kd"]
    assert rep["model"]["kwargs"]["features"] == [32, 10]
    assert rep["distill"]["loss"] == "distill.kd_loss"
    assert rep["distill"]["teacher"] == "float baseline (MLP, 4,810 params)"  # 64*65 + 65*10
    assert rep["model"]["num_params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert rep["metrics"]["float"]["examples"] == 250  # the teacher, evaluated on test


def test_deep_compression_exports_bitmask_and_codebook(runs):
    rep, leaves, _ = runs["mnist_deep_compression"]
    for path, leaf in _kernels(leaves).items():
        assert leaf.layout == "sparse", path
        assert leaf.values == "codebook" and leaf.codebook_size <= 16 and leaf.bits <= 4
        assert leaf.nnz <= int(np.prod(leaf.shape)) - int(0.9 * np.prod(leaf.shape))
    assert rep["size"]["artifact_file_bytes"] < 0.15 * rep["size"]["float32_bytes"]


@pytest.mark.parametrize("name", list(EXTRA))
def test_eval_reproduces_the_recorded_metrics_exactly(runs, name):
    rep, _, d = runs[name]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        got = _inspect.evaluate(str(d))
    want = rep["metrics"]["compressed"]
    assert got["accuracy"] == want["accuracy"] and got["loss"] == want["loss"]
    assert "(identical)" in out.getvalue()


INT8 = """
import ml_collections

def get_config():
    c = ml_collections.ConfigDict()
    c.data = {"name": "digits"}
    c.model = {"name": "MLP", "kwargs": {"features": (256, 10)}}
    c.train = {"steps": 6, "batch_size": 32}
    c.eval = {"every": 0, "batch_size": 250}
    c.baseline = {"enabled": False}
    c.compress = {"rules": [(".*/kernel", "quant.qat(bits=8)"), (".*/bias", None)]}
    c.output = {"plots": False, "checkpoint_every": 0}
    return c
"""


def test_int8_artifact_is_real_bytes_and_small(tmp_path):
    recipe = tmp_path / "int8.py"
    recipe.write_text(INT8)
    d = tmp_path / "run"
    rc, out, err = _main(["run", str(recipe), "--out", str(d)])
    assert rc == 0, err
    rep = json.loads((d / "report.json").read_text())
    size = rep["size"]
    f = d / "artifact" / "params.jca"
    assert size["artifact_file_bytes"] == f.stat().st_size  # the file's real bytes
    assert size["artifact_file_bytes"] <= 0.3 * size["float32_bytes"]
    assert size["artifact_ratio"] == pytest.approx(size["float32_bytes"] / f.stat().st_size)
    assert "artifact file " in out and "params.jca" in out
    info = jc.io.artifact_info(f)
    for leaf in info.leaves:
        want = ("grid", 8) if leaf.path.endswith("kernel") else ("raw", 0)
        assert (leaf.values, leaf.bits) == want, leaf.path
    rc, out, err = _main(["eval", str(d)])
    assert rc == 0, err
    assert "(identical)" in out
    rc, out, err = _main(["inspect", str(d)])
    assert rc == 0, err
    assert "grid/ch" in out and "lzma file" in out and "4 dense leaves" in out


# ---------------------------------------------------------------------------------------
# Config pieces (no training).


def test_baseline_model_settings():
    cfg = _config.load(str(CONFIGS / "mnist_kd.py"))
    _config.validate(cfg)
    assert cfg.baseline.model.name == "MLP"
    assert tuple(cfg.baseline.model.kwargs.features) == (300, 100, 10)
    _config.override(cfg, "baseline.warm_start", "true")
    with pytest.raises(UsageError, match="set baseline.warm_start=False"):
        _config.validate(cfg)
    _config.override(cfg, "baseline.enabled", "false")
    with pytest.raises(UsageError, match="baseline.model is set but baseline.enabled=False"):
        _config.validate(cfg)


def test_baseline_model_bad_attribute_names_the_key():
    cfg = get_config("mnist_kd")
    _config.override(cfg, "data.name", "digits")
    with cfg.unlocked():
        cfg.baseline.model.kwargs.widths = (3,)
    with pytest.raises(UsageError, match="baseline.model.kwargs: MLP has no attribute.s. widths"):
        _run.build(cfg)


def test_recipe_blocks():
    c = recipes.mnist("LeNet-300-100", steps=7, lr=1e-3, baseline_steps=9, warm_start=False)
    assert isinstance(c, ml_collections.ConfigDict)
    assert (c.train.steps, c.baseline.steps, c.baseline.warm_start) == (7, 9, False)
    assert c.model.kwargs.features == (300, 100, 10)
    assert recipes.mnist(steps=5).baseline.enabled is False
    with pytest.raises(ValueError, match="unknown standard model 'LeNet-7'; known: LeNet,"):
        recipes.mnist("LeNet-7")
    assert recipes.shakespeare(steps=5, lr=1e-3, baseline_steps=3).baseline.steps == 3
