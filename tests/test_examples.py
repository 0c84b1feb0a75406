"""The examples run (with few steps) and do what they say."""

from __future__ import annotations

import importlib.util
import pathlib

import jax.numpy as jnp

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_pytree(capsys):
    result = load("plain_pytree").main(["--steps", "60"])
    out = capsys.readouterr().out
    assert "Dense_0/kernel" in out and "test accuracy" in out
    assert result["compressed_accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert result["ratio"] > 5.5  # int8 and 50% sparse kernels, float biases


def test_linen_train_step_saves_and_resumes(tmp_path, capsys):
    # Bit-identical resume itself is tested in tests/io; here the example's own loop.
    main = load("linen_train_step").main
    common = ["--prune-at", "25", "--save-every", "10", "--ckpt", str(tmp_path)]
    first = main(["--steps", "20", *common])
    assert first["step"] == 20
    assert "resumed" not in capsys.readouterr().out
    resumed = main(["--steps", "30", *common])
    assert "resumed at step 20" in capsys.readouterr().out
    assert resumed["step"] == 30 and int(resumed["state"].opt_state[0].count) == 30
    assert resumed["compressed_accuracy"] > 0.6
    kernel = resumed["state"].params["Dense_0"]["kernel"]
    assert int(jnp.sum(kernel == 0)) == kernel.size // 2  # pruned at 25, after the resume


def test_nnx_train_step(capsys):
    result = load("nnx_train_step").main(["--steps", "40", "--prune-at", "10"])
    assert "Dense_1/kernel" in capsys.readouterr().out
    assert result["compressed_accuracy"] > 0.6
    for layer in ("Dense_0", "Dense_1"):
        kernel = getattr(result["cmodel"].model, layer).kernel[...]
        assert int(jnp.sum(kernel == 0)) == kernel.size // 2
