"""Convolutions with fake-quantized inputs: jc.quant.fake_quant_lhs_conv, jc.flax.quantized_conv."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

NHWC = ("NHWC", "HWIO", "NHWC")
NCHW = ("NCHW", "OIHW", "NCHW")
X = jax.random.normal(jax.random.key(0), (2, 6, 6, 4)) * 3.0  # NHWC
K = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))  # HWIO


def _manual_fq(x, feature_axis, bits, per_token=True):
    qmax = 2 ** (bits - 1) - 1
    axes = (feature_axis,) if per_token else tuple(range(x.ndim))
    s = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / qmax
    return jnp.round(x / s) * s


def _conv(x, k, dn, **kw):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn, **kw)


def _vjp(fn, x, k, g):
    out, vjp = jax.vjp(fn, x, k)
    return out, *vjp(g)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("per_token", [True, False])
def test_forward_is_the_conv_of_the_fake_quantized_input(layout, per_token):
    # grouped (2 groups of 2 input features), dilated, strided
    x, k, dn, feat = X, jax.random.normal(jax.random.key(5), (3, 3, 2, 6)), NHWC, 3
    if layout == "NCHW":
        x, k, dn, feat = X.transpose(0, 3, 1, 2), k.transpose(3, 2, 0, 1), NCHW, 1
    kw = dict(rhs_dilation=(2, 1), feature_group_count=2)
    got = jc.quant.fake_quant_lhs_conv(
        x, k, (2, 1), "SAME", dimension_numbers=dn, bits=4, per_token=per_token, **kw
    )
    ref = lax.conv_general_dilated(
        _manual_fq(x, feat, 4, per_token), k, (2, 1), "SAME", dimension_numbers=dn, **kw
    )
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # the quantization is real: the float conv differs
    plain = lax.conv_general_dilated(x, k, (2, 1), "SAME", dimension_numbers=dn, **kw)
    assert not np.allclose(np.asarray(got), np.asarray(plain), atol=1e-2)
    jitted = jax.jit(
        lambda a, b: jc.quant.fake_quant_lhs_conv(
            a, b, (2, 1), "SAME", dimension_numbers=dn, bits=4, per_token=per_token, **kw
        )
    )
    np.testing.assert_allclose(np.asarray(jitted(x, k)), np.asarray(got), rtol=1e-6, atol=1e-6)


def test_backward_operands():
    g = jax.random.normal(jax.random.key(2), _conv(X, K, NHWC).shape)

    def ours(residuals):
        return _vjp(
            lambda x, k: jc.quant.fake_quant_lhs_conv(
                x, k, (1, 1), "SAME", dimension_numbers=NHWC, bits=4, residuals=residuals
            ),
            X,
            K,
            g,
        )

    # "original": the straight-through estimator over the whole conv, dk from the input as is
    _, dx, dk = ours("original")
    _, want_dx, want_dk = _vjp(lambda x, k: _conv(x, k, NHWC), X, K, g)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(want_dx), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dk), np.asarray(want_dk), rtol=1e-5, atol=1e-4)
    # "quantized": plain autodiff of the fake-quantized forward
    got = ours("quantized")
    ref = _vjp(lambda x, k: _conv(jc.quant.fake_quant_activation(x, 4), k, NHWC), X, K, g)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    assert not np.allclose(np.asarray(got[2]), np.asarray(dk), atol=1e-2)


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_static_range_clips_and_masks_the_input_gradient(ste):
    absmax = 2.0  # |X| reaches ~10: many entries clip
    inside = np.abs(np.asarray(X)) / (absmax / 7.0) < 7.5
    assert 0 < inside.sum() < inside.size
    g = jax.random.normal(jax.random.key(3), _conv(X, K, NHWC).shape)
    _, full_dx, _ = _vjp(lambda x, k: _conv(x, k, NHWC), X, K, g)
    for residuals in ("original", "quantized"):
        out, dx, _ = _vjp(
            lambda x, k, r=residuals: jc.quant.fake_quant_lhs_conv(
                x,
                k,
                (1, 1),
                "SAME",
                dimension_numbers=NHWC,
                bits=4,
                absmax=absmax,
                ste=ste,
                residuals=r,
            ),
            X,
            K,
            g,
        )
        s = absmax / 7.0
        ref = _conv(jnp.clip(jnp.round(X / s), -7, 7) * s, K, NHWC)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-4)
        want = np.where(inside, full_dx, 0.0) if ste == "clipped" else np.asarray(full_dx)
        np.testing.assert_allclose(np.asarray(dx), want, rtol=1e-5, atol=1e-4)


def test_bf16_stays_bf16():
    xb, kb = X.astype(jnp.bfloat16), K.astype(jnp.bfloat16)
    y, dx, dk = _vjp(
        lambda a, b: jc.quant.fake_quant_lhs_conv(a, b, (1, 1), "SAME", dimension_numbers=NHWC),
        xb,
        kb,
        jnp.ones((2, 6, 6, 5), jnp.bfloat16),
    )
    assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16


def test_nan_input_gives_nan_outputs_not_a_silent_number():
    x = X.at[0, 1, 1, 0].set(jnp.nan)
    y = jc.quant.fake_quant_lhs_conv(x, K, (1, 1), "SAME", dimension_numbers=NHWC)
    assert np.isnan(np.asarray(y[0, :3, :3])).any()
    assert np.isfinite(np.asarray(y[1])).all()  # the other image is untouched


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        jc.flax.quantized_conv(1)
    with pytest.raises(ValueError, match="ste"):
        jc.flax.quantized_conv(8, ste="soft")
    with pytest.raises(ValueError, match="residuals"):
        jc.flax.quantized_conv(8, residuals="both")
    with pytest.raises(ValueError, match="absmax must be a scalar"):
        jc.flax.quantized_conv(8, absmax=jnp.ones(2))
    with pytest.raises(ValueError, match="residuals"):
        jc.quant.fake_quant_lhs_conv(X, K, (1, 1), "SAME", residuals="both")
    with pytest.raises(ValueError, match="absmax must be a scalar"):
        jc.quant.fake_quant_lhs_conv(X, K, (1, 1), "SAME", absmax=jnp.ones(3))
    with pytest.raises(TypeError, match="x must be a float"):
        jc.quant.fake_quant_lhs_conv(X.astype(jnp.int32), K, (1, 1), "SAME")


class _CNN(nnx.Module):
    def __init__(self, rngs, **quant):
        conv = jc.flax.quantized_conv(8, **quant)
        self.c1 = nnx.Conv(4, 6, (3, 3), strides=2, conv_general_dilated=conv, rngs=rngs)
        self.head = nnx.Linear(6, 3, dot_general=jc.flax.quantized_dot_general(8), rngs=rngs)

    def __call__(self, x):
        return self.head(jax.nn.relu(self.c1(x)).mean(axis=(1, 2)))


KERNELS = jc.rules([(".*/kernel.*", jc.quant.qat(bits=8)), (".*", None)])


def _loss_and_step(graphdef, rest, cstate, tx):
    def loss(params, x, y):
        model = nnx.merge(graphdef, KERNELS.apply(params, cstate), rest)
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    @jax.jit
    def step(params, opt, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    return loss, step


def test_nnx_conv_layer_matches_the_functional_form_and_trains():
    model = _CNN(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cstate = KERNELS.init(params)
    view = KERNELS.apply(params, cstate)
    # the conv layer is the functional conv of the fake-quantized input, plus the bias
    c1 = nnx.merge(graphdef, view, rest).c1
    k, b = c1.kernel[...], c1.bias[...]
    ref = lax.conv_general_dilated(
        _manual_fq(X, 3, 8), k, (2, 2), "SAME", dimension_numbers=NHWC
    ) + b.reshape(1, 1, 1, -1)
    np.testing.assert_allclose(np.asarray(c1(X)), np.asarray(ref), rtol=1e-5, atol=1e-4)

    y = jnp.array([0, 1])
    tx = optax.adam(1e-2)
    loss, step = _loss_and_step(graphdef, rest, cstate, tx)
    opt = tx.init(params)
    k0 = np.asarray(params["c1"]["kernel"][...])
    first = None
    for _ in range(15):
        params, opt, value = step(params, opt, X, y)
        first = float(value) if first is None else first
    _, _, last = step(params, opt, X, y)
    assert float(last) < 0.5 * first
    # the gradients reach the conv kernel
    assert not np.allclose(np.asarray(params["c1"]["kernel"][...]), k0, atol=1e-3)


def test_sharded_batch_matches_one_device():
    devices = np.array(jax.devices()[:8])
    if devices.size < 8:
        pytest.skip("needs 8 devices")
    mesh = Mesh(devices, ("data",))
    x = jax.random.normal(jax.random.key(4), (8, 6, 6, 4))
    y = jnp.arange(8) % 3
    model = _CNN(nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cstate = KERNELS.init(params)
    loss, _ = _loss_and_step(graphdef, rest, cstate, optax.sgd(0.1))
    grad = jax.jit(jax.value_and_grad(loss))
    ref = grad(params, x, y)
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    got = grad(params, xs, ys)
    chex.assert_trees_all_close(got, ref, rtol=1e-5, atol=1e-5)
