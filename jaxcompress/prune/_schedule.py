"""Pruning schedules: when masks are recomputed and to which sparsity.

A :class:`PruningSchedule` pairs an update cadence (``begin``, ``end``, ``update_every``, in
update counts) with a function ``sparsity(count, target)`` giving the sparsity to prune to at
an update, for a leaf (or a global scope) whose final sparsity is ``target``. Masks change only
on update counts; between them they stay fixed. The per-target form lets one schedule drive
every layer of a non-uniform distribution (ERK, an explicit per-path map) exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

_NEVER = 2**31 - 1  # "no end": the largest int32 update count


def check_sparsity(sparsity: object, *, where: str = "sparsity") -> float:
    """Returns ``sparsity`` as a float; raises a ValueError unless it is a number in [0, 1).

    Raises:
      ValueError: naming ``where`` and the bad value.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"{where} must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(
            f"{where} must be in [0, 1) (1 would remove every weight), got {sparsity!r}"
        )
    return float(sparsity)


def _check_count(value: object, where: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    if value > _NEVER:
        raise ValueError(f"{where} must fit in int32, got {value!r}")
    return value


class PruningSchedule(NamedTuple):
    """When masks are recomputed, and to which sparsity.

    Masks are recomputed at the update counts ``c`` (``c = 0`` is ``init``) with
    ``begin <= c <= end`` and ``(c - begin) % update_every == 0``.
    """

    begin: int  # first update count that recomputes masks (0: at init)
    end: int  # last update count that may recompute masks
    update_every: int  # update counts between mask recomputations
    sparsity: Callable[[jax.Array, float], jax.Array]  # (count, final target) -> float32[]
    static: bool = False  # True when sparsity(count, target) == target for every count

    def is_update(self, count: jax.Array) -> jax.Array:
        """Whether masks are recomputed at update count ``count`` (a traced int32)."""
        count = jnp.asarray(count, jnp.int32)
        return (
            (count >= self.begin)
            & (count <= self.end)
            & ((count - self.begin) % self.update_every == 0)
        )


def one_shot(at_step: int = 0) -> PruningSchedule:
    """Prune once, to the target, at update count ``at_step`` (0: at ``init``).

    Args:
      at_step: the update count at which to prune.

    Returns:
      A :class:`PruningSchedule`.

    Raises:
      ValueError: if ``at_step`` is not an integer >= 0.

    Example:
      >>> import jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5, schedule=jc.prune.one_shot(at_step=100))

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks".
    """
    at_step = _check_count(at_step, "one_shot: at_step")
    return PruningSchedule(at_step, at_step, 1, lambda count, target: jnp.float32(target), True)


def constant(begin: int = 0, end: int | None = None, update_every: int = 1) -> PruningSchedule:
    """Recompute masks at the target sparsity every ``update_every`` counts in [begin, end].

    Weights may move in and out of the mask between updates (TF-MOT ``ConstantSparsity``).

    Args:
      begin: first update count that recomputes masks.
      end: last one (``None``: never stop).
      update_every: counts between recomputations (>= 1).

    Returns:
      A :class:`PruningSchedule`.

    Raises:
      ValueError: for negative counts, ``update_every < 1`` or ``end < begin``.

    Example:
      >>> import jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.8, schedule=jc.prune.constant(update_every=100))

    References:
      Zhu & Gupta 2017, "To prune, or not to prune" (TF Model Optimization ConstantSparsity).
    """
    begin = _check_count(begin, "constant: begin")
    end = _NEVER if end is None else _check_count(end, "constant: end")
    update_every = _check_count(update_every, "constant: update_every", minimum=1)
    if end < begin:
        raise ValueError(f"constant: end ({end}) must be >= begin ({begin})")
    return PruningSchedule(begin, end, update_every, lambda c, target: jnp.float32(target), True)


def iterative(rounds: int, update_every: int, begin: int = 0) -> PruningSchedule:
    """Iterative pruning: ``rounds`` prune steps, each followed by ``update_every`` counts of
    fine-tuning; every round removes the same fraction of the weights still kept.

    Round ``r = 1..rounds`` happens at update count ``begin + (r - 1) * update_every`` and
    prunes to ``1 - (1 - target) ** (r / rounds)``, so the last round reaches the target.

    Args:
      rounds: number of prune rounds (>= 1).
      update_every: fine-tuning counts between rounds (>= 1).
      begin: update count of the first round.

    Returns:
      A :class:`PruningSchedule`.

    Raises:
      ValueError: for ``rounds < 1``, ``update_every < 1`` or a negative ``begin``.

    Example:
      >>> import jaxcompress as jc
      >>> sched = jc.prune.iterative(rounds=3, update_every=1000)
      >>> [round(float(sched.sparsity(c, 0.875)), 4) for c in (0, 1000, 2000)]
      [0.5, 0.75, 0.875]

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks";
      Frankle & Carbin 2019, "The Lottery Ticket Hypothesis" (iterative magnitude pruning).
    """
    rounds = _check_count(rounds, "iterative: rounds", minimum=1)
    update_every = _check_count(update_every, "iterative: update_every", minimum=1)
    begin = _check_count(begin, "iterative: begin")
    end = begin + (rounds - 1) * update_every
    if end > _NEVER:
        raise ValueError(f"iterative: the last round ({end}) must fit in int32")

    def sparsity(count, target):
        done = jnp.clip((jnp.asarray(count, jnp.int32) - begin) // update_every + 1, 0, rounds)
        density = jnp.power(jnp.float32(1.0 - target), done.astype(jnp.float32) / rounds)
        return jnp.float32(1.0) - density

    return PruningSchedule(begin, end, update_every, sparsity, rounds == 1)


def polynomial(
    begin: int, end: int, update_every: int, *, power: float = 3.0, initial: float = 0.0
) -> PruningSchedule:
    """Gradual pruning (Zhu & Gupta 2017): sparsity rises polynomially from ``initial`` at
    ``begin`` to the target at ``end``, masks recomputed every ``update_every`` counts.

    ``s(c) = target + (initial - target) * (1 - (c - begin) / (end - begin)) ** power``, from
    ``optax.polynomial_schedule``; ``power=3`` is the paper's schedule.

    Args:
      begin: first update count that recomputes masks (``t0``).
      end: the count at which the target is reached (``t0 + n * dt``); ``end - begin`` must be
        a positive multiple of ``update_every``.
      update_every: counts between recomputations (``dt``).
      power: the exponent (3 in the paper).
      initial: sparsity at ``begin`` (``s_i``), in [0, 1).

    Returns:
      A :class:`PruningSchedule`.

    Raises:
      ValueError: for bad counts, ``end - begin`` not a positive multiple of
        ``update_every``, ``power <= 0`` or ``initial`` outside [0, 1).

    Example:
      >>> import jaxcompress as jc
      >>> sched = jc.prune.polynomial(begin=0, end=100, update_every=10)
      >>> [round(float(sched.sparsity(c, 0.9)), 4) for c in (0, 50, 100, 200)]
      [0.0, 0.7875, 0.9, 0.9]

    References:
      Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for
      model compression".
    """
    begin = _check_count(begin, "polynomial: begin")
    end = _check_count(end, "polynomial: end")
    update_every = _check_count(update_every, "polynomial: update_every", minimum=1)
    if end <= begin or (end - begin) % update_every:
        raise ValueError(
            f"polynomial: end - begin ({end} - {begin}) must be a positive multiple of "
            f"update_every ({update_every}) so that the target is reached at end"
        )
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power <= 0:
        raise ValueError(f"polynomial: power must be a number > 0, got {power!r}")
    initial = check_sparsity(initial, where="polynomial: initial")

    def sparsity(count, target):
        sched = optax.polynomial_schedule(
            init_value=initial,
            end_value=target,
            power=power,
            transition_steps=end - begin,
            transition_begin=begin,
        )
        return jnp.asarray(sched(jnp.asarray(count, jnp.int32)), jnp.float32)

    return PruningSchedule(begin, end, update_every, sparsity, False)


def floor_mul(fraction: jax.Array, n: int) -> jax.Array:
    """Exact ``floor(m * n / 2**24)`` with ``m = round(fraction * 2**24)``, in int32 arithmetic.

    This is how a traced sparsity becomes a count of pruned entries. A float32 product would
    round (``0.9 * 10`` is ``8.99999976`` in float32, not 9, and ``s * n`` is off by whole units
    once ``n > 2**24``). The fraction is taken at a resolution of ``2**-24`` (what a user value
    such as 0.9 denotes in float32) and the product is done exactly in 12-bit limbs.

    Args:
      fraction: float32 scalar, clipped to [0, 1].
      n: a static integer in ``[0, 2**31)``.

    Returns:
      int32 scalar in ``[0, n]``.

    Raises:
      ValueError: if ``n`` is out of range.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**31:
        raise ValueError(f"floor_mul: n must be an integer in [0, 2**31), got {n!r}")
    f = jnp.clip(jnp.asarray(fraction, jnp.float32), 0.0, 1.0)
    m = jnp.round(f * 2.0**24).astype(jnp.int32)  # in [0, 2**24]
    m_hi, m_lo = m >> 12, m & 0xFFF  # m_hi <= 2**12, m_lo < 2**12
    n_hi, n_lo = n >> 12, n & 0xFFF  # n_hi < 2**19, n_lo < 2**12
    # m * n = m_hi*n_hi * 2**24 + (m_hi*n_lo + m_lo*n_hi) * 2**12 + m_lo*n_lo; every partial
    # product is below 2**31.
    p1, p2, low = m_hi * n_lo, m_lo * n_hi, m_lo * n_lo
    carry = (((p1 & 0xFFF) + (p2 & 0xFFF)) * 4096 + low) >> 24
    return m_hi * n_hi + (p1 >> 12) + (p2 >> 12) + carry


def count_pruned(sparsity: jax.Array | float, n: int) -> jax.Array:
    """Entries to prune out of ``n`` at ``sparsity``: ``floor(sparsity * n)``, exactly.

    A Python float is converted in float64 (``floor(0.9 * 10) == 9``); a traced value goes
    through :func:`floor_mul`.
    """
    if isinstance(sparsity, (int, float)):
        return jnp.int32(int(sparsity * n))
    return floor_mul(sparsity, n)
