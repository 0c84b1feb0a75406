"""shrink: channel-pruned Flax MLP / CNN become smaller models computing the same function."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


class CNN(nn.Module):
    features: Sequence[int] = (8, 16)
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.relu(nn.Conv(f, (3, 3), padding="SAME", name=f"Conv_{i}")(x))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.classes, name="Dense_0")(x)


def init_params(model, x, seed=0):
    """Random params of the model's structure (no initializer compiles: shapes only)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(max(s.shape[0], 1)), s.dtype),
        shapes,
    )


def prune_then_shrink(model, params, routes, layers):
    comp = jc.rules([*routes, (".*", None)])
    params = jax.tree.map(lambda x: x + 0.1, params)  # nonzero biases: dead units are constant
    pruned = jax.jit(lambda p: jc.finalize(comp, p, comp.init(p)))(params)
    small, sizes = jc.prune.shrink(pruned, layers)
    return pruned, small, sizes


@pytest.mark.parametrize("with_bias", [True, False])
def test_shrink_mlp_same_function(with_bias):
    model = jc.workloads.MLP((16, 12, 10))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 20)), jnp.float32)
    params = init_params(model, x)
    rx = "Dense_[01]/.*" if with_bias else "Dense_[01]/kernel"
    pruner = jc.prune.magnitude(0.5, structure=jc.prune.channel())
    pruned, small, sizes = prune_then_shrink(
        model, params, [(rx, pruner)], ["Dense_0", "Dense_1", "Dense_2"]
    )
    assert sizes == {"Dense_0": 8, "Dense_1": 6, "Dense_2": 10}
    assert small["Dense_0"]["kernel"].shape == (20, 8)
    assert small["Dense_1"]["kernel"].shape == (8, 6)
    assert small["Dense_2"]["kernel"].shape == (6, 10)
    want = jax.jit(model.apply)({"params": pruned}, x)
    got = jax.jit(jc.workloads.MLP((8, 6, 10)).apply)({"params": small}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_shrink_cnn_same_function():
    model = CNN()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 3)), jnp.float32)
    params = init_params(model, x)
    pruner = jc.prune.magnitude(0.5, structure=jc.prune.channel())
    pruned, small, sizes = prune_then_shrink(
        model, params, [("Conv_.*", pruner)], ["Conv_0", "Conv_1", "Dense_0"]
    )
    # kernel and bias pruned together: dead channels output 0 and are removed everywhere,
    # including the flattened input of the Dense layer.
    assert sizes == {"Conv_0": 4, "Conv_1": 8, "Dense_0": 10}
    assert small["Conv_1"]["kernel"].shape == (3, 3, 4, 8)
    assert small["Dense_0"]["kernel"].shape == (6 * 6 * 8, 10)
    want = jax.jit(model.apply)({"params": pruned}, x)
    got = jax.jit(CNN((4, 8)).apply)({"params": small}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_shrink_keeps_conv_units_whose_constant_output_is_not_zero():
    model = CNN()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 3)), jnp.float32)
    params = init_params(model, x)
    params["Conv_0"]["bias"] = jnp.linspace(-1.0, 1.0, 8)  # relu(b) > 0 for 4 units
    params["Conv_0"]["kernel"] = params["Conv_0"]["kernel"].at[..., :4].set(0.0).at[..., 6].set(0.0)
    small, sizes = jc.prune.shrink(params, ["Conv_0", "Conv_1", "Dense_0"])
    # zero-padded borders make a constant channel position-dependent after a conv: only the
    # dead units with relu(b) == 0 (0..3) go; unit 6 (b > 0) stays.
    assert sizes["Conv_0"] == 4
    got = jax.jit(CNN((4, 16)).apply)({"params": small}, x)
    np.testing.assert_allclose(
        np.asarray(got),
        np.asarray(jax.jit(model.apply)({"params": params}, x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_shrink_errors():
    p = {"Dense_0": {"kernel": jnp.ones((3, 4))}, "Dense_1": {"kernel": jnp.ones((5, 2))}}
    with pytest.raises(ValueError, match="do not chain"):
        jc.prune.shrink(p, ["Dense_0", "Dense_1"])
    with pytest.raises(ValueError, match="Dense_9"):
        jc.prune.shrink(p, ["Dense_0", "Dense_9"])
    with pytest.raises(ValueError, match="at least one"):
        jc.prune.shrink(p, [])
