"""Live min-max scales: computed in ``apply``, none stored, exact export, no STE mask."""

import re

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress as jc
from jaxcompress.quant import _fake_quant

W = jax.random.normal(jax.random.key(0), (16, 8))

GRIDS = [
    {"bits": 8},
    {"bits": 4, "group_size": 4},
    {"bits": 3, "channel_axis": None},
    {"bits": 2, "channel_axis": 0},
    {"bits": 8, "narrow_range": False},
    {"bits": 5, "group_size": 8, "channel_axis": None},
]


def _bits(x):
    return np.asarray(x).view(np.uint32)


@pytest.mark.parametrize(
    "kwargs,live",
    [
        ({}, True),
        ({"bits": 4, "group_size": 4}, True),
        ({"calibrate_every": 3}, False),
        ({"calibration": "percentile"}, False),
        ({"calibration": "ema"}, False),
        ({"symmetric": False}, False),
        ({"bits": "binary"}, False),
        ({"learn_scale": True}, False),
        ({"bits": lambda step: 8}, False),
        ({"live_scale": False}, False),
    ],
)
def test_live_is_the_default_exactly_where_it_applies(kwargs, live):
    state = jc.quant.qat(**kwargs).init({"w": W})
    assert state.spec.live is live
    assert (state.scale is None) is (live or kwargs.get("learn_scale", False))


@pytest.mark.parametrize(
    "kwargs", [{"calibration": "mse"}, {"calibrate_every": 2}, {"symmetric": False}]
)
def test_live_scale_true_where_it_cannot_apply_is_an_error(kwargs):
    with pytest.raises(ValueError, match="live_scale=True"):
        jc.quant.qat(live_scale=True, **kwargs)


def test_live_scale_must_be_a_bool():
    with pytest.raises(ValueError, match="live_scale"):
        jc.quant.qat(live_scale="yes")


@pytest.mark.parametrize("kwargs", GRIDS)
def test_live_forward_equals_stored_scales_refreshed_every_step(kwargs):
    live, stored = jc.quant.qat(**kwargs), jc.quant.qat(live_scale=False, **kwargs)
    p0, p1 = {"w": W}, {"w": 3.0 * W + 0.5}
    s_live, s_stored = live.init(p0), stored.init(p0)
    np.testing.assert_array_equal(
        _bits(live.apply(p0, s_live)["w"]), _bits(stored.apply(p0, s_stored)["w"])
    )
    # after an optimizer step: the stored scale needs ``update``, the live one follows the params
    _, s_live = jax.jit(live.update)(p1, s_live)
    _, s_stored = jax.jit(stored.update)(p1, s_stored)
    got = jax.jit(live.apply)(p1, s_live)["w"]
    np.testing.assert_array_equal(_bits(got), _bits(stored.apply(p1, s_stored)["w"]))
    assert int(s_live.count) == 1


def test_live_update_does_no_work_on_the_params():
    comp = jc.quant.qat(bits=8)
    p = {"w": W}
    jaxpr = str(jax.make_jaxpr(comp.update)(p, comp.init(p)))
    assert "reduce_max" not in jaxpr and "abs" not in jaxpr


@pytest.mark.parametrize("kwargs", GRIDS)
def test_live_gradient_is_the_clipped_ste_which_is_the_identity_here(kwargs):
    live, stored = jc.quant.qat(**kwargs), jc.quant.qat(live_scale=False, **kwargs)
    p = {"w": W}
    r = jax.random.normal(jax.random.key(1), W.shape)

    def grad(comp, state):
        return jax.grad(lambda q: jnp.sum(comp.apply(q, state)["w"] * r))(p)["w"]

    g_live = grad(live, live.init(p))
    np.testing.assert_array_equal(np.asarray(g_live), np.asarray(r))
    # the stored, clipped estimator with a fresh scale passes every weight too
    np.testing.assert_array_equal(np.asarray(grad(stored, stored.init(p))), np.asarray(r))


@pytest.mark.parametrize("kwargs", GRIDS)
def test_export_is_exact_from_stored_params_and_from_the_forward_view(kwargs):
    comp = jc.quant.qat(**kwargs)
    p = {"w": 0.37 * W}
    state = comp.init(p)
    want = comp.apply(p, state)["w"]
    for got in (
        jc.quant.quantize(p, state),
        jc.quant.quantize(p, state, comp),
        jc.quant.quantize(jc.finalize(comp, p, state), state),
    ):
        # exact equality (integers carry no sign of zero: -0.0 exports as 0.0)
        np.testing.assert_array_equal(np.asarray(jc.quant.dequantize(got)["w"]), np.asarray(want))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, (6, 5), elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False)),
    st.integers(2, 8),
)
def test_export_from_the_view_recovers_the_forward_bit_for_bit(x, bits):
    comp = jc.quant.qat(bits=bits)
    p = {"w": jnp.asarray(x)}
    state = comp.init(p)
    view = comp.apply(p, state)
    got = jc.quant.dequantize(jc.quant.quantize(view, state))["w"]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(view["w"]))


@settings(max_examples=60, deadline=None)
@given(
    st.floats(float(np.float32(1e-30)), float(np.float32(1e30)), width=32),
    st.sampled_from([1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 127.0]),
)
def test_symmetric_scale_is_recovered_from_its_top_level(absmax, qmax):
    s = _fake_quant.symmetric_scale(jnp.float32(absmax), qmax)
    top = s * jnp.float32(qmax)  # the largest magnitude of the quantized slice
    assert _bits(_fake_quant.symmetric_scale(top, qmax)) == _bits(s)


def test_export_through_a_chain_that_rewrites_the_quantized_view_is_an_error():
    shrink = jc.Compressor(
        lambda p: (),
        lambda p, s: jax.tree.map(lambda x: 0.7 * x, p),
        lambda p, s, g=None: (p, s),
    )
    p = {"w": W}
    for live in (True, False):
        comp = jc.chain(jc.quant.qat(bits=8, live_scale=live), shrink)
        with pytest.raises(ValueError, match=r"'w' is not on the grid.*put qat last"):
            jc.quant.quantize(p, comp.init(p), comp)
    # pruning after qat keeps the view on the grid (zero is a level)
    comp = jc.chain(jc.quant.qat(bits=8), jc.prune.magnitude(0.5))
    state = comp.init(p)
    got = jc.quant.dequantize(jc.quant.quantize(p, state, comp))["w"]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jc.finalize(comp, p, state)["w"]))


def test_prune_then_live_qat_exports_pruned_zeros_exactly():
    comp = jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=4, group_size=4))
    p = {"w": W}
    state = comp.init(p)
    view = jc.finalize(comp, p, state)["w"]
    got = jc.quant.dequantize(jc.quant.quantize(p, state, comp))["w"]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(view))
    assert float(jnp.mean(got == 0)) >= 0.5


def test_non_finite_weight_inside_jit_stays_in_its_channel():
    comp = jc.quant.qat(bits=8)
    state = comp.init({"w": W})
    for bad_value in (jnp.nan, jnp.inf):
        bad = {"w": W.at[0, 0].set(bad_value)}
        view = jax.jit(comp.apply)(bad, state)["w"]
        good = comp.apply({"w": W}, state)["w"]
        np.testing.assert_array_equal(np.asarray(view[:, 1:]), np.asarray(good[:, 1:]))
        assert bool(jnp.isnan(view[0, 0])) == bool(jnp.isnan(bad_value))


def _rounding_fusions(hlo: str) -> list[str]:
    """The bodies of the compiled program's fused computations that round to the grid."""
    bodies = re.findall(r"\n(%fused_computation[^\n]*\{\n.*?\n\})", hlo, flags=re.S)
    return [b for b in bodies if "round-nearest-even" in b]


@pytest.mark.parametrize("kwargs", [{}, {"bits": 4, "group_size": 16}])
def test_the_scale_is_computed_once_not_per_weight(kwargs):
    # XLA:CPU would fuse the scale's mantissa rounding and zero check into the fake-quant
    # fusion and run it for every weight; `_fake_quant.materialize` keeps it scale-sized.
    if jax.default_backend() != "cpu":
        pytest.skip("the materialized scale is a CPU-only lowering")
    comp = jc.quant.qat(**kwargs)
    p = {"w": jax.random.normal(jax.random.key(0), (64, 32))}
    state = comp.init(p)
    hlo = jax.jit(lambda q: comp.apply(q, state)).lower(p).compile().as_text()
    fusions = _rounding_fusions(hlo)
    assert fusions, hlo
    for body in fusions:
        assert "bitcast-convert" not in body and "is-finite" not in body, body
