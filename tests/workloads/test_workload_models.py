"""LeNet and CharTransformer: shapes, stable parameter names, causality, jit, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc
from jaxcompress._src.paths import leaves_with_paths

LENET_PATHS = {
    "Conv_0/kernel": (5, 5, 1, 6),
    "Conv_0/bias": (6,),
    "Conv_1/kernel": (5, 5, 6, 16),
    "Conv_1/bias": (16,),
    "Dense_0/bias": (120,),
    "Dense_1/kernel": (120, 84),
    "Dense_1/bias": (84,),
    "Dense_2/kernel": (84, 10),
    "Dense_2/bias": (10,),
}


@pytest.mark.parametrize(
    "x_shape, flat_features",
    [((3, 64), 2 * 2 * 16), ((3, 784), 7 * 7 * 16), ((3, 28, 28, 1), 7 * 7 * 16)],
)
def test_lenet_shapes_and_names(x_shape, flat_features):
    model = jc.workloads.LeNet(num_classes=10)
    x = jnp.ones(x_shape)
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    got = {p: tuple(v.shape) for p, v in leaves_with_paths(params)}
    assert got == {**LENET_PATHS, "Dense_0/kernel": (flat_features, 120)}
    out = jax.eval_shape(model.apply, {"params": params}, x)
    assert out.shape == (3, 10)


def test_lenet_rejects_non_square_flat_input():
    with pytest.raises(ValueError, match="square"):
        jax.eval_shape(jc.workloads.LeNet().init, jax.random.key(0), jnp.ones((1, 63)))


def _tiny_transformer(**kw):
    return jc.workloads.CharTransformer(
        **{"vocab_size": 11, "d_model": 16, "num_heads": 2, "num_layers": 2, "max_len": 8, **kw}
    )


@pytest.fixture(scope="module")
def tiny_lm():
    model = _tiny_transformer()
    tokens = jnp.zeros((1, 8), jnp.int32)
    # random params from the shapes alone: compiling a transformer init costs seconds
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)
    return model, params, jax.jit(model.apply)


def test_transformer_names_and_shapes(tiny_lm):
    model, params, apply = tiny_lm
    paths = {p: tuple(v.shape) for p, v in leaves_with_paths(params)}
    for i in range(2):
        assert paths[f"Block_{i}/attn/qkv/kernel"] == (16, 48)
        assert paths[f"Block_{i}/attn/proj/kernel"] == (16, 16)
        assert paths[f"Block_{i}/fc/kernel"] == (16, 64)
        assert paths[f"Block_{i}/proj/kernel"] == (64, 16)
        assert paths[f"Block_{i}/ln1/scale"] == (16,)
    assert paths["embed/embedding"] == (11, 16)
    assert paths["pos_embed"] == (8, 16)
    assert paths["head/kernel"] == (16, 11)
    assert len(paths) == 2 * 12 + 6
    # every kernel is 2-D with the output channel last, as per-channel quantization expects
    assert all(len(s) == 2 for p, s in paths.items() if p.endswith("kernel"))
    tokens = jnp.arange(10, dtype=jnp.int32).reshape(2, 5) % 11
    assert apply({"params": params}, tokens).shape == (2, 5, 11)


def test_transformer_is_causal(tiny_lm):
    _, params, apply = tiny_lm
    rng = np.random.default_rng(0)
    a = rng.integers(0, 11, (2, 8)).astype(np.int32)
    b = a.copy()
    b[:, 5:] = (b[:, 5:] + 3) % 11  # change only the future of position 4
    la, lb = apply({"params": params}, a), apply({"params": params}, b)
    np.testing.assert_allclose(la[:, :5], lb[:, :5], rtol=1e-5, atol=1e-5)
    assert not np.allclose(la[:, 5:], lb[:, 5:])


def test_transformer_bad_input():
    model = _tiny_transformer()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="max_len"):
        jax.eval_shape(model.init, key, jnp.zeros((1, 9), jnp.int32))
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(_tiny_transformer(num_heads=3).init, key, jnp.zeros((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="expected int tokens"):
        jax.eval_shape(model.init, key, jnp.zeros((1, 4, 2), jnp.int32))
