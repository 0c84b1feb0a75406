"""One-dimensional k-means, vectorized over channels: initializations, assignment, Lloyd.

Every function works on a points matrix ``x: float32[M, C]`` (``M`` points of each of ``C``
independent problems: the channels of a kernel, or ``C = 1`` for one codebook per tensor), a
validity mask ``valid: bool[M, C]`` (points that take part: with sparsity preserved, the
nonzero weights) and centroids ``float32[C, k]``.

Weights are scalars, so the nearest centroid is the number of midpoints between sorted
centroids that lie below the point: counted in one fused compare-and-sum for small ``k``, or
by a branchless binary search for larger ones (``O(M log k)`` time, ``O(M)`` memory; no
``M x k`` distance matrix is stored), and the centroid update is a segment sum. No sort of the
points and no host loop: everything is a fixed number of vectorized steps that jit and shard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

INITS = ("kmeans++", "linear", "density")
_DENSITY_BINS = 2048


# Up to this many centroids a point's cluster is found by counting the midpoints below it (one
# fused compare-and-sum, fastest for small k); above it, by a branchless binary search.
_COUNT_MAX_K = 32


def assign_sorted(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """Index of the nearest centroid of every point, for centroids sorted ascending per row.

    Ties (a point exactly half-way) go to the smaller centroid.
    """
    k = centroids.shape[-1]
    if k == 1:
        return jnp.zeros(x.shape, jnp.int32)
    mids = 0.5 * (centroids[:, 1:] + centroids[:, :-1])  # [C, k-1]
    if k <= _COUNT_MAX_K:
        return jnp.sum(x[:, :, None] > mids[None, :, :], axis=-1, dtype=jnp.int32)
    # Branchless binary search: mids padded with +inf to 2**b - 1 entries, b steps of
    # "move right by `step` if the midpoint there is below the point".
    span = 1 << (k - 1).bit_length()
    pad = jnp.full((mids.shape[0], span - k), jnp.inf, mids.dtype)
    table = jnp.concatenate([mids, pad], axis=1).T  # [span - 1, C]
    pos = jnp.zeros(x.shape, jnp.int32)
    step = span // 2
    while step >= 1:
        cand = pos + step
        below = x > jnp.take_along_axis(table, cand - 1, axis=0)
        pos = jnp.where(below, cand, pos)
        step //= 2
    return pos


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


def _sample(u: jax.Array, w: jax.Array, blocks: int) -> jax.Array:
    """Per channel, the index of a point drawn with probability ``w / sum(w)``: ``int32[C]``.

    Two-level inversion of the cumulative weights at the uniform ``u [C]``: block sums, the
    block whose cumulative sum passes ``u * total``, then a cumulative sum inside that block
    only. ``O(M)`` cheap reductions per draw (no cumulative sum over all ``M`` points), and
    never a point of zero weight.
    """
    m, channels = w.shape
    per = m // blocks
    wb = w.reshape(blocks, per, channels)
    bsum = jnp.sum(wb, axis=1)  # [B, C]
    bcdf = jnp.cumsum(bsum, axis=0)
    target = u * bcdf[-1]
    b_ids = jnp.arange(blocks, dtype=jnp.int32)[:, None]
    b = jnp.sum(bcdf <= target[None, :], axis=0, dtype=jnp.int32)
    b = jnp.minimum(b, jnp.max(jnp.where(bsum > 0, b_ids, 0), axis=0))  # rounding at the top
    before = jnp.where(b > 0, jnp.take_along_axis(bcdf, jnp.maximum(b - 1, 0)[None, :], 0)[0], 0)
    inner = jnp.take_along_axis(wb, b[None, None, :], axis=0)[0]  # [per, C]
    icdf = jnp.cumsum(inner, axis=0)
    j = jnp.sum(icdf <= (target - before)[None, :], axis=0, dtype=jnp.int32)
    p_ids = jnp.arange(per, dtype=jnp.int32)[:, None]
    j = jnp.minimum(j, jnp.max(jnp.where(inner > 0, p_ids, 0), axis=0))
    return b * per + j


def init_kmeanspp(key: jax.Array, x: jax.Array, valid: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), deterministic given ``key``.

    The first centroid is a uniformly drawn valid point; each next one is drawn with
    probability proportional to the squared distance to the nearest centroid so far (one
    uniform number per draw, inverted through block-wise cumulative sums: ``O(M)`` cheap work
    per draw). Where fewer distinct points than ``k`` exist, the remaining centroids repeat
    existing points.
    """
    m, channels = x.shape
    per = 1 << max((m - 1).bit_length() // 2, 0)  # about sqrt(M) points per block
    blocks = -(-m // per)
    pad = blocks * per - m
    xp = jnp.pad(x, ((0, pad), (0, 0)))
    vp = jnp.pad(valid, ((0, pad), (0, 0)))
    cols = jnp.arange(channels)
    u = jax.random.uniform(key, (k, channels), jnp.float32)
    uniform = vp.astype(jnp.float32)
    any_valid = jnp.any(valid, axis=0)

    def draw(i, w):
        idx = _sample(u[i], w, blocks)
        return jnp.where(any_valid, xp[idx, cols], 0.0)

    c0 = draw(0, uniform)
    d2 = jnp.where(vp, jnp.square(xp - c0[None, :]), 0.0)
    cents = jnp.zeros((channels, k), jnp.float32).at[:, 0].set(c0)

    def body(i, carry):
        cents, d2 = carry
        w = jnp.where(jnp.any(d2 > 0, axis=0)[None, :], d2, uniform)
        c = draw(i, w)
        d2 = jnp.minimum(d2, jnp.where(vp, jnp.square(xp - c[None, :]), 0.0))
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
