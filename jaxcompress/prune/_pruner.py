"""The one pruning mechanism every criterion shares: score -> structure -> select -> mask.

A criterion only says how to score weights (``|w|``, random, ``|w * g|``, accumulated
movement). Everything else is common: the schedule decides at which update counts masks are
recomputed and to what sparsity, the distribution gives per-layer targets (uniform, ERK, an
explicit map) or the scope is global, the structure groups entries into units (N:M, blocks,
channels), and :func:`jaxcompress.prune.select_top` keeps exactly the requested number of
units, sort-free, vectorized over layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.prune import _distribution, _random, _schedule, _structure
from jaxcompress.prune._threshold import ordered_key, select_top

Scope = str  # "layer" | "global"


class PruneState(NamedTuple):
    """State of the pruning methods (:func:`magnitude`, :func:`random`, :func:`saliency`,
    :func:`movement`)."""

    count: jax.Array  # int32[]: number of update calls
    mask: Any  # per-leaf bool[*leaf.shape] keep-mask (None for leaves not owned)
    score: Any  # movement: per-leaf float32[*leaf.shape] accumulated -w*g; otherwise None


@dataclasses.dataclass(frozen=True)
class Criterion:
    """How a method scores weights (larger score: more worth keeping)."""

    name: str  # method name for messages, e.g. "prune.magnitude"
    # (w, g, acc, salt) -> float32 scores of w's shape; g / acc are None when unused, salt
    # is a uint32 scalar (seed, update count, leaf) for seeded criteria.
    score: Callable[[jax.Array, Any, Any, Any], jax.Array]
    # Optional (w, g, acc, salt) -> uint32 selection keys for unstructured pruning, used
    # instead of ordered_key(score) (random pruning selects on its hash bits directly).
    key: Callable[[jax.Array, Any, Any, Any], jax.Array] | None = None
    aggregate: str = "sum"  # unit score: "sumsq" (L2-norm order) or "sum" of element scores
    needs_grads: bool = False  # reads the gradients at mask updates
    accumulates: bool = False  # keeps a per-weight score updated every step (movement)
    seeded: bool = False  # uses the salt


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Static facts about the owned leaves, derived from the params' structure and shapes."""

    paths: tuple[str, ...]  # owned leaf paths, in flatten order
    shapes: tuple[tuple[int, ...], ...]
    groups: tuple[tuple[int, ...], ...]  # leaf indices scored and selected together
    units: tuple[int, ...]  # selectable units per group
    targets: tuple[float, ...]  # final sparsity per group (layer scope)


def _check_structure_arg(structure, method):
    if structure is not None and not isinstance(
        structure, (_structure.NMStructure, _structure.BlockStructure, _structure.ChannelStructure)
    ):
        raise TypeError(
            f"{method}: structure must be jc.prune.nm(...), jc.prune.block(...), "
            f"jc.prune.channel(...) or None, got {structure!r}"
        )


def make_pruner(
    criterion: Criterion,
    sparsity: float | Mapping[str, float] | None,
    *,
    schedule: _schedule.PruningSchedule | None,
    at_step: int | None,
    scope: Scope,
    distribution: str,
    structure: _structure.Structure,
    seed: int,
) -> Compressor:
    """Builds a pruning Compressor from a criterion and the shared options (see
    :func:`jaxcompress.prune.magnitude` for their meaning)."""
    method = criterion.name
    _check_structure_arg(structure, method)
    if schedule is not None and at_step is not None:
        raise ValueError(f"{method}: give either schedule= or at_step=, not both")
    if schedule is None:
        schedule = _schedule.one_shot(0 if at_step is None else at_step)
    if not isinstance(schedule, _schedule.PruningSchedule):
        raise TypeError(
            f"{method}: schedule must be a jc.prune.PruningSchedule (one_shot, constant, "
            f"iterative, polynomial), got {type(schedule).__name__}"
        )
    if scope not in ("layer", "global"):
        raise ValueError(f"{method}: scope must be 'layer' or 'global', got {scope!r}")
    if distribution not in ("uniform", "erk"):
        raise ValueError(f"{method}: distribution must be 'uniform' or 'erk', got {distribution!r}")
    is_nm = isinstance(structure, _structure.NMStructure)
    if is_nm:
        if sparsity is not None:
            raise ValueError(
                f"{method}: N:M structure fixes the sparsity at 1 - n/m; leave sparsity=None, "
                f"got {sparsity!r}"
            )
        if scope != "layer" or distribution != "uniform":
            raise ValueError(f"{method}: N:M structure is per group; use scope='layer', uniform")
    elif sparsity is None:
        raise ValueError(f"{method}: sparsity is required (a float in [0, 1) or a path map)")
    elif isinstance(sparsity, Mapping):
        if scope != "layer" or distribution != "uniform":
            raise ValueError(
                f"{method}: an explicit per-path sparsity map is a layer-wise distribution; "
                "use scope='layer' and leave distribution='uniform'"
            )
    else:
        _schedule.check_sparsity(sparsity, where=f"{method}: sparsity")
        if scope == "global" and distribution != "uniform":
            raise ValueError(
                f"{method}: global scope sets per-layer sparsity by one threshold; "
                f"distribution={distribution!r} needs scope='layer'"
            )
    if criterion.needs_grads and schedule.begin == 0:
        raise ValueError(
            f"{method} scores weights with gradients, which init does not have: the schedule "
            "must begin at an update count >= 1"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{method}: seed must be an integer, got {seed!r}")

    def plan(params) -> _Plan:
        paths_lib.check_float_leaves(params, method=method)
        pairs = paths_lib.leaves_with_paths(params)
        paths = tuple(p for p, _ in pairs)
        shapes = tuple(tuple(int(d) for d in x.shape) for _, x in pairs)
        for p, s in zip(paths, shapes, strict=True):
            _structure.check_leaf(structure, p, s, method)
        if isinstance(structure, _structure.ChannelStructure) and structure.group_by_parent:
            by_parent: dict[str, list[int]] = {}
            for i, p in enumerate(paths):
                by_parent.setdefault(p.rpartition("/")[0], []).append(i)
            groups = tuple(tuple(v) for v in by_parent.values())
            for g in groups:
                sizes = {shapes[i][structure.axis] for i in g}
                if len(sizes) > 1:
                    names = ", ".join(f"{paths[i]} {shapes[i]}" for i in g)
                    raise ValueError(
                        f"{method}: channel pruning groups the leaves of one parent, but they "
                        f"have different unit counts along axis {structure.axis}: {names}; use "
                        "channel(group_by_parent=False) or route them apart"
                    )
        else:
            groups = tuple((i,) for i in range(len(paths)))
        units = tuple(_structure.num_units(structure, shapes[g[0]]) for g in groups)
        if is_nm:
            targets = tuple(1.0 - structure.n / structure.m for _ in groups)
        elif scope == "global":
            targets = tuple(float(sparsity) for _ in groups)
        else:
            # The distribution is over groups, each represented by its largest leaf.
            rep = [max(g, key=lambda i: len(shapes[i]) * 10**12 + sum(shapes[i])) for g in groups]
            targets = tuple(
                _distribution.layer_sparsities(
                    [paths[i] for i in rep], [shapes[i] for i in rep], sparsity, distribution,
                    method=method,
                )
            )  # fmt: skip
        return _Plan(paths, shapes, groups, units, targets)

    def leaf_salts(count, n):
        if not criterion.seeded:
            return [None] * n
        return [_random.salt(seed, count, i) for i in range(n)]

    def compute_masks(p: _Plan, leaves, grads, acc, count) -> list[jax.Array]:
        n = len(leaves)
        salts = leaf_salts(count, n)
        gl = [None] * n if grads is None else grads
        al = [None] * n if acc is None else acc

        def score(i):
            return criterion.score(leaves[i], gl[i], al[i], salts[i]).astype(jnp.float32)

        if is_nm:
            return [_structure.nm_mask(structure, score(i)) for i in range(n)]

        # Unstructured scores are recomputed inside each selection pass (fused into the
        # reduction, nothing materialized); unit scores of structures are computed once.
        def group_scores(g):
            if structure is None:
                return score(g[0])
            return sum(_structure.unit_scores(structure, score(i), criterion.aggregate) for i in g)

        lazy = structure is None
        if lazy and criterion.key is not None:
            fns = [
                (lambda i=g[0]: criterion.key(leaves[i], gl[i], al[i], salts[i])) for g in p.groups
            ]
        elif lazy:
            fns = [(lambda g=g: ordered_key(group_scores(g))) for g in p.groups]
        else:
            cached = [ordered_key(group_scores(g)) for g in p.groups]
            fns = [(lambda c=c: c) for c in cached]
        ushape = [
            (p.shapes[g[0]] if structure is None else _unit_shape(structure, p.shapes[g[0]]))
            for g in p.groups
        ]
        if scope == "global":
            total = sum(p.units)
            s = p.targets[0] if schedule.static else schedule.sparsity(count, p.targets[0])
            problems = [list(zip(fns, ushape, strict=True))]
            ks = [total - _schedule.count_pruned(s, total)]
        else:
            problems = [[(f, sh)] for f, sh in zip(fns, ushape, strict=True)]
            ks = []
            for t, u in zip(p.targets, p.units, strict=True):
                s = t if schedule.static else schedule.sparsity(count, t)
                ks.append(u - _schedule.count_pruned(s, u))
        ks = jnp.stack([jnp.asarray(x, jnp.int32) for x in ks])
        sel = select_top(problems, ks)
        unit_masks = sel[0] if scope == "global" else [m[0] for m in sel]
        masks: list[Any] = [None] * n
        for g, um in zip(p.groups, unit_masks, strict=True):
            for i in g:
                masks[i] = _structure.expand(structure, um, p.shapes[i])
        return masks

    # One executable for a whole mask computation, so that eager calls (init outside jit)
    # compile once instead of op by op; inside a jitted step it is inlined.
    compute_masks = jax.jit(compute_masks, static_argnums=0)

    def init_fn(params):
        p = plan(params)
        leaves, treedef = jax.tree.flatten(params)
        count = jnp.zeros([], jnp.int32)
        if schedule.begin == 0:
            masks = compute_masks(p, leaves, None, None, count)
        else:
            masks = [jnp.ones(x.shape, bool) for x in leaves]
        score = None
        if criterion.accumulates:
            score = jax.tree.unflatten(treedef, [jnp.zeros(x.shape, jnp.float32) for x in leaves])
        return PruneState(count=count, mask=jax.tree.unflatten(treedef, masks), score=score)

    def apply_fn(params, state):
        return jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros_like(w)), params, state.mask)

    def update_fn(params, state, grads=None):
        p = plan(params)
        leaves, treedef = jax.tree.flatten(params)
        if grads is None and (criterion.needs_grads or criterion.accumulates):
            raise ValueError(
                f"{method} reads gradients: call update(params, state, grads) (jc.flax.TrainState "
                "passes them)"
            )
        gl = (
            treedef.flatten_up_to(grads) if criterion.needs_grads or criterion.accumulates else None
        )
        count = state.count + 1
        old = treedef.flatten_up_to(state.mask)
        # Zero the pruned weights with the current masks first: this fuses into the optimizer's
        # update, and on the (rare) mask updates the new masks are computed from these params,
        # so a pruned weight does not come back through optimizer drift.
        kept = [jnp.where(m, w, jnp.zeros_like(w)) for w, m in zip(leaves, old, strict=True)]
        acc, score = None, state.score
        if criterion.accumulates:
            acc = [
                a - (w.astype(jnp.float32) * g.astype(jnp.float32))
                for a, w, g in zip(treedef.flatten_up_to(state.score), kept, gl, strict=True)
            ]
            score = jax.tree.unflatten(treedef, acc)

        def recompute():
            masks = compute_masks(p, kept, gl, acc, count)
            out = [jnp.where(m, w, jnp.zeros_like(w)) for w, m in zip(kept, masks, strict=True)]
            return masks, out

        # Between updates the params pass through unchanged (no extra pass over them).
        masks, out = lax.cond(schedule.is_update(count), recompute, lambda: (list(old), kept))
        mask = jax.tree.unflatten(treedef, masks)
        params = jax.tree.unflatten(treedef, out)
        return params, PruneState(count=count, mask=mask, score=score)

    return Compressor(init_fn, apply_fn, update_fn)


def _unit_shape(structure, shape):
    if isinstance(structure, _structure.BlockStructure):
        return (*shape[:-2], shape[-2] // structure.h, shape[-1] // structure.w)
    if isinstance(structure, _structure.ChannelStructure):
        return (shape[structure.axis],)
    return shape
