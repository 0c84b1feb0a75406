"""Fake-quant numerics: custom_vjp STEs vs the stop_gradient reference, ranges, edge cases."""

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress as jc
from jaxcompress.quant import _fake_quant as fq

X = jax.random.normal(jax.random.key(0), (16, 8)) * 2.0


def _ref_grid(x, s, z, qmin, qmax, ste):
    """The x + stop_gradient(q(x) - x) reference, masked for the clipped STE."""
    q = jnp.round(x / s) + (0 if z is None else z)
    out = (jnp.clip(q, qmin, qmax) - (0 if z is None else z)) * s
    st_out = x + jax.lax.stop_gradient(out - x)
    if ste == "identity":
        return st_out
    inside = (q >= qmin) & (q <= qmax)
    return jnp.where(inside, st_out, jax.lax.stop_gradient(out))


@pytest.mark.parametrize("ste", ["clipped", "identity"])
@pytest.mark.parametrize("sym", [True, False])
def test_grid_vjp_matches_stop_gradient_reference(ste, sym):
    # A scale small enough that some entries fall outside the range.
    s = jnp.full((1, 8), 0.05)
    z = None if sym else jnp.full((1, 8), 3.0)
    qmin, qmax = (-7.0, 7.0) if sym else (0.0, 15.0)
    qmin, qmax = jnp.float32(qmin), jnp.float32(qmax)
    f = jax.jit(lambda x: fq.fq_grid(x, s, z, qmin, qmax, ste))
    r = jax.jit(lambda x: _ref_grid(x, s, z, qmin, qmax, ste))
    # values equal up to the reference's x + (q - x) rounding; gradients exactly
    chex.assert_trees_all_close(f(X), r(X), rtol=0, atol=2e-7)
    w = jax.random.normal(jax.random.key(1), X.shape)
    g = jax.jit(jax.grad(lambda x: jnp.sum(f(x) * w)))(X)
    g_ref = jax.jit(jax.grad(lambda x: jnp.sum(r(x) * w)))(X)
    chex.assert_trees_all_equal(g, g_ref)
    if ste == "clipped":
        frac = float(jnp.mean(g == 0))
        assert 0.0 < frac < 1.0  # both inside and outside entries are exercised


def test_clipped_ste_decides_on_the_rounded_integer():
    # absmax / (absmax / 127) can exceed 127 in float32; the largest weight must keep grad 1.
    grad = jax.jit(jax.grad(lambda x: jnp.sum(jc.quant.fake_quant(x, bits=8))))
    found = 0
    for v in np.linspace(0.1, 10.0, 2000, dtype=np.float32):
        s = np.float32(v) / np.float32(127)
        if np.float32(v) * (np.float32(1) / s) > 127 or np.float32(v) / s > 127:
            found += 1
            assert grad(jnp.array([v, -0.5])).tolist() == [1.0, 1.0]
            if found == 3:
                break
    assert found, "no float32 value with absmax/scale > qmax found"


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_sign_and_ternary_vjp_match_reference(ste):
    s = jnp.full((1, 8), 0.4)
    thr = jnp.full((1, 8), 0.3)

    def ref(x, levels, reach):
        out = levels * s
        so = x + jax.lax.stop_gradient(out - x)
        if ste == "identity":
            return so
        return jnp.where(jnp.abs(x) <= reach * s, so, jax.lax.stop_gradient(out))

    cases = [
        (
            lambda x: fq.fq_sign(x, s, ste, False),
            lambda x: ref(x, jnp.where(x >= 0, 1.0, -1.0), 2.0),
        ),
        (
            lambda x: fq.fq_ternary(x, s, thr, ste),
            lambda x: ref(x, jnp.where(jnp.abs(x) > thr, jnp.sign(x), 0.0), 1.5),
        ),
    ]
    for f, r in cases:
        chex.assert_trees_all_close(jax.jit(f)(X), jax.jit(r)(X), rtol=0, atol=5e-7)
        w = jax.random.normal(jax.random.key(1), X.shape)
        chex.assert_trees_all_equal(
            jax.jit(jax.grad(lambda x, f=f, w=w: jnp.sum(f(x) * w)))(X),
            jax.jit(jax.grad(lambda x, r=r, w=w: jnp.sum(r(x) * w)))(X),
        )


@settings(max_examples=15, deadline=None)
@given(
    hnp.arrays(np.float32, (6, 4), elements=st.floats(-100, 100, width=32)),
    st.sampled_from([2, 3, 4, 8]),
    st.booleans(),
)
def test_error_at_most_half_a_step_and_idempotent(x, bits, sym):
    x = jnp.asarray(x)
    y = _FQ[(bits, sym)](x)
    s = _SCALE[(bits, sym)](x)
    # min-max calibration keeps every entry inside the range: error <= scale / 2 (asymmetric:
    # plus the zero-point tie's narrowing, (qmax - qmin) * 2**-20 steps, see range_params)
    qmin, qmax = jc.quant.qrange(bits, symmetric=sym, narrow_range=True)
    half = 0.5 if sym else 0.5 + (qmax - qmin) * 2.0**-20
    assert bool(jnp.all(jnp.abs(y - x) <= s * half * (1 + 1e-5) + 1e-6))
    chex.assert_trees_all_close(_FQ[(bits, sym)](y), y, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("m", [100.0, 1.0, 0.37, 3e-3])
def test_asymmetric_zero_point_tie_idempotent(bits, m):
    """Columns whose range is ``[-m, m]`` put the zero point on a tie (odd level count): the
    range's inside end must round onto the grid's end, not a level inward, under jit as
    eagerly, so quantizing again changes nothing and both grid ends are used."""
    rng = np.random.default_rng(bits)
    x = rng.uniform(-m, m, (6, 16)).astype(np.float32)
    x[0], x[1] = -m, m
    qmin, qmax = jc.quant.qrange(bits, symmetric=False, narrow_range=True)
    s = 2 * m / (qmax - qmin)
    eager = lambda v: jc.quant.fake_quant(v, bits=bits, symmetric=False, axis=-1)
    for quantize in (_FQ[(bits, False)], eager):
        y = np.asarray(quantize(jnp.asarray(x)))
        # the same grid again (its scale to float rounding: a level moves by an ulp at most)
        np.testing.assert_allclose(np.asarray(quantize(jnp.asarray(y))), y, rtol=1e-6, atol=0)
        # both ends of the grid are reached: the output spans qmax - qmin steps
        np.testing.assert_allclose(y.max(0) - y.min(0), s * (qmax - qmin), rtol=1e-5)
        assert np.all(np.abs(y - x) <= s * (0.5 + (qmax - qmin) * 2.0**-20) * (1 + 1e-6))


def _mk(bits, sym):
    return jax.jit(lambda x: jc.quant.fake_quant(x, bits=bits, symmetric=sym, axis=-1))


def _scale(bits, sym):
    def f(x):
        qmin, qmax = jc.quant.qrange(bits, symmetric=sym, narrow_range=True)
        if sym:
            s = jnp.max(jnp.abs(x), axis=0, keepdims=True) / qmax
        else:
            lo = jnp.minimum(jnp.min(x, axis=0, keepdims=True), 0)
            hi = jnp.maximum(jnp.max(x, axis=0, keepdims=True), 0)
            s = (hi - lo) / (qmax - qmin)
        return jnp.where(s > 0, s, 1.0)

    return jax.jit(f)


_FQ = {(b, s): _mk(b, s) for b in (2, 3, 4, 8) for s in (True, False)}
_SCALE = {(b, s): _scale(b, s) for b in (2, 3, 4, 8) for s in (True, False)}


@pytest.mark.parametrize("bits", [1, 2, 4, 8, "binary", "ternary"])
def test_level_counts(bits):
    y = jc.quant.fake_quant(X, bits=bits, axis=-1)
    n = max(len(np.unique(np.asarray(y[:, j]))) for j in range(8))
    expected = {1: 2, 2: 3, 4: 15, 8: 255, "binary": 2, "ternary": 3}[bits]
    assert n <= expected
    if bits in (1, 2, "binary", "ternary"):
        assert n == expected


def test_asymmetric_uses_all_levels_and_zero_is_exact():
    fq4 = jax.jit(lambda x: jc.quant.fake_quant(x, bits=4, symmetric=False))
    y = fq4(jnp.linspace(-1.0, 3.0, 301))
    assert len(np.unique(np.asarray(y))) == 16
    z = fq4(jnp.array([0.0, -1.0, 3.0]))
    assert float(z[0]) == 0.0


@pytest.mark.parametrize(
    "bits,sym",
    [(1, True), (1, False), (4, True), (4, False), (8, True), (8, False), ("ternary", True)],
)
def test_all_zero_and_constant_tensors(bits, sym):

    @jax.jit
    def fwd_grad(x):
        y = jc.quant.fake_quant(x, bits=bits, symmetric=sym, axis=-1)
        g = jax.grad(lambda x: jnp.sum(jc.quant.fake_quant(x, bits=bits, symmetric=sym)))(x)
        return y, g

    for x in (jnp.zeros((4, 4)), jnp.full((4, 4), 0.37), jnp.full((4, 4), -2.0)):
        y, g = fwd_grad(x)
        assert bool(jnp.all(jnp.isfinite(y)))
        assert bool(jnp.all(jnp.isfinite(g)))
        if float(x[0, 0]) == 0.0 or bits in (4, 8):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-6)


def test_non_finite_input_raises_naming_the_problem():
    with pytest.raises(ValueError, match="non-finite"):
        jc.quant.fake_quant(jnp.array([1.0, jnp.nan]), bits=8)
    with pytest.raises(ValueError, match="non-finite"):
        jc.quant.fake_quant(jnp.array([1.0, jnp.inf]), bits=4)


@pytest.mark.parametrize("bits", [2, 8, "binary"])
def test_bf16_stays_bf16(bits):
    x = X.astype(jnp.bfloat16)
    y = jax.jit(lambda x: jc.quant.fake_quant(x, bits=bits, axis=-1))(x)
    assert y.dtype == jnp.bfloat16 and y.shape == x.shape
    g = jax.grad(lambda x: jnp.sum(jc.quant.fake_quant(x, bits=bits).astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "axis,scale_shape", [(None, (1, 1, 1)), (-1, (1, 1, 6)), (0, (4, 1, 1)), ((0, 2), (4, 1, 6))]
)
def test_per_channel_any_axis(axis, scale_shape):
    x = jax.random.normal(jax.random.key(2), (4, 5, 6))
    y = jc.quant.fake_quant(x, bits=3, axis=axis)
    # reconstruct per-channel scale: each slice has at most 7 levels and its max hits 3 levels
    red = tuple(a for a in range(3) if scale_shape[a] == 1)
    s = jnp.max(jnp.abs(x), axis=red, keepdims=True) / 3
    assert s.shape == scale_shape
    np.testing.assert_allclose(
        np.asarray(y), np.asarray(jnp.clip(jnp.round(x / s), -3, 3) * s), rtol=1e-6
    )


def test_per_group_along_contraction_axis():
    x = jax.random.normal(jax.random.key(3), (8, 3))
    y = jc.quant.fake_quant(x, bits=4, axis=-1, group_size=4)
    xg = x.reshape(2, 4, 3)
    s = jnp.max(jnp.abs(xg), axis=1, keepdims=True) / 7
    np.testing.assert_allclose(
        np.asarray(y), np.asarray((jnp.clip(jnp.round(xg / s), -7, 7) * s).reshape(8, 3)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="group_size=3 does not divide"):
        jc.quant.fake_quant(x, bits=4, axis=-1, group_size=3)


def test_explicit_scale_and_zero_point():
    y = jc.quant.fake_quant(
        jnp.array([-0.2, 0.0, 0.54, 9.0]), bits=4, symmetric=False, scale=0.1, zero_point=2
    )
    np.testing.assert_allclose(np.asarray(y), [-0.2, 0.0, 0.5, 1.3], rtol=1e-6)
    with pytest.raises(ValueError, match="zero_point"):
        jc.quant.fake_quant(jnp.ones(2), bits=4, zero_point=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bits": 9}, "1..8"),
        ({"bits": 0}, "1..8"),
        ({"bits": "ternary", "symmetric": False}, "symmetric"),
        ({"ste": "magic"}, "ste"),
        ({"group_size": 0}, "group_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.quant.fake_quant(jnp.ones((4, 4)), **kwargs)


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_symmetric_kernel_matches_general_grid_at_the_boundaries(ste):
    # fq_symmetric decides the clipped STE by |x / s| < qmax + 0.5 instead of rounding: the
    # same mask as fq_grid's rounded levels, checked on values a few ulps around every
    # rounding tie at the grid's ends, and on zero / subnormal / NaN / negative scales.
    rng = np.random.default_rng(0)
    scale = np.exp(rng.uniform(-20.0, 5.0, (1, 32))).astype(np.float32)
    scale[0, :5] = [0.0, 1e-45, 3e-39, np.nan, -2.0]

    @jax.jit
    def both(x, s, qmax, g):
        out_a, vjp_a = jax.vjp(lambda v: fq.fq_grid(v, s, None, -qmax, qmax, ste), x)
        out_b, vjp_b = jax.vjp(lambda v: fq.fq_symmetric(v, s, qmax, ste), x)
        return out_a, out_b, vjp_a(g)[0], vjp_b(g)[0]

    for qmax in (1.0, 3.0, 7.0, 127.0):
        with np.errstate(all="ignore"):
            tie = np.float32(qmax + 0.5) / (np.float32(1) / scale)
        ulps = rng.integers(-6, 7, (24, 32)).astype(np.float32)
        x = tie * (1 + ulps * np.float32(2**-23))
        x = np.where(rng.random(x.shape) < 0.5, -x, x).astype(np.float32)
        x[0, :4] = [0.0, np.inf, -np.inf, np.nan]
        g = rng.normal(size=x.shape).astype(np.float32)
        out_a, out_b, g_a, g_b = both(
            jnp.asarray(x), jnp.asarray(scale), jnp.float32(qmax), jnp.asarray(g)
        )
        np.testing.assert_array_equal(np.asarray(out_a), np.asarray(out_b))
        np.testing.assert_array_equal(np.asarray(g_a), np.asarray(g_b))
        if ste == "clipped":
            inside = np.asarray(g_b) != 0
            assert inside.any() and (~inside).any()  # both sides of every boundary exercised


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        (7,),
        elements=st.floats(float(np.finfo(np.float32).tiny), float(np.float32(3e38)), width=32),
    )
)
def test_materialize_is_the_identity_bit_for_bit(s):
    s = jnp.asarray(s)
    for got in (fq.materialize(s), jax.jit(fq.materialize)(s)):
        np.testing.assert_array_equal(
            np.asarray(got).view(np.uint32), np.asarray(s).view(np.uint32)
        )
    assert np.asarray(jax.grad(lambda a: fq.materialize(a).sum())(s)).tolist() == [1.0] * 7


def test_safe_scale_same_values_eager_and_jitted():
    # subnormal scales count as zero, eagerly and under jit alike
    tiny = np.finfo(np.float32).tiny
    s = jnp.array([0.0, -1.0, jnp.inf, jnp.nan, 1e-40, tiny, 0.25, 3e38], jnp.float32)
    want = np.array([1.0, 1.0, 1.0, 1.0, 1.0, tiny, 0.25, 3e38], np.float32)
    for got in (fq.safe_scale(s), jax.jit(fq.safe_scale)(s)):
        np.testing.assert_array_equal(np.asarray(got).view(np.uint32), want.view(np.uint32))
