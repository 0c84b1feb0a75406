"""Recipes and overrides: loading, merging onto the defaults, --config. parsing, validation."""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import pytest

import jaxcompress as jc
from jaxcompress.cli import _config, _spec, _train
from jaxcompress.cli._errors import UsageError

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.py"))


def test_defaults_have_every_section():
    keys = _config.leaf_keys(_config.defaults())
    for k in (
        "data.name",
        "model.name",
        "train.steps",
        "train.epochs",
        "train.batch_size",
        "train.optimizer",
        "train.lr",
        "train.schedule",
        "train.seed",
        "eval.every",
        "baseline.enabled",
        "baseline.warm_start",
        "compress.rules",
        "output.dir",
    ):
        assert k in keys


@pytest.mark.parametrize(
    "current, text, expected",
    [
        (100, "30", 30),
        (100, "1e3", 1000),
        (1e-3, "3e-4", 3e-4),
        (1e-3, "1", 1.0),
        (True, "false", False),
        (False, "1", True),
        ("adam", "sgd", "sgd"),
        ("adam", "'adamw'", "adamw"),
        ((256, 10), "64,10", (64, 10)),
        ((256, 10), "(32, 16, 10)", (32, 16, 10)),
        ([1, 2], "[3]", [3]),
        (None, "5", 5),
        (None, "hello", "hello"),
        (None, "(1, 2)", (1, 2)),
        (100, "None", None),
    ],
)
def test_coerce(current, text, expected):
    got = _config.coerce("k", current, text)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "current, text, match",
    [
        (100, "abc", "expected an integer"),
        (100, "2.5", "expected an integer"),
        (1.0, "fast", "expected a number"),
        (True, "maybe", "expected true or false"),
        ({}, "1", "expected a dict"),
    ],
)
def test_coerce_errors(current, text, match):
    with pytest.raises(UsageError, match=match):
        _config.coerce("train.x", current, text)


def test_coerce_section_lists_its_keys():
    with pytest.raises(UsageError, match="is a section; set one of its keys: train.batch_size"):
        _config.coerce("train", _config.defaults().train, "1")


def test_split_values():
    assert _config.split_values("2,4,8") == ["2", "4", "8"]
    assert _config.split_values("(64,10),(32,10)") == ["(64,10)", "(32,10)"]
    assert _config.split_values("'a,b',c") == ["'a,b'", "c"]
    assert _config.split_values("adam, sgd") == ["adam", "sgd"]


def test_parse_override_args():
    got = _config.parse_override_args(
        [
            "--config.train.steps=200",
            "--config.train.lr",
            "0.1",
            "--config.model.kwargs.features=64,10",
        ]
    )
    assert got == [("train.steps", "200"), ("train.lr", "0.1"), ("model.kwargs.features", "64,10")]
    with pytest.raises(UsageError, match="unrecognized argument '--steps=3'"):
        _config.parse_override_args(["--steps=3"])
    with pytest.raises(UsageError, match="missing value"):
        _config.parse_override_args(["--config.train.steps"])


def test_unknown_key_is_one_line_listing_valid_keys():
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    with pytest.raises(UsageError) as e:
        _config.override(cfg, "train.stepz", "3")
    msg = str(e.value)
    assert "\n" not in msg
    assert "unknown config key 'train.stepz' (did you mean 'train.steps'?)" in msg
    assert "valid keys: baseline.enabled" in msg and "compress.bits" in msg
    with pytest.raises(UsageError, match="unknown config key 'nosuch.section.key'"):
        _config.override(cfg, "nosuch.section.key", "3")


def test_override_types_and_steps_epochs_exclusion():
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    assert _config.override(cfg, "train.steps", "30") == 30
    assert _config.override(cfg, "compress.bits", "4") == 4
    assert _config.override(cfg, "model.kwargs.features", "(32, 10)") == (32, 10)
    assert cfg.train.steps == 30 and cfg.compress.bits == 4
    assert cfg.model.kwargs.features == (32, 10)
    _config.override(cfg, "train.epochs", "2.5")
    assert cfg.train.epochs == 2.5 and cfg.train.steps is None
    _config.validate(cfg)
    _config.override(cfg, "train.steps", "10")
    assert cfg.train.steps == 10 and cfg.train.epochs is None
    _config.validate(cfg)


def _write(tmp_path, text, name="recipe.py"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "text, match",
    [
        ("def get_config(:\n", "is malformed: line 1"),
        ("x = 1\n", "defines no get_config"),
        ("def get_config():\n    return 1 / 0\n", "get_config failed: ZeroDivisionError"),
        ("def get_config():\n    return [1]\n", "returned list, not an ml_collections"),
        (
            "import ml_collections\ndef get_config():\n"
            "    return ml_collections.ConfigDict({'trian': {'steps': 1}})\n",
            "unknown key 'trian'",
        ),
        (
            "import ml_collections\ndef get_config():\n"
            "    return ml_collections.ConfigDict({'train': {'stesp': 1}})\n",
            "unknown key 'train.stesp' \\(did you mean 'train.steps'\\?\\)",
        ),
        ("def get_config():\n    return {'train': 3}\n", "'train' must be a section"),
    ],
)
def test_load_errors(tmp_path, text, match):
    with pytest.raises(UsageError, match=match) as e:
        _config.load(_write(tmp_path, text))
    assert "\n" not in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        _config.load(str(tmp_path / "nope.py"))


def test_free_form_sections_and_default_output(tmp_path):
    path = _write(
        tmp_path,
        "import ml_collections\ndef get_config():\n    c = ml_collections.ConfigDict()\n"
        "    c.data = {'name': 'digits', 'kwargs': {'seed': 3}}\n"
        "    c.model = {'name': 'MLP', 'kwargs': {'features': (8, 10)}}\n"
        "    c.train = {'epochs': 1.0, 'optimizer_kwargs': {'b1': 0.8}}\n"
        "    c.compress = {'alpha': 0.5, 'rules': [('.*', None)]}\n"
        "    return c\n",
        name="myrecipe.py",
    )
    cfg = _config.load(path)
    _config.validate(cfg)
    assert cfg.data.kwargs.seed == 3 and cfg.train.optimizer_kwargs.b1 == 0.8
    assert _config.hparams(cfg) == {"alpha": 0.5}
    assert cfg.output.dir == "runs/myrecipe"
    assert cfg.train.batch_size == 64  # from the defaults


@pytest.mark.parametrize(
    "key, text, match",
    [
        ("train.steps", "0", "train.steps must be an integer >= 1"),
        ("train.lr", "-1.0", "train.lr must be a number > 0"),
        ("train.schedule", "exp", "train.schedule must be one of"),
        ("data.name", "", "data.name must name a data"),
        ("eval.every", "-1", "eval.every must be an integer >= 0"),
        ("baseline.steps", "0", "baseline.steps must be an integer >= 1"),
    ],
)
def test_validate(key, text, match):
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    _config.override(cfg, key, text)
    with pytest.raises(UsageError, match=match):
        _config.validate(cfg)


def test_steps_and_epochs_both_or_neither():
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    with cfg.unlocked():
        cfg.train.epochs = 1.0
    with pytest.raises(UsageError, match="exactly one of train.steps and train.epochs"):
        _config.validate(cfg)


# Inputs for building each recipe's model without loading its data set.
_EXAMPLE = {
    "digits": (jnp.zeros((1, 64)), 10),
    "mnist": (jnp.zeros((1, 784)), 10),
    "shakespeare": (None, 84),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_build(name):
    """Every recipe loads, validates, and its rules match the parameter paths of its model."""
    cfg = _config.load(str(CONFIGS / name))
    assert isinstance(cfg, ml_collections.ConfigDict)
    _config.validate(cfg)
    x, n = _EXAMPLE[cfg.data.name]
    if x is None:
        x = jnp.zeros((1, cfg.data.kwargs.seq_len), jnp.int32)
    model, _ = _train.build_model(cfg.model.name, cfg.model.kwargs.to_dict(), n)
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    comp, used = _spec.build_compressor(cfg.compress.rules, _config.hparams(cfg))
    assert used == set(_config.hparams(cfg))  # every named hyper-parameter reaches a spec
    state = jax.eval_shape(comp.init, params)
    assert isinstance(comp, jc.Compressor) and state is not None


def test_quickstart_is_what_the_readme_promises():
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    assert cfg.data.name == "digits" and cfg.model.name == "MLP" and cfg.baseline.enabled
    assert (cfg.compress.bits, cfg.compress.sparsity) == (8, 0.5)


def test_distill_settings():
    cfg = _config.load(str(CONFIGS / "quickstart.py"))
    _config.override(cfg, "distill.loss", "distill.kd_loss")
    _config.validate(cfg)
    _config.override(cfg, "distill.weight", "1.5")
    with pytest.raises(UsageError, match="distill.weight must be a number in \\[0, 1\\]"):
        _config.validate(cfg)
    _config.override(cfg, "distill.weight", "0.5")
    _config.override(cfg, "baseline.enabled", "false")
    with pytest.raises(UsageError, match="needs baseline.enabled=True"):
        _config.validate(cfg)
