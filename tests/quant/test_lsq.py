"""LSQ: the step size is trainable state, its gradient is the paper's, and it trains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc


def _paper_grads(w, s, g, qn, qp):
    """Esser et al. 2019, eq. 3 and section 2.2, per output channel (numpy, float64)."""
    w, s, g = (np.asarray(a, np.float64) for a in (w, s, g))
    v = w / s
    ds = np.where(v <= -qn, -qn, np.where(v >= qp, qp, np.round(v) - v))
    n = w.shape[0]  # entries per step size (one per output channel)
    gscale = 1.0 / np.sqrt(n * qp)
    ds = (g * ds).sum(axis=0, keepdims=True) * gscale
    q = np.round(v)
    dw = np.where((q >= -qn) & (q <= qp), g, 0.0)
    return dw, ds


@pytest.mark.parametrize("bits", [2, 3])
def test_lsq_gradient_matches_the_paper(bits):
    w = jax.random.normal(jax.random.key(0), (12, 3))
    comp = jc.quant.qat(bits=bits, learn_scale=True)
    state = comp.init({"w": w})
    assert state.scale is None
    s = state.trainable["w"]
    assert s.shape == (1, 3)
    qp = 2 ** (bits - 1) - 1
    qn = 2 ** (bits - 1)  # full signed grid, as in the paper
    # paper's initial value: 2 mean|w| / sqrt(Qp)
    np.testing.assert_allclose(
        np.asarray(s),
        2 * np.mean(np.abs(np.asarray(w)), axis=0, keepdims=True) / np.sqrt(qp),
        rtol=1e-6,
    )
    s = s * (0.6 if bits == 2 else 0.3)  # make some entries clip on both sides
    cot = jax.random.normal(jax.random.key(1), w.shape)

    def loss(v):
        view = jc.compressed_view(comp, v, state)
        return jnp.sum(view["w"] * cot)

    grads = jax.jit(jax.grad(loss))(jc.Trainables({"w": w}, {"w": s}))
    dw, ds = _paper_grads(w, s, cot, qn, qp)
    v = np.asarray(w) / np.asarray(s)
    assert (v <= -qn).any() and (v >= qp).any()
    np.testing.assert_allclose(np.asarray(grads.compression["w"]), ds, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(grads.params["w"]), dw)


def test_lsq_binary_step_size_gradient():
    w = jax.random.normal(jax.random.key(2), (8, 2))
    comp = jc.quant.qat(bits="binary", learn_scale=True)
    state = comp.init({"w": w})
    cot = jax.random.normal(jax.random.key(3), w.shape)
    g = jax.grad(lambda t: jnp.sum(jc.compressed_view(comp, t, state)["w"] * cot))(
        jc.Trainables({"w": w}, jc.trainable(state))
    )
    want = (np.where(np.asarray(w) >= 0, 1.0, -1.0) * np.asarray(cot)).sum(0) / np.sqrt(8)
    np.testing.assert_allclose(np.asarray(g.compression["w"][0]), want, rtol=1e-5)


def test_train_state_trains_the_step_size():
    import flax.linen as nn

    model = nn.Dense(4)
    x = jax.random.normal(jax.random.key(0), (32, 8))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 4)
    params = model.init(jax.random.key(2), x)["params"]
    comp = jc.rules([("kernel", jc.quant.qat(bits=2, learn_scale=True)), (".*", None)])
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2), compressor=comp
    )

    @jax.jit
    def step(state):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    s0 = state.compression.states[0].trainable["kernel"]
    losses = []
    for _ in range(5):
        state, loss = step(state)
        losses.append(float(loss))
    s1 = state.compression.states[0].trainable["kernel"]
    assert s1.shape == s0.shape == (1, 4)
    assert bool(jnp.all(s1 != s0))  # every step size moved
    assert losses[-1] < losses[0]
    # the optimizer state covers the step sizes too
    assert len(jax.tree.leaves(state.opt_state)) > 2 * len(jax.tree.leaves(params)) + 1
    # export reads the trained step sizes
    qp = jc.quant.quantize(state.params, state.compression, comp)
    np.testing.assert_allclose(np.asarray(qp["kernel"].scale), np.asarray(s1), rtol=1e-6)
    view = jc.finalize(comp, state.params, state.compression)
    np.testing.assert_array_equal(
        np.asarray(jc.quant.dequantize(qp)["kernel"]), np.asarray(view["kernel"])
    )


def test_lsq_is_not_recalibrated_by_update_but_kept():
    comp = jc.quant.qat(bits=4, learn_scale=True)
    state = comp.init({"w": jnp.ones((4, 2))})
    _, new = jax.jit(comp.update)({"w": 10 * jnp.ones((4, 2))}, state)
    np.testing.assert_array_equal(np.asarray(new.trainable["w"]), np.asarray(state.trainable["w"]))
    assert int(new.count) == 1


def test_lsq_asymmetric_keeps_zero_point_fixed():
    w = jax.random.uniform(jax.random.key(4), (16, 2), minval=-0.5, maxval=2.0)
    comp = jc.quant.qat(bits=3, symmetric=False, learn_scale=True)
    state = comp.init({"w": w})
    assert state.zero_point is not None and state.trainable is not None
    g = jax.grad(lambda t: jnp.sum(jc.compressed_view(comp, t, state)["w"] ** 2))(
        jc.Trainables({"w": w}, jc.trainable(state))
    )
    assert bool(jnp.all(jnp.isfinite(g.compression["w"])))
    assert bool(jnp.any(g.compression["w"] != 0))


def test_lsq_rejects_ternary_and_calibration():
    with pytest.raises(ValueError, match="ternary"):
        jc.quant.qat(bits="ternary", learn_scale=True)
    with pytest.raises(ValueError, match="learn_scale"):
        jc.quant.qat(bits=4, learn_scale=True, calibration="mse")
