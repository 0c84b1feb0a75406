"""Pruning schedules: values, update steps, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


def zhu_gupta(t, s_f, s_i, t0, n_dt):
    """Zhu & Gupta 2017, eq. (1)."""
    t = min(max(t, t0), t0 + n_dt)
    return s_f + (s_i - s_f) * (1.0 - (t - t0) / n_dt) ** 3


@pytest.mark.parametrize("s_i,s_f", [(0.0, 0.9), (0.2, 0.95), (0.5, 0.5)])
def test_polynomial_equals_zhu_gupta(s_i, s_f):
    sched = jc.prune.polynomial(begin=100, end=1100, update_every=50, initial=s_i)
    values = jax.jit(jax.vmap(lambda c: sched.sparsity(c, s_f)))(jnp.arange(0, 1300, 7))
    for c, v in zip(range(0, 1300, 7), np.asarray(values), strict=True):
        assert v == pytest.approx(zhu_gupta(c, s_f, s_i, 100, 1000), abs=2e-7)


def test_polynomial_update_steps():
    sched = jc.prune.polynomial(begin=10, end=40, update_every=10)
    upd = [int(c) for c in range(60) if bool(sched.is_update(c))]
    assert upd == [10, 20, 30, 40]


def test_iterative_rounds_remove_a_fixed_fraction_of_what_is_left():
    sched = jc.prune.iterative(rounds=4, update_every=25, begin=5)
    assert [int(c) for c in range(120) if bool(sched.is_update(c))] == [5, 30, 55, 80]
    target = 0.9375  # density halves each round: 0.5, 0.75, 0.875, 0.9375
    got = [float(sched.sparsity(c, target)) for c in (0, 5, 29, 30, 55, 80, 500)]
    np.testing.assert_allclose(got, [0.0, 0.5, 0.5, 0.75, 0.875, 0.9375, 0.9375], atol=1e-6)


def test_one_shot_and_constant():
    assert [c for c in range(10) if bool(jc.prune.one_shot(3).is_update(c))] == [3]
    sched = jc.prune.constant(begin=2, end=9, update_every=3)
    assert [c for c in range(20) if bool(sched.is_update(c))] == [2, 5, 8]
    assert float(sched.sparsity(7, 0.6)) == pytest.approx(0.6)
    never_ends = jc.prune.constant(update_every=100)
    assert bool(never_ends.is_update(2**30)) is False and bool(
        never_ends.is_update(10**9 // 100 * 100)
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jc.prune.polynomial(0, 105, 10), "multiple of update_every"),
        (lambda: jc.prune.polynomial(10, 10, 1), "positive multiple"),
        (lambda: jc.prune.polynomial(0, 100, 10, initial=1.0), "initial"),
        (lambda: jc.prune.polynomial(0, 100, 10, power=0), "power"),
        (lambda: jc.prune.constant(begin=5, end=2), "end"),
        (lambda: jc.prune.constant(update_every=0), "update_every"),
        (lambda: jc.prune.one_shot(-1), "at_step"),
        (lambda: jc.prune.one_shot(1.5), "at_step"),
        (lambda: jc.prune.iterative(0, 10), "rounds"),
    ],
)
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()
