"""One-dimensional k-means, vectorized over channels: initializations, assignment, Lloyd.

Every function works on a points matrix ``x: float32[M, C]`` (``M`` points of each of ``C``
independent problems: the channels of a kernel, or ``C = 1`` for one codebook per tensor), a
validity mask ``valid: bool[M, C]`` (points that take part: with sparsity preserved, the
nonzero weights) and centroids ``float32[C, k]``.

Weights are scalars, so the nearest centroid is the number of midpoints between sorted
centroids that lie below the point: counted in one fused compare-and-sum for small leaves, or
by a binary search for large ones (``O(M log k)`` time, ``O(M)`` memory; no ``M x k`` distance
matrix is stored), and the centroid update is a segment sum. No sort of the points and no host
loop: everything is a fixed number of vectorized steps that jit and shard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

INITS = ("kmeans++", "linear", "density")
_DENSITY_BINS = 2048


# Below this many point-boundary comparisons a leaf is assigned by counting the boundaries
# below each point (one fused compare-and-sum); above it, by a binary search (O(M log k)).
_COMPARE_ALL_MAX = 1 << 24


def assign_sorted(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """Index of the nearest centroid of every point, for centroids sorted ascending per row.

    Ties (a point exactly half-way) go to the smaller centroid.
    """
    k = centroids.shape[-1]
    if k == 1:
        return jnp.zeros(x.shape, jnp.int32)
    mids = 0.5 * (centroids[:, 1:] + centroids[:, :-1])  # [C, k-1]
    if x.size * (k - 1) <= _COMPARE_ALL_MAX:
        return jnp.sum(x[:, :, None] > mids[None, :, :], axis=-1, dtype=jnp.int32)
    search = jax.vmap(
        lambda m, v: jnp.searchsorted(m, v, side="left", method="scan_unrolled"),
        in_axes=(0, 1),
        out_axes=1,
    )
    return search(mids, x).astype(jnp.int32)


def assign(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """Index of the nearest centroid of every point (centroids in any order): ``int32[M, C]``."""
    if centroids.shape[-1] == 1:
        return jnp.zeros(x.shape, jnp.int32)
    order = jnp.argsort(centroids, axis=-1, stable=True).astype(jnp.int32)  # [C, k]
    pos = assign_sorted(x, jnp.take_along_axis(centroids, order, axis=-1))
    return jnp.take_along_axis(order.T, pos, axis=0)


def _segment_ids(a: jax.Array, k: int) -> jax.Array:
    channels = a.shape[1]
    return a + (jnp.arange(channels, dtype=jnp.int32) * k)[None, :]


def cluster_sums(x: jax.Array, valid: jax.Array, a: jax.Array, k: int) -> tuple[jax.Array, ...]:
    """Per-cluster sums of the valid points and their counts, each ``float32[C, k]``."""
    channels = x.shape[1]
    seg = _segment_ids(a, k).reshape(-1)
    w = valid.astype(jnp.float32).reshape(-1)
    num = channels * k
    sums = jax.ops.segment_sum(jnp.where(valid, x, 0.0).reshape(-1), seg, num_segments=num)
    counts = jax.ops.segment_sum(w, seg, num_segments=num)
    return sums.reshape(channels, k), counts.reshape(channels, k)


def lloyd(x: jax.Array, valid: jax.Array, centroids: jax.Array, iters: int) -> jax.Array:
    """``iters`` Lloyd iterations (assign, then move each centroid to its members' mean).

    Returns the centroids sorted ascending. In one dimension the clusters of sorted centroids
    are consecutive intervals, so the means stay sorted and the order is set once, up front.
    A centroid without members keeps its place (between its neighbours: still sorted).
    """
    k = centroids.shape[-1]

    def body(_, c):
        sums, counts = cluster_sums(x, valid, assign_sorted(x, c), k)
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), c)

    return lax.fori_loop(0, iters, body, jnp.sort(centroids, axis=-1))


def _valid_range(x: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    lo = jnp.min(jnp.where(valid, x, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(valid, x, -jnp.inf), axis=0)
    any_valid = jnp.any(valid, axis=0)
    return jnp.where(any_valid, lo, 0.0), jnp.where(any_valid, hi, 0.0), any_valid


def init_linear(x: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Centroids evenly spaced between the smallest and the largest valid point."""
    lo, hi, _ = _valid_range(x, valid)
    t = jnp.linspace(0.0, 1.0, k) if k > 1 else jnp.full((1,), 0.5)
    return lo[:, None] + (hi - lo)[:, None] * t[None, :]


def init_density(x: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """Centroids at the ``(j + 1/2) / k`` quantiles of the valid points (Han et al.).

    The cumulative distribution comes from a 2048-bin histogram between the smallest and the
    largest point, linearly interpolated inside a bin: ``O(M)``, sort-free. Lloyd iterations
    refine the result.
    """
    channels = x.shape[1]
    nb = _DENSITY_BINS
    lo, hi, _ = _valid_range(x, valid)
    width = jnp.where(hi > lo, (hi - lo) / nb, 1.0)
    b = jnp.clip(jnp.floor((x - lo[None, :]) / width[None, :]), 0, nb - 1).astype(jnp.int32)
    seg = (b + (jnp.arange(channels, dtype=jnp.int32) * nb)[None, :]).reshape(-1)
    hist = jax.ops.segment_sum(
        valid.astype(jnp.float32).reshape(-1), seg, num_segments=channels * nb
    ).reshape(channels, nb)
    total = jnp.maximum(jnp.sum(hist, axis=-1, keepdims=True), 1.0)
    cdf = jnp.cumsum(hist, axis=-1) / total  # value at the right edge of each bin
    targets = (jnp.arange(k, dtype=jnp.float32) + 0.5) / k
    j = jax.vmap(lambda c: jnp.searchsorted(c, targets, side="left", method="scan_unrolled"))(cdf)
    j = jnp.clip(j, 0, nb - 1).astype(jnp.int32)
    prev = jnp.where(j > 0, jnp.take_along_axis(cdf, jnp.maximum(j - 1, 0), axis=-1), 0.0)
    mass = jnp.take_along_axis(hist, j, axis=-1) / total
    frac = jnp.clip(
        jnp.where(mass > 0, (targets[None, :] - prev) / jnp.maximum(mass, 1e-30), 0.5), 0, 1
    )
    return lo[:, None] + (j.astype(jnp.float32) + frac) * width[:, None]


def init_kmeanspp(key: jax.Array, x: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), deterministic given ``key``.

    The first centroid is a uniformly drawn valid point; each next one is drawn with
    probability proportional to the squared distance to the nearest centroid so far (Gumbel-max
    sampling, one vectorized draw per centroid). Where fewer distinct points than ``k`` exist,
    the remaining centroids repeat existing points.
    """
    channels = x.shape[1]
    cols = jnp.arange(channels)
    keys = jax.random.split(key, k)
    uniform = jnp.where(valid, 0.0, -jnp.inf)
    any_valid = jnp.any(valid, axis=0)

    def draw(key, logits):
        idx = jax.random.categorical(key, logits, axis=0)  # [C]
        return jnp.where(any_valid, x[idx, cols], 0.0)

    c0 = draw(keys[0], uniform)
    d2 = jnp.where(valid, jnp.square(x - c0[None, :]), 0.0)
    cents = jnp.zeros((channels, k), jnp.float32).at[:, 0].set(c0)

    def body(i, carry):
        cents, d2 = carry
        far = d2 > 0
        logits = jnp.where(far, jnp.log(jnp.where(far, d2, 1.0)), -jnp.inf)
        logits = jnp.where(jnp.any(far, axis=0)[None, :], logits, uniform)
        c = draw(keys[i], logits)
        d2 = jnp.minimum(d2, jnp.where(valid, jnp.square(x - c[None, :]), 0.0))
        return cents.at[:, i].set(c), d2

    cents, _ = lax.fori_loop(1, k, body, (cents, d2))
    return cents


def fit(
    key: jax.Array, x: jax.Array, valid: jax.Array, k: int, *, init: str, iters: int
) -> jax.Array:
    """Initial centroids by ``init``, ``iters`` Lloyd iterations, sorted ascending: ``[C, k]``."""
    if init == "kmeans++":
        c = init_kmeanspp(key, x, valid, k)
    elif init == "linear":
        c = init_linear(x, valid, k)
    elif init == "density":
        c = init_density(x, valid, k)
    else:  # validated by the factory
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    return lloyd(x, valid, c, iters)
