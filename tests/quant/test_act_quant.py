"""Activation quantization in Flax: linen interception, calibration, NNX dot_general."""

import chex
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
    # both train: the int8 forward has straight-through gradients too
    g = jax.grad(lambda p: jnp.sum(fwd(p, X) ** 2))(params)
    assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(g))
    if int_matmul:
        jaxpr = str(jax.make_jaxpr(fwd)(params, X))
        assert jaxpr.count("preferred_element_type=int32") == 2


# ---------------------------------------------------------------------------------------
# The backward operands of the fake-quantized matmul (residuals="original" / "quantized").

DN = (((1,), (0,)), ((), ()))
XA = jax.random.normal(jax.random.key(2), (5, 12)) * 3.0
KA = jax.random.normal(jax.random.key(3), (12, 7))
GA = jax.random.normal(jax.random.key(4), (5, 7))


def _vjp(fn, x, k, g):
    out, vjp = jax.vjp(fn, x, k)
    return out, *vjp(g)


@pytest.mark.parametrize("per_token", [True, False])
def test_lhs_dot_original_residuals_gradients(per_token):
    fq = jc.quant.fake_quant_activation(XA, 4, per_token=per_token)
    out, dx, dk = _vjp(
        lambda x, k: jc.quant.fake_quant_lhs_dot(x, k, DN, bits=4, per_token=per_token),
        XA,
        KA,
        GA,
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(fq @ KA), rtol=1e-6, atol=1e-6)
    # kernel gradient from the ORIGINAL activations, input gradient straight through
    np.testing.assert_allclose(np.asarray(dk), np.asarray(XA.T @ GA), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(GA @ KA.T), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(dk), np.asarray(fq.T @ GA), rtol=0, atol=1e-3)


def test_lhs_dot_quantized_residuals_is_autodiff_of_the_fake_quant_forward():
    def ref(x, k):
        return jc.quant.fake_quant_activation(x, 4) @ k

    want = _vjp(ref, XA, KA, GA)
    got = _vjp(
        lambda x, k: jc.quant.fake_quant_lhs_dot(x, k, DN, bits=4, residuals="quantized"),
        XA,
        KA,
        GA,
    )
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    fq = jc.quant.fake_quant_activation(XA, 4)
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(fq.T @ GA), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_lhs_dot_static_range_masks_the_input_gradient(ste):
    absmax = 2.0  # |XA| reaches ~9: many entries clip
    inside = np.abs(np.asarray(XA)) / (absmax / 7.0) < 7.5
    assert 0 < inside.sum() < inside.size
    for residuals in ("original", "quantized"):
        _, dx, _ = _vjp(
            lambda x, k, r=residuals: jc.quant.fake_quant_lhs_dot(
                x, k, DN, bits=4, absmax=absmax, ste=ste, residuals=r
            ),
            XA,
            KA,
            GA,
        )
        full = np.asarray(GA @ KA.T)
        want = np.where(inside, full, 0.0) if ste == "clipped" else full
        np.testing.assert_allclose(np.asarray(dx), want, rtol=1e-5, atol=1e-5)


def test_lhs_dot_general_dimension_numbers_and_bf16():
    # batched, contraction over the first axis: scales per (batch, token) over the contraction
    x = jax.random.normal(jax.random.key(5), (3, 6, 4))  # [batch, in, tokens]
    k = jax.random.normal(jax.random.key(6), (3, 6, 2))  # [batch, in, out]
    dn = (((1,), (1,)), ((0,), (0,)))
    s = jc.quant.lhs_scale(x, (1,), 8)
    assert s.shape == (3, 1, 4)
    fq = jnp.round(x / s) * s
    ref = jax.lax.dot_general(fq, k, dn)
    g = jax.random.normal(jax.random.key(7), ref.shape)
    out, dx, dk = _vjp(lambda a, b: jc.quant.fake_quant_lhs_dot(a, b, dn), x, k, g)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    _, vjp = jax.vjp(lambda a, b: jax.lax.dot_general(a, b, dn), x, k)
    for a, b in zip((dx, dk), vjp(g), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    xb, kb = XA.astype(jnp.bfloat16), KA.astype(jnp.bfloat16)
    yb, dxb, dkb = _vjp(
        lambda a, b: jc.quant.fake_quant_lhs_dot(a, b, DN), xb, kb, GA.astype(jnp.bfloat16)
    )
    assert yb.dtype == dxb.dtype == dkb.dtype == jnp.bfloat16


def test_lhs_dot_bad_residuals():
    with pytest.raises(ValueError, match="residuals"):
        jc.quant.fake_quant_lhs_dot(XA, KA, DN, residuals="float")
    with pytest.raises(ValueError, match="residuals"):
        with jc.flax.quantize_activations(8, residuals="float"):
            pass
    with pytest.raises(ValueError, match="residuals"):
        jc.flax.quantized_dot_general(8, residuals="float")


def _linen_grads(residuals, model=MODEL, params=PARAMS):
    def loss(p):
        with jc.flax.quantize_activations(8, residuals=residuals):
            return jnp.sum(model.apply({"params": p}, X) ** 2)

    return jax.jit(jax.grad(loss))(params)


def test_linen_dense_backward_operands():
    g_orig = _linen_grads("original")
    g_quant = _linen_grads("quantized")
    # "quantized" is plain autodiff of the hand-written fake-quant forward
    ref = jax.grad(lambda p: jnp.sum(_manual_forward(p, X) ** 2))(PARAMS)
    chex.assert_trees_all_close(g_quant, ref, rtol=1e-5, atol=1e-6)
    # "original": the first kernel's gradient is X^T (dL/dy_0), not fq(X)^T (dL/dy_0)
    assert not np.allclose(
        np.asarray(g_orig["Dense_0"]["kernel"]), np.asarray(ref["Dense_0"]["kernel"]), atol=1e-6
    )
    np.testing.assert_allclose(  # biases see the same upstream gradient up to rounding
        np.asarray(g_orig["Dense_2"]["bias"]), np.asarray(ref["Dense_2"]["bias"]), rtol=1e-5
    )

    def manual_original(p):
        h = X
        for i in range(3):
            q = p[f"Dense_{i}"]
            dn = (((1,), (0,)), ((), ()))
            h = jc.quant.fake_quant_lhs_dot(h, q["kernel"], dn) + q["bias"][None]
            h = jax.nn.relu(h) if i < 2 else h
        return jnp.sum(h**2)

    chex.assert_trees_all_close(g_orig, jax.grad(manual_original)(PARAMS), rtol=1e-5, atol=1e-6)


class _HookedMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(8, dot_general=jax.lax.dot_general)(x))
        return nn.Dense(4)(h)


def test_linen_dense_with_its_own_dot_general_keeps_autodiff_and_init_works():
    model = _HookedMLP()
    with jc.flax.quantize_activations(8):  # init under interception: no params yet
        params = model.init(jax.random.key(0), X)["params"]
    g_orig = _linen_grads("original", model, params)
    g_quant = _linen_grads("quantized", model, params)
    # the hooked layer is not rewritten (its kernel gradient is the same either way)...
    np.testing.assert_allclose(
        np.asarray(g_orig["Dense_0"]["kernel"]), np.asarray(g_quant["Dense_0"]["kernel"]), rtol=1e-5
    )
    # ...the plain one is
    assert not np.allclose(
        np.asarray(g_orig["Dense_1"]["kernel"]), np.asarray(g_quant["Dense_1"]["kernel"]), atol=1e-6
    )


def test_nnx_dot_general_backward_operands():
    def kernel_grad(residuals):
        layer = nnx.Linear(
            12,
            4,
            dot_general=jc.flax.quantized_dot_general(4, residuals=residuals),
            rngs=nnx.Rngs(0),
        )
        graphdef, params = nnx.split(layer, nnx.Param)

        def loss(p):
            return jnp.sum(nnx.merge(graphdef, p)(XA) * GA[:, :4])

        return np.asarray(jax.grad(loss)(params)["kernel"][...])

    fq = jc.quant.fake_quant_activation(XA, 4)
    g = GA[:, :4]
    np.testing.assert_allclose(kernel_grad("original"), np.asarray(XA.T @ g), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel_grad("quantized"), np.asarray(fq.T @ g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("contract", [(2,), (-3,), (True,), ("1",)])
def test_lhs_scale_rejects_bad_contracting_axes(contract):
    with pytest.raises(ValueError, match=r"lhs_scale: contract .*rank-2"):
        jc.quant.lhs_scale(jnp.ones((2, 3)), contract)
    # numpy integer axes (as dimension numbers may carry) are accepted
    assert jc.quant.lhs_scale(jnp.ones((2, 3)), (np.int64(1),)).shape == (2, 1)


def test_dynamic_activation_scale_is_computed_once_per_token():
    # `_fake_quant.safe_scale` materializes the per-token scale (CPU): the rounding fusion
    # reads it instead of redoing the zero / non-finite check for every activation.
    if jax.default_backend() != "cpu":
        pytest.skip("the materialized scale is a CPU-only lowering")
    import re

    @jax.jit
    def fwd(p, x):
        with jc.flax.quantize_activations(8):
            return MODEL.apply({"params": p}, x)

    hlo = fwd.lower(PARAMS, X).compile().as_text()
    bodies = re.findall(r"\n(%fused_computation[^\n]*\{\n.*?\n\})", hlo, flags=re.S)
    rounding = [b for b in bodies if "round-nearest-even" in b]
    assert rounding, hlo
    for body in rounding:
        assert "is-finite" not in body, body
