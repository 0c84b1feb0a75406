"""kd_loss and multi_teacher_kd_loss: reference values, gradients, masking, errors, jit."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

# Jitted once per input structure: far fewer compilations than op-by-op eager dispatch.
kd_loss = jax.jit(jc.distill.kd_loss)
multi_kd = jax.jit(jc.distill.multi_teacher_kd_loss)
eager_kd = jc.distill.kd_loss  # for the up-front (concrete-value) errors
TOL = {jnp.float32: dict(rtol=1e-5, atol=1e-6), jnp.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def rand(seed, shape, scale=1.0):
    """float32 normal noise from numpy (no jax compilation for test inputs)."""
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def grad_of(f):
    """jit(grad(sum of f)) with respect to the first argument."""
    return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a))))


def np_kd(s, t, T):
    """T^2 KL(softmax(t/T) || softmax(s/T)) in float64 numpy, per row."""
    s = np.asarray(s, np.float64) / T
    t = np.asarray(t, np.float64) / T
    log_q = (
        s
        - np.log(np.sum(np.exp(s - s.max(-1, keepdims=True)), -1, keepdims=True))
        - s.max(-1, keepdims=True)
    )
    log_p = (
        t
        - np.log(np.sum(np.exp(t - t.max(-1, keepdims=True)), -1, keepdims=True))
        - t.max(-1, keepdims=True)
    )
    p = np.exp(log_p)
    return T * T * np.sum(np.where(p > 0, p * (log_p - log_q), 0.0), -1)


def np_ce(s, y):
    s = np.asarray(s, np.float64)
    m = s.max(-1, keepdims=True)
    lse = (m + np.log(np.sum(np.exp(s - m), -1, keepdims=True)))[..., 0]
    return lse - np.take_along_axis(s, np.asarray(y)[..., None], -1)[..., 0]


def test_hand_computed_two_classes():
    # teacher probabilities (3/4, 1/4) at T=1, student uniform:
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    s = jnp.array([[0.0, 0.0]])
    t = jnp.array([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    np.testing.assert_allclose(kd_loss(s, t, temperature=1.0), [expected], rtol=1e-6)
    # At T=2 the teacher is softmax([ln 3 / 2, 0]) = (sqrt3, 1) / (sqrt3 + 1); times T^2 = 4.
    p = np.array([math.sqrt(3.0), 1.0]) / (math.sqrt(3.0) + 1.0)
    expected_t2 = 4.0 * float(np.sum(p * np.log(p / 0.5)))
    np.testing.assert_allclose(kd_loss(s, t, temperature=2.0), [expected_t2], rtol=1e-6)
    # With a label and alpha: alpha * CE + (1 - alpha) * KD, CE = ln 2 for a uniform student.
    mixed = kd_loss(s, t, temperature=2.0, labels=jnp.array([1]), alpha=0.25)
    np.testing.assert_allclose(mixed, [0.25 * math.log(2.0) + 0.75 * expected_t2], rtol=1e-6)


@pytest.mark.parametrize("T", [1.0, 5.0])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_matches_reference_formula(T, dtype):
    s = jnp.asarray(rand(0, (4, 3, 7), 3.0), dtype)
    t = jnp.asarray(rand(1, (4, 3, 7), 3.0), dtype)
    y = np.arange(12).reshape(4, 3) % 7
    got = kd_loss(s, t, temperature=T)
    assert got.shape == (4, 3) and got.dtype == jnp.float32
    s64, t64 = np.asarray(s, np.float64), np.asarray(t, np.float64)
    np.testing.assert_allclose(got, np_kd(s64, t64, T), **TOL[dtype])
    got = kd_loss(s, t, temperature=T, labels=y, alpha=0.3)
    np.testing.assert_allclose(got, 0.3 * np_ce(s64, y) + 0.7 * np_kd(s64, t64, T), **TOL[dtype])


def test_alpha_one_is_cross_entropy_and_alpha_zero_is_kd():
    s, t = rand(2, (5, 6)), rand(3, (5, 6))
    y = np.array([0, 1, 2, 3, 5])
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(s, y)
    chex.assert_trees_all_close(kd_loss(s, t, temperature=3.0, labels=y, alpha=1.0), ce)
    onehot = np.eye(6, dtype=np.float32)[y]
    chex.assert_trees_all_close(
        kd_loss(s, t, temperature=3.0, labels=onehot, alpha=1.0), ce, rtol=1e-6
    )
    chex.assert_trees_all_close(
        kd_loss(s, t, temperature=3.0, labels=y, alpha=0.0), kd_loss(s, t, temperature=3.0)
    )
    # Default alpha: 0.5 with labels, linear in between.
    half = kd_loss(s, t, temperature=3.0, labels=y)
    chex.assert_trees_all_close(half, 0.5 * ce + 0.5 * kd_loss(s, t, temperature=3.0), rtol=1e-6)


def test_temperature_squared_keeps_gradient_scale():
    # Hinton et al. eq. 4: for large T and zero-mean logits, d(T^2 KL)/ds ~ (s - t) / C.
    s, t = rand(4, (3, 10)), rand(5, (3, 10))
    s, t = s - s.mean(-1, keepdims=True), t - t.mean(-1, keepdims=True)
    grad = grad_of(lambda s, T: kd_loss(s, t, temperature=T))
    g = np.asarray(grad(s, 100.0))
    ref = (s - t) / 10
    assert np.linalg.norm(g - ref) / np.linalg.norm(ref) < 0.02
    # So the gradient norm is about the same at T=20 and T=40 (it would shrink 4x without T^2).
    n20, n40 = np.linalg.norm(grad(s, 20.0)), np.linalg.norm(grad(s, 40.0))
    assert 0.95 < n40 / n20 < 1.05


def test_zero_gradient_wrt_teacher():
    s, t = rand(6, (4, 5)), rand(7, (4, 5))
    y = np.array([0, 1, 2, 3])
    g = grad_of(lambda t: kd_loss(s, t, temperature=2.0, labels=y))(t)
    np.testing.assert_array_equal(g, np.zeros_like(t))
    g = grad_of(lambda t: multi_kd(s, [t, t * 2], temperature=2.0))(t)
    np.testing.assert_array_equal(g, np.zeros_like(t))


@pytest.mark.parametrize("T", [0.1, 4.0])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_stable_at_extreme_logits(T, dtype):
    big = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype)
    y = jnp.array([0, 1, 0])

    def f(s, t):
        return kd_loss(s, t, temperature=T, labels=y, alpha=0.5).sum()

    # identical extreme logits: zero distillation loss, finite gradients
    np.testing.assert_allclose(kd_loss(big, big, temperature=T), 0.0, atol=1e-3)
    loss, g = jax.jit(jax.value_and_grad(f))(big, big[::-1])
    assert bool(jnp.isfinite(loss)) and bool(jnp.all(jnp.isfinite(g.astype(jnp.float32))))
    # Row 0: student puts all mass on class 0, teacher (row 2 reversed) half on classes 0, 1:
    # KL = 1/2 ln(1/2) + 1/2 (ln(1/2) - ln q_1) with ln q_1 = -2 * big / T.
    got = kd_loss(big, big[::-1], temperature=T)
    b = float(big[0, 0])  # 1e4 as the dtype holds it
    np.testing.assert_allclose(got[0], T * T * (b / T - math.log(2.0)), rtol=1e-4)
    np.testing.assert_allclose(got, np_kd(big, big[::-1], T), rtol=1e-4)


def test_masked_classes_minus_inf():
    s = jnp.array([[1.0, -jnp.inf, 0.5, 2.0], [0.0, -jnp.inf, -jnp.inf, 3.0]])
    t = jnp.array([[0.3, -jnp.inf, -1.0, 1.0], [2.0, -jnp.inf, -jnp.inf, 0.0]])
    y = jnp.array([3, 0])
    loss = kd_loss(s, t, temperature=2.0, labels=y, alpha=0.5)
    # Equal to the loss on the logits with the masked class removed.
    keep = np.array([0, 2, 3])
    ref0 = kd_loss(s[:1, keep], t[:1, keep], temperature=2.0, labels=jnp.array([2]), alpha=0.5)
    np.testing.assert_allclose(loss[0], ref0[0], rtol=1e-6)
    keep1 = np.array([0, 3])
    ref1 = kd_loss(s[1:, keep1], t[1:, keep1], temperature=2.0, labels=jnp.array([0]), alpha=0.5)
    np.testing.assert_allclose(loss[1], ref1[0], rtol=1e-6)
    g = grad_of(lambda s: kd_loss(s, t, temperature=2.0, labels=y, alpha=0.5))(s)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert float(g[0, 1]) == 0.0 and float(g[1, 2]) == 0.0
    # A class only the teacher masks contributes nothing (0 log 0 = 0); still finite.
    s2 = jnp.where(jnp.isinf(s), 0.0, s)
    assert bool(jnp.all(jnp.isfinite(kd_loss(s2, t, temperature=2.0))))
    # A class the student masks but the teacher does not: the KL divergence is infinite.
    assert float(kd_loss(s, jnp.zeros_like(t), temperature=2.0)[0]) == np.inf


def test_where_class_mask_equals_minus_inf():
    s, t = rand(8, (3, 5)), rand(9, (3, 5))
    mask = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]], bool)
    y = np.array([0, 4, 2])
    a = kd_loss(s, t, temperature=2.0, labels=y, alpha=0.2, where=mask)
    b = kd_loss(
        np.where(mask, s, -np.inf),
        np.where(mask, t, -np.inf),
        temperature=2.0,
        labels=y,
        alpha=0.2,
    )
    chex.assert_trees_all_close(a, b, rtol=1e-6)
    g = np.asarray(grad_of(lambda s: kd_loss(s, t, temperature=2.0, where=mask))(s))
    assert np.all(g[~mask] == 0) and np.all(np.isfinite(g))


def test_where_example_mask():
    s, t = rand(10, (4, 5)), rand(11, (4, 5))
    # Excluded rows may hold garbage (padding): all -inf, NaN, labels out of range.
    s[3] = -np.inf
    t[3] = np.nan
    y = np.array([0, 1, 2, 99])
    keep = np.array([True, True, True, False])
    loss = kd_loss(s, t, temperature=2.0, labels=y, alpha=0.5, where=keep)
    ref = kd_loss(s[:3], t[:3], temperature=2.0, labels=y[:3], alpha=0.5)
    chex.assert_trees_all_close(loss[:3], ref, rtol=1e-6)
    assert float(loss[3]) == 0.0
    g = np.asarray(
        grad_of(lambda s: kd_loss(s, t, temperature=2.0, labels=y, alpha=0.5, where=keep))(s)
    )
    assert np.all(g[3] == 0) and np.all(np.isfinite(g))


def test_errors_are_clear():
    s, t = jnp.zeros((4, 10)), jnp.zeros((4, 12))
    with pytest.raises(ValueError, match=r"class-count mismatch.*\(4, 10\).*\(4, 12\)"):
        eager_kd(s, t, temperature=1.0)
    with pytest.raises(ValueError, match=r"\(4, 10\).*\(3, 10\)"):
        eager_kd(s, jnp.zeros((3, 10)), temperature=1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got 0.0"):
        eager_kd(s, s, temperature=0.0)
    with pytest.raises(ValueError, match="alpha must be in"):
        eager_kd(s, s, temperature=1.0, labels=jnp.zeros(4, jnp.int32), alpha=1.5)
    with pytest.raises(ValueError, match="no labels"):
        eager_kd(s, s, temperature=1.0, alpha=0.5)
    with pytest.raises(ValueError, match=r"labels have shape \(5,\)"):
        eager_kd(s, s, temperature=1.0, labels=jnp.zeros(5, jnp.int32))
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\), got \[10\]"):
        eager_kd(s, s, temperature=1.0, labels=jnp.array([0, 1, 10, 2]))
    with pytest.raises(ValueError, match=r"soft labels have shape \(4, 9\)"):
        eager_kd(s, s, temperature=1.0, labels=jnp.zeros((4, 9)))
    with pytest.raises(ValueError, match=r"where has shape \(3,\)"):
        eager_kd(s, s, temperature=1.0, where=jnp.ones(3, bool))
    with pytest.raises(TypeError, match="boolean"):
        eager_kd(s, s, temperature=1.0, where=jnp.ones(4))
    with pytest.raises(TypeError, match="student_logits must be floating"):
        eager_kd(jnp.zeros((4, 10), jnp.int32), s, temperature=1.0)
    with pytest.raises(ValueError, match=r"weights has shape \(3,\), expected \(2,\)"):
        jc.distill.multi_teacher_kd_loss(s, [s, s], temperature=1.0, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r">= 0"):
        jc.distill.multi_teacher_kd_loss(s, [s, s], temperature=1.0, weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"class-count mismatch.*\(teacher 1\)"):
        jc.distill.multi_teacher_kd_loss(s, [s, t], temperature=1.0)


def test_multi_teacher_is_weighted_sum():
    s = rand(12, (6, 5))
    ts = [rand(13 + i, (6, 5)) for i in range(3)]
    y = np.arange(6) % 5
    w = [0.5, 0.2, 0.3]
    got = multi_kd(s, ts, temperature=3.0, weights=w, labels=y, alpha=0.4)
    soft = sum(wi * np_kd(s, t, 3.0) for wi, t in zip(w, ts, strict=True))
    np.testing.assert_allclose(got, 0.4 * np_ce(s, y) + 0.6 * soft, rtol=1e-5)
    chex.assert_trees_all_close(
        multi_kd(s, jnp.stack(ts), temperature=3.0, weights=w),
        soft,
        rtol=1e-5,
    )
    # one teacher, weight 1: exactly kd_loss
    chex.assert_trees_all_close(
        multi_kd(s, [ts[0]], temperature=3.0, labels=y),
        kd_loss(s, ts[0], temperature=3.0, labels=y),
    )


def test_jit_with_scheduled_temperature_does_not_retrace(trace_counter):
    sched = optax.linear_schedule(8.0, 1.0, 10)
    s, t = rand(16, (4, 5)), rand(17, (4, 5))
    y = np.array([0, 1, 2, 3])

    def f(s, t, y, step):
        return kd_loss(s, t, temperature=sched(step), labels=y, alpha=0.3)

    counted = trace_counter(f)
    jf = jax.jit(counted)
    for step in range(3):
        got = jf(s, t, y, jnp.asarray(step))
        T = float(sched(step))
        np.testing.assert_allclose(got, 0.3 * np_ce(s, y) + 0.7 * np_kd(s, t, T), rtol=1e-5)
    assert counted.count == 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-30, 30), min_size=4, max_size=4),
    st.lists(st.floats(-30, 30), min_size=4, max_size=4),
    st.floats(0.5, 10.0),
    st.floats(-50, 50),
)
def test_properties_nonnegative_and_shift_invariant(s, t, T, shift):
    s, t = jnp.array([s]), jnp.array([t])
    loss = float(kd_loss(s, t, temperature=T)[0])
    assert loss >= -1e-4 * T * T
    assert abs(float(kd_loss(t + shift, t, temperature=T)[0])) <= 1e-4 * T * T
    np.testing.assert_allclose(
        kd_loss(s + shift, t - shift, temperature=T), [loss], rtol=1e-3, atol=1e-3 * T * T
    )


@functools.cache
def _mesh():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


def test_sharded_batch_matches_single_device():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    s, t = rand(18, (16, 10)), rand(19, (16, 10))
    y = np.arange(16) % 10
    f = jax.jit(lambda s, t, y: kd_loss(s, t, temperature=2.0, labels=y, alpha=0.5).mean())
    ref = f(s, t, y)
    sh = NamedSharding(_mesh(), P("data"))
    got = f(jax.device_put(s, sh), jax.device_put(t, sh), jax.device_put(y, sh))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
