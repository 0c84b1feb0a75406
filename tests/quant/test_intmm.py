"""The real integer matmul: int8 x int8 -> int32, equal to the fake-quant forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc

X = jax.random.normal(jax.random.key(0), (2, 3, 32))
W = jax.random.normal(jax.random.key(1), (32, 16))


def test_int8_dot_general_accumulates_exactly_in_int32():
    a = jnp.full((2, 600), 127, jnp.int8)
    b = jnp.full((600, 3), -127, jnp.int8)
    out = jc.quant.int8_dot_general(a, b, (((1,), (0,)), ((), ())))
    assert out.dtype == jnp.int32
    assert int(out[0, 0]) == -127 * 127 * 600
    with pytest.raises(TypeError, match="int8"):
        jc.quant.int8_dot_general(a.astype(jnp.int32), b, (((1,), (0,)), ((), ())))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bits=8),
        dict(bits=8, channel_axis=None),
        dict(bits=4, group_size=8),
        dict(bits="ternary"),
    ],
    ids=["int8", "int8_tensor", "int4_group", "ternary"],
)
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_qdot_equals_fake_quant_forward(kwargs, static):
    comp = jc.quant.qat(**kwargs)
    state = comp.init({"w": W})
    qw = jc.quant.quantize({"w": W}, state)["w"]
    absmax = 2.5 if static else None
    y = jax.jit(lambda x, q: jc.quant.qdot(x, q, act_absmax=absmax))(X, qw)
    xf = jc.quant.fake_quant_activation(X, 8, absmax=absmax)
    ref = xf @ comp.apply({"w": W}, state)["w"]
    assert y.shape == (2, 3, 16) and y.dtype == X.dtype
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_qdot_uses_an_int32_dot_general():
    comp = jc.quant.qat(bits=8)
    qw = jc.quant.quantize({"w": W}, comp.init({"w": W}))["w"]
    text = jax.jit(jc.quant.qdot).lower(X, qw).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) == 1
    assert "(tensor<6x32xi8>, tensor<32x16xi8>) -> tensor<6x16xi32>" in dots[0]


def test_qdot_rejects_what_it_cannot_do():
    comp = jc.quant.qat(bits=8, symmetric=False)
    qw = jc.quant.quantize({"w": W}, comp.init({"w": W}))["w"]
    with pytest.raises(ValueError, match="symmetric"):
        jc.quant.qdot(X, qw)
    comp = jc.quant.qat(bits=8)
    qw = jc.quant.quantize({"w": W}, comp.init({"w": W}))["w"]
    with pytest.raises(ValueError, match="expects 32"):
        jc.quant.qdot(X[..., :8], qw)
    with pytest.raises(ValueError, match="QArray"):
        jc.quant.qdot(X, W)


def test_activation_quant_per_token_and_gradient():
    x = jnp.array([[0.5, -1.0, 0.25], [10.0, 0.1, -5.0]])
    y = jc.quant.fake_quant_activation(x, 8)
    s = jnp.max(jnp.abs(x), -1, keepdims=True) / 127
    np.testing.assert_allclose(np.asarray(y), np.asarray(jnp.round(x / s) * s), rtol=1e-6)
    g = jax.grad(lambda x: jnp.sum(jc.quant.fake_quant_activation(x, 8, absmax=1.0)))(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(jnp.abs(x) <= 1.0, np.float32))
    with pytest.raises(ValueError, match="act_bits"):
        jc.quant.fake_quant_activation(x, 1)
