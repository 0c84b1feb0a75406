"""Pruning criteria: magnitude, random, saliency (|w * g|) and movement (accumulated -w * g).

Each is a thin factory over the shared mechanism in ``_pruner.py``: only the score differs.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp

from jaxcompress._src.base import Compressor
from jaxcompress.prune import _random
from jaxcompress.prune._pruner import Criterion, Scope, make_pruner
from jaxcompress.prune._schedule import PruningSchedule
from jaxcompress.prune._structure import Structure

Sparsity = float | Mapping[str, float] | None


def _magnitude_score(w, g, acc, salt):
    del g, acc, salt
    return jnp.abs(w.astype(jnp.float32))


def _random_score(w, g, acc, salt):
    del g, acc
    return _random.uniform(w.shape, salt)


def _random_key(w, g, acc, salt):
    del g, acc
    return _random.bits(w.shape, salt)


def _saliency_score(w, g, acc, salt):
    del acc, salt
    return jnp.abs(w.astype(jnp.float32) * g.astype(jnp.float32))


def _movement_score(w, g, acc, salt):
    del w, g, salt
    return acc


def _build(
    crit: Criterion,
    sparsity: Sparsity,
    schedule: PruningSchedule | None,
    at_step: int | None,
    scope: Scope,
    distribution: str,
    structure: Structure,
    seed: int = 0,
) -> Compressor:
    """The pruner of ``crit`` with a factory's options (validated by ``make_pruner``).

    A criterion that reads gradients has none at ``init`` (count 0), so without a schedule it
    prunes at the first update (``one_shot(1)``, as SNIP does).
    """
    if crit.needs_grads and schedule is None and at_step is None:
        at_step = 1
    return make_pruner(
        crit, sparsity, schedule=schedule, at_step=at_step, scope=scope,
        distribution=distribution, structure=structure, seed=seed,
    )  # fmt: skip


def magnitude(
    sparsity: Sparsity = None,
    *,
    schedule: PruningSchedule | None = None,
    at_step: int | None = None,
    scope: Scope = "layer",
    distribution: str = "uniform",
    structure: Structure = None,
) -> Compressor:
    """Magnitude pruning: keep the weights (or units) of largest ``|w|``.

    Masks are exact and sort-free: every selection keeps exactly
    ``units - floor(sparsity * units)`` units (entries, blocks or channels), ties broken by
    position. Masks are recomputed only at the schedule's update counts; ``update`` also zeroes
    pruned params, so they stay zero through any optimizer (momentum, weight decay).

    Args:
      sparsity: fraction to remove, in [0, 1); or an explicit per-path map
        ``{regex: sparsity}`` (first full match wins; every pruned leaf must match). Leave it
        ``None`` with ``structure=nm(n, m)``, which fixes it at ``1 - n / m``.
      schedule: when to recompute masks and to what sparsity: :func:`one_shot` (default, at
        count 0, i.e. at ``init``), :func:`constant`, :func:`iterative` or :func:`polynomial`.
      at_step: shorthand for ``schedule=one_shot(at_step)``.
      scope: ``"layer"`` (each leaf, or channel group, pruned to its own target) or
        ``"global"`` (one threshold across every leaf routed to this method; selection counts
        are reductions, no leaf is gathered onto one device).
      distribution: layer-wise targets: ``"uniform"`` or ``"erk"`` (Erdos-Renyi-Kernel).
      structure: ``None`` (single weights), :func:`nm`, :func:`block` or :func:`channel`.
        Units are scored by the L2 norm of their weights.

    Returns:
      A Compressor with a :class:`PruneState`.

    Raises:
      ValueError: at construction for a sparsity outside [0, 1), N > M, inconsistent options;
        at ``init`` for a non-float leaf, a block or N:M group that does not divide a leaf, a
        path the sparsity map does not cover (each naming the path).

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5)
      >>> params = {"w": jnp.array([1.0, -4.0, 2.0, 0.5])}
      >>> comp.apply(params, comp.init(params))["w"].tolist()
      [0.0, -4.0, 2.0, 0.0]

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks";
      Zhu & Gupta 2017, "To prune, or not to prune" (gradual magnitude pruning).
    """
    crit = Criterion("prune.magnitude", _magnitude_score, aggregate="sumsq")
    return _build(crit, sparsity, schedule, at_step, scope, distribution, structure)


def random(
    sparsity: Sparsity = None,
    *,
    seed: int = 0,
    schedule: PruningSchedule | None = None,
    at_step: int | None = None,
    scope: Scope = "layer",
    distribution: str = "uniform",
    structure: Structure = None,
) -> Compressor:
    """Random pruning: keep a uniformly random subset of exact size (a baseline).

    Scores are counter-based random bits (a hash of each entry's position salted with
    ``seed``, the update count and the leaf), so every mask update draws a new subset, and the
    same seed gives the same masks on any sharding. Other arguments as in :func:`magnitude`.

    Args:
      sparsity: fraction to remove (see :func:`magnitude`).
      seed: integer seed.
      schedule: see :func:`magnitude`.
      at_step: see :func:`magnitude`.
      scope: see :func:`magnitude`.
      distribution: see :func:`magnitude`.
      structure: see :func:`magnitude`.

    Returns:
      A Compressor with a :class:`PruneState`.

    Raises:
      ValueError: as :func:`magnitude`, or if ``seed`` is not an integer.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.random(0.75, seed=1)
      >>> params = {"w": jnp.ones((4, 4))}
      >>> int(comp.apply(params, comp.init(params))["w"].sum())
      4

    References:
      Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning".
    """
    crit = Criterion("prune.random", _random_score, key=_random_key, seeded=True)
    return _build(crit, sparsity, schedule, at_step, scope, distribution, structure, seed=seed)


def saliency(
    sparsity: Sparsity = None,
    *,
    schedule: PruningSchedule | None = None,
    at_step: int | None = None,
    scope: Scope = "layer",
    distribution: str = "uniform",
    structure: Structure = None,
) -> Compressor:
    """Saliency pruning: keep the weights of largest ``|w * g|`` (first-order Taylor / SNIP).

    The gradients are those ``update`` receives at a mask update (``jc.flax.TrainState``
    passes the step's gradients). ``init`` has none, so the schedule must begin at an update
    count >= 1; the default is ``one_shot(1)``: prune with the first batch's gradients, as
    SNIP does. Other arguments as in :func:`magnitude`.

    Args:
      sparsity: fraction to remove (see :func:`magnitude`).
      schedule: see :func:`magnitude`; must begin at count >= 1.
      at_step: shorthand for ``schedule=one_shot(at_step)``, ``>= 1``.
      scope: see :func:`magnitude`.
      distribution: see :func:`magnitude`.
      structure: see :func:`magnitude` (units are scored by the sum of ``|w * g|``).

    Returns:
      A Compressor with a :class:`PruneState`.

    Raises:
      ValueError: as :func:`magnitude`; if the schedule begins at 0; if ``update`` is called
        without gradients.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.saliency(0.5)
      >>> params = {"w": jnp.array([1.0, -4.0, 2.0, 0.5])}
      >>> grads = {"w": jnp.array([9.0, 0.1, 1.0, 1.0])}
      >>> params, state = comp.update(params, comp.init(params), grads)
      >>> params["w"].tolist()
      [1.0, 0.0, 2.0, 0.0]

    References:
      Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity";
      Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource Efficient
      Inference" (first-order Taylor criterion).
    """
    crit = Criterion("prune.saliency", _saliency_score, needs_grads=True)
    return _build(crit, sparsity, schedule, at_step, scope, distribution, structure)


def movement(
    sparsity: Sparsity = None,
    *,
    schedule: PruningSchedule | None = None,
    at_step: int | None = None,
    scope: Scope = "layer",
    distribution: str = "uniform",
    structure: Structure = None,
) -> Compressor:
    """Movement pruning: keep the weights moving away from zero the most.

    The state accumulates ``score -= w * g`` at every ``update`` (the first-order estimate of
    how much the loss drops as ``|w|`` grows, summed over training); mask updates keep the
    largest scores. Pruned weights stay zero, so their scores freeze and a kept weight is
    dropped once its score falls below theirs. Use a gradual schedule
    (:func:`polynomial`); the default ``one_shot(1)`` prunes on one step's scores. Other
    arguments as in :func:`magnitude`.

    Args:
      sparsity: fraction to remove (see :func:`magnitude`).
      schedule: see :func:`magnitude`; must begin at count >= 1.
      at_step: shorthand for ``schedule=one_shot(at_step)``, ``>= 1``.
      scope: see :func:`magnitude`.
      distribution: see :func:`magnitude`.
      structure: see :func:`magnitude` (units are scored by the sum of their scores).

    Returns:
      A Compressor with a :class:`PruneState` whose ``score`` holds the accumulated scores.

    Raises:
      ValueError: as :func:`magnitude`; if the schedule begins at 0; if ``update`` is called
        without gradients.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.movement(0.5, at_step=2)
      >>> params = {"w": jnp.array([1.0, -1.0, 1.0, -1.0])}
      >>> grads = {"w": jnp.array([-1.0, -1.0, 1.0, 1.0])}  # w[0] and w[3] grow in |w|
      >>> state = comp.init(params)
      >>> for _ in range(2):
      ...     params, state = comp.update(params, state, grads)
      >>> (params["w"] != 0).tolist()
      [True, False, False, True]

    References:
      Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptive Sparsity by Fine-Tuning".
    """
    crit = Criterion("prune.movement", _movement_score, needs_grads=True, accumulates=True)
    return _build(crit, sparsity, schedule, at_step, scope, distribution, structure)
