"""Calibration: sort-free percentile, MSE search, EMA state, calibration schedule."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress as jc
from jaxcompress.quant import _calibration

_KTH = jax.jit(jc.quant.kth_largest, static_argnums=(1, 2))


@settings(max_examples=15, deadline=None)
@given(
    hnp.arrays(np.float32, (5, 12), elements=st.floats(-1e6, 1e6, width=32)),
    st.sampled_from([1, 5, 12]),
)
def test_kth_largest_matches_sort(x, k):
    got = np.asarray(_KTH(jnp.asarray(x), k, (1,)))
    want = -np.sort(-x, axis=1)[:, k - 1 : k]
    np.testing.assert_array_equal(got, want)


def test_kth_largest_handles_ties_negatives_and_infinities():
    x = jnp.array([[-jnp.inf, -3.0, -3.0, 2.0, jnp.inf, 0.0, -0.0]])
    all_k = jax.jit(lambda x: [jc.quant.kth_largest(x, k, (1,)) for k in range(1, 8)])
    got = [float(v[0, 0]) for v in all_k(x)]
    assert got == [np.inf, 2.0, 0.0, 0.0, -3.0, -3.0, -np.inf]


def _w(seed=0, shape=(64, 8)):
    w = jax.random.normal(jax.random.key(seed), shape)
    return w.at[0, 0].set(40.0)  # one outlier in channel 0


def test_percentile_clips_the_outlier_and_matches_numpy():
    w = _w()
    comp = jc.quant.qat(bits=4, calibration="percentile", percentile=98.0)
    s = jax.jit(comp.init)({"w": w}).scale["w"]
    a = np.sort(np.abs(np.asarray(w)), axis=0)[::-1]
    k = _calibration.percentile_rank(98.0, 64)
    assert k == 2
    np.testing.assert_allclose(np.asarray(s[0]), a[k - 1] / 7, rtol=1e-6)
    smm = jc.quant.qat(bits=4, live_scale=False).init({"w": w}).scale["w"]
    assert float(s[0, 0]) < float(smm[0, 0]) / 5  # the outlier no longer sets the range


def test_percentile_asymmetric_tails():
    w = jnp.concatenate([jnp.linspace(-1.0, 3.0, 101), jnp.array([50.0, -20.0])])[:, None]
    comp = jc.quant.qat(bits=8, symmetric=False, calibration="percentile", percentile=99.0)
    st_ = jax.jit(comp.init)({"w": w})
    s, z = float(st_.scale["w"][0, 0]), float(st_.zero_point["w"][0, 0])
    lo, hi = -z * s, (255 - z) * s
    assert -1.2 < lo < -0.8 and 2.8 < hi < 3.2


@pytest.mark.parametrize("sym", [True, False])
def test_mse_search_never_worse_than_minmax(sym):
    w = _w(1)
    errs = {}
    for cal in ("minmax", "mse"):
        comp = jc.quant.qat(bits=3, symmetric=sym, calibration=cal)
        view = jax.jit(lambda p, c=comp: c.apply(p, c.init(p)))({"w": w})["w"]
        errs[cal] = np.sum((np.asarray(view) - np.asarray(w)) ** 2, axis=0)
    assert np.all(errs["mse"] <= errs["minmax"] + 1e-5)
    # Gaussian channels gain from clipping the range
    assert errs["mse"][1:].sum() < 0.95 * errs["minmax"][1:].sum()


def test_ema_ranges_live_in_the_state_and_move_slowly():
    w = jnp.ones((4, 2))
    comp = jc.quant.qat(bits=8, calibration="ema", ema_decay=0.5)
    state = comp.init({"w": w})
    np.testing.assert_allclose(np.asarray(state.range_max["w"]), [[1.0, 1.0]])
    assert state.range_min is None
    update = jax.jit(comp.update)
    _, state = update({"w": 3.0 * w}, state)
    np.testing.assert_allclose(np.asarray(state.range_max["w"]), [[2.0, 2.0]])
    np.testing.assert_allclose(np.asarray(state.scale["w"]), [[2.0 / 127, 2.0 / 127]], rtol=1e-6)
    _, state = update({"w": 3.0 * w}, state)
    np.testing.assert_allclose(np.asarray(state.range_max["w"]), [[2.5, 2.5]])
    # apply clips to the EMA range: 3.0 -> 2.5
    view = comp.apply({"w": 3.0 * w}, state)["w"]
    np.testing.assert_allclose(np.asarray(view), 2.5, rtol=1e-6)


def test_ema_asymmetric_tracks_both_ends():
    comp = jc.quant.qat(bits=8, symmetric=False, calibration="ema", ema_decay=0.5)
    state = comp.init({"w": jnp.array([[-1.0], [1.0]])})
    _, state = comp.update({"w": jnp.array([[-3.0], [5.0]])}, state)
    assert float(state.range_min["w"][0, 0]) == -2.0
    assert float(state.range_max["w"][0, 0]) == 3.0


def test_calibrate_every_refreshes_scales_on_schedule():
    comp = jc.quant.qat(bits=8, calibrate_every=3)
    p1 = {"w": jnp.ones((4, 2))}
    state = comp.init(p1)
    update = jax.jit(comp.update)
    scales = []
    for _ in range(4):
        _, state = update({"w": 2.0 * p1["w"]}, state)
        scales.append(float(state.scale["w"][0, 0]) * 127)
    np.testing.assert_allclose(scales, [1.0, 1.0, 2.0, 2.0], rtol=1e-6)


def test_scale_in_state_is_refreshed_after_each_update():
    comp = jc.quant.qat(bits=8, live_scale=False)
    state = comp.init({"w": jnp.ones((4, 2))})
    _, state = jax.jit(comp.update)({"w": jnp.full((4, 2), 5.0)}, state)
    np.testing.assert_allclose(np.asarray(state.scale["w"]) * 127, 5.0, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"calibration": "kl"}, "calibration"),
        ({"calibration": "percentile", "percentile": 0}, "percentile"),
        ({"calibration": "ema", "ema_decay": 1.0}, "ema_decay"),
        ({"calibration": "mse", "mse_grid": 1}, "mse_grid"),
        ({"calibrate_every": 0}, "calibrate_every"),
        ({"bits": "binary", "calibration": "mse"}, "closed-form"),
    ],
)
def test_bad_calibration_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.quant.qat(**kwargs)
