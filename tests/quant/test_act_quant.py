"""Activation quantization in Flax: linen interception, calibration, NNX dot_general."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxcompress as jc

MODEL = jc.workloads.MLP((16, 8, 4))
X = jax.random.normal(jax.random.key(0), (6, 12))
PARAMS = MODEL.init(jax.random.key(1), X)["params"]
KERNELS = jc.rules([(".*/kernel", jc.quant.qat(bits=8)), (".*", None)])


def _manual_forward(params, x, absmax=None):
    """The MLP with every Dense input fake-quantized by hand."""
    h = x
    for i in range(3):
        p = params[f"Dense_{i}"]
        a = None if absmax is None else absmax[f"Dense_{i}"]
        h = jc.quant.fake_quant_activation(h, 8, absmax=a) @ p["kernel"] + p["bias"][None]
        if i < 2:
            h = jax.nn.relu(h)
    return h


def test_dynamic_interception_matches_manual_forward():
    state = KERNELS.init(PARAMS)
    view = KERNELS.apply(PARAMS, state)

    @jax.jit
    def fwd(p, x):
        with jc.flax.quantize_activations(8):
            return MODEL.apply({"params": p}, x)

    np.testing.assert_allclose(
        np.asarray(fwd(view, X)), np.asarray(_manual_forward(view, X)), rtol=1e-5, atol=1e-6
    )
    # outside the context the model is float again
    y = MODEL.apply({"params": view}, X)
    assert not np.allclose(np.asarray(y), np.asarray(fwd(view, X)), rtol=0, atol=1e-7)


def test_static_ranges_calibration_and_export_int_path():
    state = KERNELS.init(PARAMS)
    view = KERNELS.apply(PARAMS, state)
    batches = [X[:3], X[3:]]
    ranges = jc.flax.calibrate_activations(MODEL.apply, {"params": view}, batches)
    assert sorted(ranges) == ["Dense_0", "Dense_1", "Dense_2"]
    np.testing.assert_allclose(float(ranges["Dense_0"]), float(jnp.max(jnp.abs(X))), rtol=1e-6)
    qp = jc.quant.quantize(PARAMS, state, KERNELS)

    @jax.jit
    def fwd(p, x):
        with jc.flax.quantize_activations(8, ranges=ranges):
            return MODEL.apply({"params": p}, x)

    ref = _manual_forward(view, X, ranges)
    np.testing.assert_allclose(np.asarray(fwd(view, X)), np.asarray(ref), rtol=1e-5, atol=1e-6)
    # the exported integers run the int8 x int8 -> int32 Dense: same outputs
    np.testing.assert_allclose(np.asarray(fwd(qp, X)), np.asarray(ref), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no static range for layer 'Dense_2'"):
        with jc.flax.quantize_activations(8, ranges={"Dense_0": 1.0, "Dense_1": 1.0}):
            MODEL.apply({"params": view}, X)


@pytest.mark.parametrize("method", ["percentile", "ema"])
def test_calibration_methods(method):
    ranges = jc.flax.calibrate_activations(
        MODEL.apply,
        {"params": PARAMS},
        [X[:3], X[3:]],
        method=method,
        percentile=90.0,
        ema_decay=0.5,
    )
    a0, a1 = float(jnp.max(jnp.abs(X[:3]))), float(jnp.max(jnp.abs(X[3:])))
    if method == "ema":
        np.testing.assert_allclose(float(ranges["Dense_0"]), 0.5 * a0 + 0.5 * a1, rtol=1e-6)
    else:
        assert float(ranges["Dense_0"]) < max(a0, a1)


def test_exclude_and_int_matmul_with_float_kernels():
    view = KERNELS.apply(PARAMS, KERNELS.init(PARAMS))
    with jc.flax.quantize_activations(8, exclude="Dense_2"):
        a = MODEL.apply({"params": view}, X)
    with jc.flax.quantize_activations(8, int_matmul=True):
        b = MODEL.apply({"params": view}, X)
    # int_matmul quantizes the (already int8-gridded) kernels per channel: same numbers
    with jc.flax.quantize_activations(8):
        c = MODEL.apply({"params": view}, X)
    np.testing.assert_allclose(np.asarray(b), np.asarray(c), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(a), np.asarray(c), rtol=0, atol=1e-7)


def test_w8a8_training_step_flows_gradients():
    state = jc.flax.TrainState.create(
        apply_fn=MODEL.apply, params=PARAMS, tx=optax.sgd(0.1), compressor=KERNELS
    )
    y = jnp.arange(6) % 4

    @jax.jit
    def step(state):
        def loss_fn(v):
            with jc.flax.quantize_activations(8):
                logits = state.apply_fn({"params": state.compress(v)}, X)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        g = jax.grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=g), g

    new, g = step(state)
    assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(g.params))
    assert int(new.step) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="bits"):
        with jc.flax.quantize_activations(1):
            pass
    with pytest.raises(ValueError, match="modules"):
        with jc.flax.quantize_activations(8, modules=(int,)):
            pass
    with pytest.raises(ValueError, match="method"):
        jc.flax.calibrate_activations(MODEL.apply, {"params": PARAMS}, [X], method="kl")
    with pytest.raises(ValueError, match="no calibration batch"):
        jc.flax.calibrate_activations(MODEL.apply, {"params": PARAMS}, [])
    with pytest.raises(ValueError, match="no layer"):
        jc.flax.calibrate_activations(MODEL.apply, {"params": PARAMS}, [X], modules=(nn.Conv,))


class _NNXMLP(nnx.Module):
    def __init__(self, dot_general, rngs):
        self.l1 = nnx.Linear(12, 8, dot_general=dot_general, rngs=rngs)
        self.l2 = nnx.Linear(8, 4, dot_general=dot_general, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


@pytest.mark.parametrize("int_matmul", [False, True])
def test_nnx_dot_general_w8a8(int_matmul):
    model = _NNXMLP(jc.flax.quantized_dot_general(8, int_matmul=int_matmul), nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    comp = jc.rules([(".*/kernel.*", jc.quant.qat(bits=8)), (".*", None)])
    cstate = comp.init(params)

    @jax.jit
    def fwd(params, x):
        return nnx.merge(graphdef, comp.apply(params, cstate), rest)(x)

    y = fwd(params, X)
    view = jax.tree.map(lambda v: v, comp.apply(params, cstate))
    k1, b1 = view["l1"]["kernel"][...], view["l1"]["bias"][...]
    k2, b2 = view["l2"]["kernel"][...], view["l2"]["bias"][...]
    h = jax.nn.relu(jc.quant.fake_quant_activation(X, 8) @ k1 + b1[None])
    ref = jc.quant.fake_quant_activation(h, 8) @ k2 + b2[None]
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-4, atol=1e-5)
    if not int_matmul:
        g = jax.grad(lambda p: jnp.sum(fwd(p, X) ** 2))(params)
        assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(g))
