"""Dynamic sparse training: RigL (grow by gradient) and SET (grow at random).

The network is sparse from the start (ERK densities, random masks) and stays at exactly the
same number of weights per layer. Every ``update_every`` counts until ``end``, each layer drops
a fraction of its active weights, those of smallest magnitude, and grows as many inactive
ones: those of largest gradient magnitude (RigL) or at random (SET). Regrown weights start at
zero. The fraction follows a cosine decay (``optax.cosine_decay_schedule``). Selections are the
exact sort-free ones of :func:`jaxcompress.prune.select_top`, vectorized over layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.prune import _distribution, _random, _schedule
from jaxcompress.prune._threshold import ordered_key, select_top


class DSTState(NamedTuple):
    """State of :func:`rigl` and :func:`set`."""

    count: jax.Array  # int32[]: number of update calls
    mask: Any  # per-leaf bool[*leaf.shape] keep-mask (None for leaves not owned)


@jax.custom_vjp
def _ste_mask(w: jax.Array, m: jax.Array) -> jax.Array:
    return jnp.where(m, w, jnp.zeros_like(w))


def _ste_fwd(w, m):
    return _ste_mask(w, m), m


def _ste_bwd(m, g):
    # The dense gradient: RigL grows the inactive weights the loss is most sensitive to.
    return g, None


_ste_mask.defvjp(_ste_fwd, _ste_bwd)


def _grow_by_gradient(w: jax.Array, g: jax.Array, salt: jax.Array) -> jax.Array:
    """RigL: grow where ``|g|`` is largest."""
    del w, salt
    return ordered_key(jnp.abs(g.astype(jnp.float32)))


def _grow_at_random(w: jax.Array, g: Any, salt: jax.Array) -> jax.Array:
    """SET: grow a uniformly random subset (counter-based bits salted per update)."""
    del g
    return _random.bits(w.shape, salt)


def _make_dst(
    name: str,
    grow: Callable[[jax.Array, Any, jax.Array], jax.Array],  # (w, g, salt) -> uint32 keys
    dense_grads: bool,  # grows by gradient: ``update`` needs grads, ``apply`` passes them dense
    sparsity: float | Mapping[str, float],
    update_every: int,
    end: int,
    begin: int,
    drop_fraction: float,
    drop_schedule: optax.Schedule | None,
    distribution: str,
    seed: int,
) -> Compressor:
    if not isinstance(sparsity, Mapping):
        _schedule.check_sparsity(sparsity, where=f"{name}: sparsity")
    update_every = _schedule._check_count(update_every, f"{name}: update_every", minimum=1)
    begin = _schedule._check_count(begin, f"{name}: begin")
    end = _schedule._check_count(end, f"{name}: end")
    if end < begin:
        raise ValueError(f"{name}: end ({end}) must be >= begin ({begin})")
    if distribution not in ("uniform", "erk"):
        raise ValueError(f"{name}: distribution must be 'uniform' or 'erk', got {distribution!r}")
    if isinstance(drop_fraction, bool) or not isinstance(drop_fraction, (int, float)):
        raise ValueError(f"{name}: drop_fraction must be a number in (0, 1], got {drop_fraction!r}")
    if not 0.0 < drop_fraction <= 1.0:
        raise ValueError(f"{name}: drop_fraction must be in (0, 1], got {drop_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name}: seed must be an integer, got {seed!r}")
    if drop_schedule is None:
        drop_schedule = optax.cosine_decay_schedule(drop_fraction, max(end - begin, 1))

    def plan(params):
        paths_lib.check_float_leaves(params, method=name)
        pairs = paths_lib.leaves_with_paths(params)
        paths = [p for p, _ in pairs]
        shapes = [tuple(int(d) for d in x.shape) for _, x in pairs]
        targets = _distribution.layer_sparsities(paths, shapes, sparsity, distribution, method=name)
        active = [
            math.prod(s) - int(t * math.prod(s)) for s, t in zip(shapes, targets, strict=True)
        ]
        return shapes, active

    def leaf_salt(count, i):
        return _random.salt(seed, count, i)

    def initial_masks(shapes, active):
        # Random sparse init at the per-layer densities, exact counts.
        count = jnp.zeros([], jnp.int32)
        keys = [_random.bits(s, leaf_salt(count, i)) for i, s in enumerate(shapes)]
        problems = [[((lambda k=k: k), k.shape)] for k in keys]
        return [m[0] for m in select_top(problems, jnp.array(active, jnp.int32))]

    # One executable each (eager calls compile once, not op by op; inlined under jit).
    initial_masks = jax.jit(initial_masks, static_argnums=(0, 1))

    def init_fn(params):
        shapes, active = plan(params)
        _, treedef = jax.tree.flatten(params)
        masks = initial_masks(tuple(shapes), tuple(active))
        return DSTState(count=jnp.zeros([], jnp.int32), mask=jax.tree.unflatten(treedef, masks))

    def apply_fn(params, state):
        fn = _ste_mask if dense_grads else (lambda w, m: jnp.where(m, w, jnp.zeros_like(w)))
        return jax.tree.map(fn, params, state.mask)

    def rewire(shapes, active, leaves, grads, old, count):
        frac = jnp.asarray(drop_schedule(count - begin), jnp.float32)
        n_drop = jnp.stack([_schedule.floor_mul(frac, a) for a in active])
        # Drop: keep the active - n_drop largest |w| among active weights (inactive: key 0).
        drop_p = [
            [((lambda w=w, m=m: jnp.where(m, ordered_key(jnp.abs(w)), jnp.uint32(0))), s)]
            for w, m, s in zip(leaves, old, shapes, strict=True)
        ]
        kept = [x[0] for x in select_top(drop_p, jnp.array(active, jnp.int32) - n_drop)]
        # Grow n_drop among the others (kept weights: key 0, below any grow key).
        gl = [None] * len(leaves) if grads is None else grads
        # Grow keys are >= 1, above the kept weights' 0.
        grow_keys = [
            jnp.maximum(grow(w, g, leaf_salt(count, i)), jnp.uint32(1))
            for i, (w, g) in enumerate(zip(leaves, gl, strict=True))
        ]
        grow_p = [
            [((lambda k=k, m=m: jnp.where(m, jnp.uint32(0), k)), s)]
            for k, m, s in zip(grow_keys, kept, shapes, strict=True)
        ]
        grown = [x[0] for x in select_top(grow_p, n_drop)]
        return [k | g for k, g in zip(kept, grown, strict=True)]

    rewire = jax.jit(rewire, static_argnums=(0, 1))

    def update_fn(params, state, grads=None):
        shapes, active = plan(params)
        leaves, treedef = jax.tree.flatten(params)
        if dense_grads and grads is None:
            raise ValueError(
                f"{name} grows by gradient: call update(params, state, grads) "
                "(jc.flax.TrainState passes them)"
            )
        gl = None if grads is None else treedef.flatten_up_to(grads)
        count = state.count + 1
        old = treedef.flatten_up_to(state.mask)
        is_update = (
            (count >= max(begin, 1)) & (count <= end) & ((count - begin) % update_every == 0)
        )
        # Zero inactive weights with the current masks (fuses into the optimizer's update);
        # between rewirings the params then pass through unchanged.
        kept = [jnp.where(o, w, jnp.zeros_like(w)) for w, o in zip(leaves, old, strict=True)]

        def rewire_step():
            masks = rewire(tuple(shapes), tuple(active), kept, gl, old, count)
            # Regrown weights start at zero (they were inactive: zero in `kept`); dropped
            # ones are zeroed.
            out = [jnp.where(m, w, jnp.zeros_like(w)) for w, m in zip(kept, masks, strict=True)]
            return masks, out

        masks, new_leaves = lax.cond(is_update, rewire_step, lambda: (list(old), kept))
        mask = jax.tree.unflatten(treedef, masks)
        return jax.tree.unflatten(treedef, new_leaves), DSTState(count=count, mask=mask)

    return Compressor(init_fn, apply_fn, update_fn)


def rigl(
    sparsity: float | Mapping[str, float],
    *,
    end: int,
    update_every: int = 100,
    begin: int = 0,
    drop_fraction: float = 0.3,
    drop_schedule: optax.Schedule | None = None,
    distribution: str = "erk",
    seed: int = 0,
) -> Compressor:
    """RigL: sparse training that drops small weights and regrows where gradients are large.

    The mask starts random at the per-layer densities of ``distribution`` (ERK by default),
    exact counts. At update counts ``begin < c <= end`` with ``(c - begin) % update_every == 0``
    each layer drops ``floor(f(c) * active)`` of its active weights (smallest ``|w|``) and grows
    as many inactive ones (largest ``|g|``), with ``f`` the cosine decay from ``drop_fraction``
    to 0 over ``[begin, end]``; grown weights start at zero. ``apply`` masks with a
    straight-through gradient, so ``grads`` is dense (the gradient at inactive weights is what
    RigL grows by); ``update`` zeroes inactive params after every optimizer step, so they stay
    zero through momentum and weight decay.

    Args:
      sparsity: overall fraction removed, in [0, 1) (or an explicit ``{regex: sparsity}``).
      end: last update count that rewires (RigL's ``T_end``, e.g. 75% of training).
      update_every: counts between rewirings (``Delta T``).
      begin: rewiring starts after this update count.
      drop_fraction: initial drop fraction ``alpha``, in (0, 1].
      drop_schedule: an ``optax.Schedule`` of the drop fraction over ``count - begin``;
        default ``optax.cosine_decay_schedule(drop_fraction, end - begin)``.
      distribution: per-layer sparsity, ``"erk"`` or ``"uniform"``.
      seed: integer seed for the initial mask.

    Returns:
      A Compressor with a :class:`DSTState`.

    Raises:
      ValueError: for a sparsity outside [0, 1), bad counts or drop fraction, a non-float leaf
        (naming its path), or ``update`` without gradients.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.rigl(0.9, end=1000, distribution="uniform")
      >>> params = {"w": jax.random.normal(jax.random.key(0), (16, 16))}
      >>> int(comp.init(params).mask["w"].sum())
      26

    References:
      Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners".
    """
    options = (update_every, end, begin, drop_fraction, drop_schedule, distribution, seed)
    return _make_dst("prune.rigl", _grow_by_gradient, True, sparsity, *options)


def set_(
    sparsity: float | Mapping[str, float],
    *,
    end: int,
    update_every: int = 100,
    begin: int = 0,
    drop_fraction: float = 0.3,
    drop_schedule: optax.Schedule | None = None,
    distribution: str = "erk",
    seed: int = 0,
) -> Compressor:
    """SET (sparse evolutionary training): drop small weights, regrow at random.

    As :func:`rigl`, but the weights grown are a uniformly random subset of the inactive
    ones (no gradients needed, so ``apply`` masks gradients as well), from counter-based
    random bits salted with ``seed`` and the update count. Exported as ``jc.prune.set``.
    For the original constant fraction pass ``drop_schedule=optax.constant_schedule(0.3)``.

    Args:
      sparsity: overall fraction removed, in [0, 1) (or an explicit ``{regex: sparsity}``).
      end: last update count that rewires.
      update_every: counts between rewirings.
      begin: rewiring starts after this update count.
      drop_fraction: initial drop fraction, in (0, 1].
      drop_schedule: an ``optax.Schedule`` of the drop fraction; default cosine decay.
      distribution: per-layer sparsity, ``"erk"`` or ``"uniform"``.
      seed: integer seed (initial mask and regrowth).

    Returns:
      A Compressor with a :class:`DSTState`.

    Raises:
      ValueError: as :func:`rigl`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.set(0.5, end=100, update_every=1, distribution="uniform")
      >>> params = {"w": jax.random.normal(jax.random.key(0), (8, 8))}
      >>> params, state = comp.update(params, comp.init(params))
      >>> int(state.mask["w"].sum())
      32

    References:
      Mocanu et al. 2018, "Scalable Training of Artificial Neural Networks with Adaptive
      Sparse Connectivity inspired by Network Science".
    """
    options = (update_every, end, begin, drop_fraction, drop_schedule, distribution, seed)
    return _make_dst("prune.set", _grow_at_random, False, sparsity, *options)
