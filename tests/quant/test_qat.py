"""qat options: granularity, grids, bit-width schedules, errors, summary, jit behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc

W = jax.random.normal(jax.random.key(0), (16, 8))
P = {"Dense_0": {"kernel": W, "bias": jnp.ones(8)}}


def _levels(view, col=0):
    return len(np.unique(np.asarray(view[:, col])))


@pytest.mark.parametrize(
    "kwargs,scale_shape",
    [
        ({}, (1, 8)),
        ({"channel_axis": None}, (1, 1)),
        ({"channel_axis": 0}, (16, 1)),
        ({"group_size": 4}, (4, 1, 8)),
        ({"group_size": 8, "channel_axis": None}, (2, 1, 1)),
    ],
)
def test_granularity_scale_shapes(kwargs, scale_shape):
    comp = jc.quant.qat(bits=4, live_scale=False, **kwargs)
    state = comp.init(P)
    assert state.scale["Dense_0"]["kernel"].shape == scale_shape
    assert state.scale["Dense_0"]["bias"].shape == (1,)  # rank-1 leaves: one scale
    view = comp.apply(P, state)["Dense_0"]["kernel"]
    assert view.shape == W.shape


def test_group_size_that_does_not_divide_names_the_leaf():
    comp = jc.quant.qat(bits=4, group_size=5)
    with pytest.raises(ValueError, match=r"Dense_0/kernel: group_size=5 does not divide"):
        comp.init(P)


def test_group_scales_are_per_group_per_channel():
    comp = jc.quant.qat(bits=4, group_size=4, live_scale=False)
    s = comp.init({"w": W}).scale["w"]
    want = jnp.max(jnp.abs(W.reshape(4, 4, 8)), axis=1, keepdims=True) / 7
    np.testing.assert_allclose(np.asarray(s), np.asarray(want), rtol=1e-6)


def test_non_finite_weights_raise_at_init_naming_the_leaf():
    bad = {"a": {"kernel": W.at[3, 2].set(jnp.nan)}}
    with pytest.raises(ValueError, match=r"'a/kernel'.*non-finite"):
        jc.quant.qat(bits=8).init(bad)


@pytest.mark.parametrize("bad_value", [jnp.inf, jnp.nan])
@pytest.mark.parametrize(
    "kwargs", [{"live_scale": False}, {"symmetric": False}, {"calibration": "ema"}]
)
def test_non_finite_weight_inside_jit_stays_in_its_channel(kwargs, bad_value):
    comp = jc.quant.qat(bits=8, **kwargs)
    state = comp.init({"w": W})
    bad = {"w": W.at[0, 0].set(bad_value)}
    _, new = jax.jit(comp.update)(bad, state)
    for t in (new.scale, new.zero_point, new.range_max, new.range_min):
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(t))
    # the other channels keep their scales
    np.testing.assert_array_equal(
        np.asarray(new.scale["w"][:, 1:]), np.asarray(state.scale["w"][:, 1:])
    )
    view = comp.apply(bad, new)["w"]
    assert bool(jnp.all(jnp.isfinite(view[:, 1:])))
    if jnp.isnan(bad_value):
        assert bool(jnp.isnan(view[0, 0]))  # the divergence stays visible
    else:
        assert bool(jnp.isfinite(view[0, 0]))  # +inf is clipped to the grid's end


def test_integer_leaves_rejected_naming_the_path():
    with pytest.raises(ValueError, match="'steps'"):
        jc.quant.qat(bits=8).init({"steps": jnp.arange(3)})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 9}, "1..8"),
        ({"bits": "quaternary"}, "1..8"),
        ({"bits": "binary", "symmetric": False}, "symmetric"),
        ({"granularity": "row"}, "granularity"),
        ({"granularity": "group"}, "group_size"),
        ({"granularity": "channel", "group_size": 4}, "granularity='group'"),
        ({"group_size": -2}, "group_size"),
        ({"ste": "soft"}, "ste"),
    ],
)
def test_bad_arguments_fail_at_the_factory(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.quant.qat(**kwargs)


def test_binary_and_ternary_grids():
    vb = jc.finalize(
        jc.quant.qat(bits="binary"), {"w": W}, jc.quant.qat(bits="binary").init({"w": W})
    )
    col = np.asarray(vb["w"][:, 0])
    np.testing.assert_allclose(np.abs(col), np.mean(np.abs(np.asarray(W[:, 0]))), rtol=1e-6)
    comp = jc.quant.qat(bits="ternary")
    st = comp.init({"w": W})
    col = np.asarray(comp.apply({"w": W}, st)["w"][:, 0])
    w0 = np.abs(np.asarray(W[:, 0]))
    thr = 0.7 * w0.mean()
    np.testing.assert_allclose(float(st.threshold["w"][0, 0]), thr, rtol=1e-6)
    np.testing.assert_allclose(np.unique(np.abs(col)), [0.0, w0[w0 > thr].mean()], rtol=1e-6)
    assert int(st.bits["w"]) == 2


def test_bits_schedule_8_to_4_changes_levels_and_recalibrates():
    sched = optax.piecewise_constant_schedule(8.0, {2: 0.5})  # 8 bits, then 4 from step 2
    comp = jc.quant.qat(bits=sched)
    state = comp.init({"w": W})
    assert int(state.bits["w"]) == 8
    assert _levels(comp.apply({"w": W}, state)["w"]) == 16  # 16 distinct values of 255
    update = jax.jit(comp.update)
    _, state = update({"w": W}, state)
    assert int(state.bits["w"]) == 8
    _, state = update({"w": W}, state)
    assert int(state.bits["w"]) == 4
    np.testing.assert_allclose(
        np.asarray(state.scale["w"]),
        np.asarray(jnp.max(jnp.abs(W), 0, keepdims=True) / 7),
        rtol=1e-6,
    )
    assert _levels(comp.apply({"w": W}, state)["w"]) <= 15
    qp = jc.quant.quantize({"w": W}, state, comp)
    assert qp["w"].bits == 4 and qp["w"].packed


def test_bits_schedule_with_lsq_rescales_to_keep_the_range():
    sched = optax.piecewise_constant_schedule(8.0, {1: 0.5})
    comp = jc.quant.qat(bits=sched, learn_scale=True)
    state = comp.init({"w": W})
    _, new = jax.jit(comp.update)({"w": W}, state)
    np.testing.assert_allclose(
        np.asarray(new.trainable["w"]), np.asarray(state.trainable["w"]) * 127 / 7, rtol=1e-6
    )


def test_no_retrace_with_schedule_and_calibrate_every(trace_counter):
    comp = jc.quant.qat(bits=optax.linear_schedule(8, 3, 4), calibrate_every=2, calibration="mse")
    counted = trace_counter(lambda p, s: comp.update(p, s))
    upd = jax.jit(counted)
    state = comp.init({"w": W})
    seen = []
    for _ in range(5):
        _, state = upd({"w": W}, state)
        seen.append(int(state.bits["w"]))
    assert counted.count == 1
    assert seen == [7, 6, 4, 3, 3]  # round(8 - 5 t / 4)


def test_summary_shows_true_bits_and_bytes():
    comp = jc.rules(
        [
            ("Dense_0/kernel", jc.quant.qat(bits=4, group_size=4)),
            ("Dense_1/kernel", jc.quant.qat("ternary")),
            (".*", None),
        ]
    )
    params = {
        "Dense_0": {"kernel": W, "bias": jnp.ones(8)},
        "Dense_1": {"kernel": jnp.ones((8, 3))},
    }
    state = comp.init(params)
    s = jc.summary(comp, params, state)
    rows = {r.path: r for r in s.leaves}
    assert rows["Dense_0/kernel"].bits == 4 and rows["Dense_0/kernel"].logical_bytes == 64
    assert rows["Dense_1/kernel"].bits == 2 and rows["Dense_1/kernel"].logical_bytes == 6
    assert rows["Dense_0/bias"].bits == 32
    qp = jc.quant.quantize(params, state, comp)
    assert qp["Dense_0"]["kernel"].nbytes == rows["Dense_0/kernel"].logical_bytes
    assert qp["Dense_1"]["kernel"].nbytes == rows["Dense_1/kernel"].logical_bytes


def test_apply_reduces_only_for_live_scales():
    """Stored scales: the forward is elementwise. Live: one max per leaf, nothing else."""
    for live, want in ((False, set()), (True, {"reduce_max"})):
        comp = jc.quant.qat(bits=8, live_scale=live)
        state = comp.init({"w": W})
        jaxpr = jax.make_jaxpr(comp.apply)({"w": W}, state)
        prims = [e.primitive.name for e in jaxpr.jaxpr.eqns]
        reductions = [p for p in prims if p in {"reduce_max", "reduce_min", "reduce_sum", "argmax"}]
        assert set(reductions) == want and len(reductions) == len(want)


def test_donated_train_steps_keep_static_bits():
    # static bits pass through update (no per-step copies); init gives every leaf its own
    # array, so a donating train step never sees one buffer in two leaves
    comp = jc.rules([(".*/kernel", jc.quant.qat(bits=4)), (".*", None)])
    params = {"a": {"kernel": W, "bias": jnp.ones(8)}, "b": {"kernel": W[:8]}}
    state = jc.flax.TrainState.create(
        apply_fn=None, params=jax.tree.map(jnp.copy, params), tx=optax.sgd(0.1), compressor=comp
    )

    @jax.jit
    def grads_of(state):
        return jax.grad(lambda v: sum(jnp.sum(x**2) for x in jax.tree.leaves(state.compress(v))))(
            state.trainables
        )

    step = jax.jit(lambda s, g: s.apply_gradients(grads=g), donate_argnums=0)
    bits0 = jax.tree.leaves(jc.state_fields(state.compression, "bits"))
    assert len({id(b) for b in bits0}) == len(bits0) == 2
    for _ in range(3):
        state = step(state, grads_of(state))
    bits = jax.tree.leaves(jc.state_fields(state.compression, "bits"))
    assert [int(b) for b in bits] == [4, 4]
    assert int(state.step) == 3


@pytest.mark.parametrize("calibration", ["minmax", "ema"])
def test_asymmetric_tie_columns_use_both_grid_ends_and_export_equals_view(calibration):
    """Kernel columns ranging over ``[-m, m]`` (a zero-point tie at 4 bits, 15 steps): the
    jitted training view and its export reach both ends of the grid in every column."""
    rng = np.random.default_rng(0)
    m = rng.uniform(0.01, 10.0, (1, 8)).astype(np.float32)
    w = (rng.uniform(-1, 1, (16, 8)) * m).astype(np.float32)
    w[0], w[1] = -m[0], m[0]
    params = {"kernel": jnp.asarray(w)}
    comp = jc.quant.qat(bits=4, symmetric=False, calibration=calibration)
    state = jax.jit(comp.init)(params)
    view = np.asarray(jax.jit(comp.apply)(params, state)["kernel"])
    s = np.asarray(state.scale["kernel"])
    np.testing.assert_allclose((view.max(0) - view.min(0)) / s[0], 15.0, rtol=1e-5)
    exported = jc.quant.dequantize(jc.quant.quantize(params, state, comp)["kernel"])
    np.testing.assert_array_equal(np.asarray(exported), view)
