"""w8a8 training on integers: `jc.quant.int8_matmul`, `quantize_activations(int_matmul=True)`."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc
from jaxcompress.quant import _intmm_ste

X = jax.random.normal(jax.random.key(0), (8, 24)) * 2.0
W = jax.random.normal(jax.random.key(1), (24, 6)) * 0.3
G = jax.random.normal(jax.random.key(2), (8, 6))
DN = (((1,), (0,)), ((), ()))
Q8 = jc.quant.qat(bits=8)


def _view(w):
    return Q8.apply({"w": w}, Q8.init({"w": w}))["w"]


def _vjp(fn, *args):
    out, vjp = jax.vjp(fn, *args)
    return out, vjp(G.reshape(out.shape).astype(out.dtype))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"bits": 4}, {"per_token": False}, {"absmax": 2.5}, {"bits": 6, "absmax": 1.0}],
)
def test_forward_is_fake_quant_activations_times_qat8_weights(kwargs):
    ref = jc.quant.fake_quant_activation(X, **kwargs) @ _view(W)
    got = jax.jit(lambda x, w: jc.quant.int8_matmul(x, w, **kwargs))(X, W)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)
    eager = jc.quant.int8_matmul(X, W, **kwargs)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(got), rtol=1e-6, atol=1e-6)


def test_other_contracting_axes_and_leading_dims():
    x3 = X.reshape(2, 4, 24)
    got = jc.quant.int8_matmul(x3, W)
    np.testing.assert_allclose(
        np.asarray(got),
        np.asarray(jc.quant.int8_matmul(X, W)).reshape(2, 4, 6),
        rtol=1e-6,
        atol=1e-6,
    )
    # lhs contracting axis 0, rhs contracting axis 1: lhs^T-like layouts
    got = jc.quant.int8_matmul(X.T, W.T, (((0,), (1,)), ((), ())))
    np.testing.assert_allclose(
        np.asarray(got), np.asarray(jc.quant.int8_matmul(X, W)), rtol=1e-6, atol=1e-6
    )


def test_a_qat8_view_keeps_its_levels_and_exports_to_them():
    view = _view(W)
    q, s = _intmm_ste.weight_levels(view, (0,))
    exported = jc.quant.quantize({"w": W}, Q8.init({"w": W}), Q8)["w"]
    np.testing.assert_array_equal(np.asarray(q), np.asarray(exported.levels()))
    np.testing.assert_array_equal(np.asarray(s), np.asarray(exported.scale))
    # the float kernel and its qat(bits=8) view give the same forward, bit for bit
    np.testing.assert_array_equal(
        np.asarray(jc.quant.int8_matmul(X, W)), np.asarray(jc.quant.int8_matmul(X, view))
    )


def test_weight_scales_are_qat8_scales_eagerly_and_under_jit():
    from jaxcompress.quant import _fake_quant

    mags = jnp.logspace(-30, 30, 64, dtype=jnp.float32)
    w = jax.random.normal(jax.random.key(7), (16, 64)) * mags[None]
    want = _fake_quant.symmetric_scale(jnp.max(jnp.abs(w), axis=0, keepdims=True), 127)
    for fn in (_intmm_ste.weight_levels, jax.jit(_intmm_ste.weight_levels, static_argnums=1)):
        _, s = fn(w, (0,))
        np.testing.assert_array_equal(
            np.asarray(s).view(np.uint32), np.asarray(want).view(np.uint32)
        )


@pytest.mark.parametrize("residuals", ["original", "quantized"])
@pytest.mark.parametrize("absmax", [None, 1.5])
def test_gradients_are_the_straight_through_ones_of_the_fake_quant_matmul(residuals, absmax):
    kw = {"absmax": absmax, "residuals": residuals}
    _, (dx, dw) = _vjp(lambda x, w: jc.quant.int8_matmul(x, w, **kw), X, W)
    # same estimator as the fake-quantized matmul with the same kernel operand
    _, (rx, rw) = _vjp(lambda x, w: jc.quant.fake_quant_lhs_dot(x, w, DN, **kw), X, W)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(rx), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(rw), rtol=1e-5, atol=1e-6)
    if absmax is None:  # dynamic ranges clip nothing: d x = g W^T
        np.testing.assert_allclose(np.asarray(dx), np.asarray(G @ W.T), rtol=1e-6, atol=1e-6)
    else:  # the clipped entries get no gradient, the others g W^T
        inside = np.abs(np.asarray(X)) <= absmax
        assert 0 < inside.mean() < 1
        np.testing.assert_array_equal(np.asarray(dx)[~inside], 0.0)
        np.testing.assert_allclose(
            np.asarray(dx)[inside], np.asarray(G @ W.T)[inside], rtol=1e-6, atol=1e-6
        )
    if residuals == "original":
        np.testing.assert_allclose(np.asarray(dw), np.asarray(X.T @ G), rtol=1e-6, atol=1e-6)
    else:
        xq = jc.quant.fake_quant_activation(X, absmax=absmax)
        np.testing.assert_allclose(np.asarray(dw), np.asarray(xq.T @ G), rtol=1e-5, atol=1e-6)
        assert not np.allclose(np.asarray(dw), np.asarray(X.T @ G), rtol=0, atol=1e-6)


def test_the_forward_runs_an_int8_dot_and_the_quantized_residuals_keep_int8():
    def loss(x, w):
        return jnp.sum(jc.quant.int8_matmul(x, w, residuals="quantized") ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(X, W).compile().as_text()
    int_dots = re.findall(r"s32\[8,6\]\{1,0\} (?:dot|fusion)\([^)]*\)", hlo)
    assert int_dots, hlo
    assert re.search(r"s8\[8,24\]", hlo) and re.search(r"s8\[24,6\]", hlo)
    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(X, W))
    assert "preferred_element_type=int32" in jaxpr


def test_non_finite_inputs_poison_their_token_or_channel():
    clean = np.asarray(jc.quant.int8_matmul(X, W))
    for bad in (jnp.nan, jnp.inf):
        y = np.asarray(jax.jit(jc.quant.int8_matmul)(X, W.at[3, 2].set(bad)))
        assert np.isnan(y[:, 2]).all()
        np.testing.assert_array_equal(np.delete(y, 2, axis=1), np.delete(clean, 2, axis=1))
        for kw in ({}, {"absmax": 2.0}):
            fn = jax.jit(lambda x, kw=kw: jc.quant.int8_matmul(x, W, **kw))
            y = np.asarray(fn(X.at[5, 1].set(bad)))
            assert np.isnan(y[5]).all()
            ref = np.asarray(jc.quant.int8_matmul(X, W, **kw))
            np.testing.assert_array_equal(np.delete(y, 5, axis=0), np.delete(ref, 5, axis=0))


def test_bf16_operands_stay_bf16():
    xb, wb = X.astype(jnp.bfloat16), W.astype(jnp.bfloat16)
    y, (dx, dw) = _vjp(jc.quant.int8_matmul, xb, wb)
    assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
    ref = jc.quant.int8_matmul(X, W)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref), rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"dimension_numbers": (((1,), (0,)), ((0,), (0,)))}, ValueError, "batch"),
        ({"dimension_numbers": (((2,), (0,)), ((), ()))}, ValueError, "contracting axes"),
        ({"residuals": "both"}, ValueError, "residuals"),
        ({"ste": "none"}, ValueError, "ste"),
        ({"bits": 9}, ValueError, "bits"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        jc.quant.int8_matmul(X, W, **kwargs)


def test_a_contraction_the_int32_accumulator_cannot_hold_is_an_error():
    n = _intmm_ste.MAX_TERMS + 1
    x, w = jax.ShapeDtypeStruct((2, n), jnp.float32), jax.ShapeDtypeStruct((n, 3), jnp.float32)
    with pytest.raises(ValueError, match="overflow"):
        jax.eval_shape(jc.quant.int8_matmul, x, w)
    jax.eval_shape(jc.quant.int8_matmul, x.update(shape=(2, n - 1)), w.update(shape=(n - 1, 3)))


def test_integer_operands_are_a_type_error():
    with pytest.raises(TypeError, match="float"):
        jc.quant.int8_matmul(X.astype(jnp.int8), W)


def test_on_an_8_device_mesh_equals_one_device():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    xs = jax.device_put(X, NamedSharding(mesh, P("data", None)))
    ws = jax.device_put(W, NamedSharding(mesh, P(None, "model")))
    fn = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jc.quant.int8_matmul(x, w) * G), (0, 1)))
    (v, (dx, dw)), (v1, (dx1, dw1)) = fn(xs, ws), fn(X, W)
    np.testing.assert_allclose(float(v), float(v1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(dx1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(dw1), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# linen: quantize_activations(int_matmul=True) trains, and exports to what it trained with.

MODEL = jc.workloads.MLP((16, 8, 4))
XM = jax.random.normal(jax.random.key(5), (32, 12))
YM = jnp.arange(32) % 4
PARAMS = MODEL.init(jax.random.key(6), XM)["params"]
KERNELS = jc.rules([(".*/kernel", Q8), (".*", None)])


def _step(compressor):
    state = jc.flax.TrainState.create(
        apply_fn=MODEL.apply, params=PARAMS, tx=optax.adam(1e-2), compressor=compressor
    )

    def loss_fn(v, state):
        with jc.flax.quantize_activations(8, int_matmul=True):
            logits = state.apply_fn({"params": state.compress(v)}, XM)
        return optax.softmax_cross_entropy_with_integer_labels(logits, YM).mean()

    @jax.jit
    def step(state):
        loss, g = jax.value_and_grad(loss_fn)(state.trainables, state)
        return state.apply_gradients(grads=g), loss

    return state, step


@pytest.mark.parametrize("compressor", [None, KERNELS], ids=["float-kernels", "qat8-kernels"])
def test_w8a8_int_training_lowers_the_loss_and_exports_exactly(compressor):
    state, step = _step(compressor if compressor is not None else jc.identity())
    losses = []
    for _ in range(25):
        state, loss = step(state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses
    # the trained float params, exported with qat(bits=8) kernels, serve on integers with
    # the training forward's numbers
    params = state.params
    with jc.flax.quantize_activations(8, int_matmul=True):
        train_fwd = MODEL.apply({"params": params}, XM)
    exported = jc.quant.quantize(params, KERNELS.init(params), KERNELS)
    with jc.flax.quantize_activations(8):
        served = jax.jit(lambda p: MODEL.apply({"params": p}, XM))(exported)
    np.testing.assert_allclose(np.asarray(served), np.asarray(train_fwd), rtol=1e-5, atol=1e-5)


def test_int_and_float_kernel_paths_train_alike():
    # qat(bits=8) kernels and float kernels quantized in the layer: the same forward (the
    # view keeps its levels); the backward differs only in d x = g W^T using the view or W
    s_float, step_float = _step(jc.identity())
    s_qat, step_qat = _step(KERNELS)
    for i in range(4):
        s_float, l_float = step_float(s_float)
        s_qat, l_qat = step_qat(s_qat)
        if i == 0:
            assert float(l_float) == float(l_qat)
        np.testing.assert_allclose(float(l_float), float(l_qat), rtol=1e-3)
