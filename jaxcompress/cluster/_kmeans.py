"""Weight sharing by k-means clustering, with centroids trained by the optimizer."""

from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.cluster import _kmeans1d


class KMeansState(NamedTuple):
    """State of :func:`kmeans`."""

    count: jax.Array  # int32[]: number of update calls
    bits: Any  # per-leaf int32[]: ceil(log2 k) once clustered, the stored width before
    mask: Any  # per-leaf bool[*leaf.shape]: nonzero entries (None if sparsity is not preserved)
    assignments: Any  # per-leaf uint8/uint16/int32[*leaf.shape]: cluster index of each weight
    trainable: Any  # per-leaf float32[k] (float32[C, k] per channel): centroids, trained


def index_bits(num_clusters: int) -> int:
    """Bits of one cluster index: ``ceil(log2 k)`` (at least 1).

    Args:
      num_clusters: ``k``.

    Returns:
      The bits per index reported in a :class:`KMeansState`'s ``bits`` and used by export.

    Example:
      >>> [index_bits(k) for k in (2, 16, 17, 32, 256)]
      [1, 4, 5, 5, 8]
    """
    return max(1, (num_clusters - 1).bit_length())


def index_dtype(num_clusters: int) -> jnp.dtype:
    """The smallest unsigned integer dtype holding ``k`` cluster indices."""
    if num_clusters <= 256:
        return jnp.dtype(jnp.uint8)
    if num_clusters <= 65536:
        return jnp.dtype(jnp.uint16)
    return jnp.dtype(jnp.int32)


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"kmeans: {name} must be an integer >= {lo}, got {value!r}")


def to_points(w: jax.Array, channel_axis: int | None) -> jax.Array:
    """A leaf as a float32 points matrix ``[M, C]`` (``C = 1`` for one codebook per tensor)."""
    x = w.astype(jnp.float32)
    if channel_axis is None:
        return x.reshape(-1, 1)
    x = jnp.moveaxis(x, channel_axis, -1)
    return x.reshape(-1, x.shape[-1])


def from_points(a: jax.Array, shape: tuple[int, ...], channel_axis: int | None) -> jax.Array:
    """Inverse of :func:`to_points` for an ``[M, C]`` array of per-point values."""
    if channel_axis is None:
        return a.reshape(shape)
    moved = list(shape)
    moved.append(moved.pop(channel_axis))
    return jnp.moveaxis(a.reshape(moved), -1, channel_axis)


def gather(centroids: jax.Array, assignments: jax.Array, channel_axis: int | None) -> jax.Array:
    """``centroids[assignments]``, one codebook per channel when ``channel_axis`` is set.

    Differentiable in ``centroids``: the gradient of a centroid is the sum of the gradients
    of the weights assigned to it (the transpose of a gather is a scatter-add).
    """
    idx = assignments.astype(jnp.int32)
    if channel_axis is None:
        return jnp.take(centroids, idx, axis=0)
    k = centroids.shape[-1]
    chan = lax.broadcasted_iota(jnp.int32, idx.shape, channel_axis % idx.ndim)
    return jnp.take(centroids.reshape(-1), idx + chan * k, axis=0)


class _Pair:
    """Two results of one per-leaf computation, kept together as a single (opaque) leaf."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second


def kmeans(
    num_clusters: int,
    *,
    init: str = "kmeans++",
    per_channel: bool = False,
    channel_axis: int = -1,
    preserve_sparsity: bool = True,
    update_every: int | None = None,
    at_step: int = 0,
    iters: int = 20,
    seed: int = 0,
) -> Compressor:
    """Weight sharing: every weight of a leaf takes the value of one of ``k`` shared centroids.

    Clustering runs at ``init`` (or at the update that makes the step count reach
    ``at_step``): an initialization (``"kmeans++"``, ``"linear"`` or ``"density"``) followed
    by ``iters`` Lloyd iterations, jitted and vectorized over the leaf (scalar weights, so the
    nearest centroid comes from the sorted midpoints between centroids: no ``N x k`` distance
    matrix, no host loop). The forward view gathers each weight's centroid. Gradients reach

    * the centroids, summed over each cluster's members (Han et al. 2016): they live in the
      state's ``trainable`` field, so ``jc.flax.TrainState`` optimizes them with the params;
    * the float weights, straight through (identity), so they keep training.

    With ``update_every = n``, every ``n``-th update (after clustering) reassigns each weight to
    its nearest current centroid, under ``lax.cond``; with ``None`` the assignments stay fixed
    and only the centroids train, as in the paper. With ``preserve_sparsity``, weights that are
    exactly zero (pruned) take no part in the clustering and stay zero in the view, with a
    zero gradient; export then stores a bitmask and indices of the nonzero weights only.

    ``bits`` reports ``ceil(log2 k)`` bits per clustered weight (to :func:`jaxcompress.summary`);
    the codebooks are counted as state bytes.

    Args:
      num_clusters: ``k``, the number of shared values per leaf (per channel with
        ``per_channel``); at least 1.
      init: ``"kmeans++"`` (seeded by ``seed``, deterministic), ``"linear"`` (evenly spaced
        between min and max, the paper's best), or ``"density"`` (evenly spaced quantiles).
      per_channel: one codebook per entry of ``channel_axis`` instead of one per leaf.
      channel_axis: the channel axis for ``per_channel`` (the output axis of a Flax kernel).
      preserve_sparsity: keep zero weights at zero and out of the clustering.
      update_every: reassign weights to the nearest centroid every this many updates;
        ``None`` keeps the assignments fixed.
      at_step: cluster at ``init`` (0) or at the update that makes the count ``at_step``;
        before that the view is the unchanged leaf (e.g. to let pruned weights retrain first).
      iters: Lloyd iterations per clustering.
      seed: seed of the ``kmeans++`` draws (folded with each leaf's path and the step).

    Returns:
      A Compressor with a :class:`KMeansState`.

    Raises:
      ValueError: at construction for a bad hyper-parameter (``k < 1``, unknown ``init``,
        ``update_every < 1``, ``at_step < 0``, ``iters < 0``); at ``init`` for a leaf that is
        not floating point, has fewer than 2 dimensions (biases and norms: route them to
        ``None`` in ``jc.rules``), has fewer entries per codebook than ``k``, or has no
        ``channel_axis`` (each naming the leaf's path).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.cluster.kmeans(4)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (16, 8))}
      >>> state = comp.init(params)
      >>> int(jnp.unique(comp.apply(params, state)["kernel"]).size)
      4

    References:
      Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks with Pruning,
      Trained Quantization and Huffman Coding"; Arthur & Vassilvitskii 2007, "k-means++".
    """
    _check_int("num_clusters", num_clusters, 1)
    if init not in _kmeans1d.INITS:
        raise ValueError(f"kmeans: init must be one of {_kmeans1d.INITS}, got {init!r}")
    if update_every is not None:
        _check_int("update_every", update_every, 1)
    _check_int("at_step", at_step, 0)
    _check_int("iters", iters, 0)
    _check_int("seed", seed, 0)
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, int):
        raise ValueError(f"kmeans: channel_axis must be an integer, got {channel_axis!r}")
    k = num_clusters
    bits = index_bits(k)
    idx_dtype = index_dtype(k)
    name = f"cluster.kmeans({k})"

    def leaf_axis(w) -> int | None:
        return (channel_axis % w.ndim) if per_channel else None

    def check_leaf(path, w):
        if w.ndim < 2:
            raise ValueError(
                f"{name}: leaf {path!r} has shape {tuple(w.shape)}; weight sharing is for "
                "kernels (2 or more dimensions): route biases and norms to None in jc.rules"
            )
        if per_channel and not -w.ndim <= channel_axis < w.ndim:
            raise ValueError(
                f"{name}: channel_axis={channel_axis} is out of range for leaf {path!r} "
                f"of shape {tuple(w.shape)}"
            )
        per_book = w.size // w.shape[channel_axis] if per_channel else w.size
        if per_book < k:
            raise ValueError(
                f"{name}: leaf {path!r} of shape {tuple(w.shape)} has {per_book} entries per "
                f"codebook, fewer than num_clusters={k}"
            )

    def cluster_leaf(path, w, count):
        ax = leaf_axis(w)
        x = to_points(w, ax)
        valid = x != 0 if preserve_sparsity else jnp.ones(x.shape, bool)
        key = jax.random.fold_in(jax.random.key(seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
        key = jax.random.fold_in(key, count)
        c = _kmeans1d.fit(key, x, valid, k, init=init, iters=iters)  # sorted
        a = from_points(_kmeans1d.assign_sorted(x, c), w.shape, ax).astype(idx_dtype)
        return a, (c[0] if ax is None else c)

    def reassign_leaf(w, c):
        ax = leaf_axis(w)
        c2 = c[None, :] if ax is None else c
        a = _kmeans1d.assign(to_points(w, ax), c2)
        return from_points(a, w.shape, ax).astype(idx_dtype)

    def mask_of(params):
        if not preserve_sparsity:
            return None
        return jax.tree.map(lambda w: w != 0, params)

    def bits_of(params, active):
        def leaf_bits(w):
            stored = jnp.dtype(w.dtype).itemsize * 8
            return jnp.where(active, jnp.int32(bits), jnp.int32(stored))

        return jax.tree.map(leaf_bits, params)

    def cluster_all(params, count):
        out = paths_lib.map_with_path(lambda p, w: _Pair(*cluster_leaf(p, w, count)), params)
        return jax.tree.map(lambda t: t.first, out), jax.tree.map(lambda t: t.second, out)

    def placeholders(params):
        a = jax.tree.map(lambda w: jnp.zeros(w.shape, idx_dtype), params)

        def book(w):
            shape = (w.shape[channel_axis], k) if per_channel else (k,)
            return jnp.zeros(shape, jnp.float32)

        return a, jax.tree.map(book, params)

    def init_fn(params):
        paths_lib.check_float_leaves(params, method=name)
        for path, w in paths_lib.leaves_with_paths(params):
            check_leaf(path, w)
        count = jnp.zeros([], jnp.int32)
        if at_step == 0:
            a, c = cluster_all(params, count)
        else:
            a, c = placeholders(params)
        return KMeansState(
            count=count,
            bits=bits_of(params, count >= at_step),
            mask=mask_of(params),
            assignments=a,
            trainable=c,
        )

    def apply_leaf(w, a, c, active):
        shared = gather(c, a, leaf_axis(w)).astype(w.dtype)
        # Value: exactly the centroid (w - stop_gradient(w) is exactly 0). Gradient: summed
        # into the centroid by the gather, and passed straight through to w.
        out = shared + (w - lax.stop_gradient(w))
        if at_step > 0:
            out = jnp.where(active, out, w)
        if preserve_sparsity:
            out = jnp.where(w != 0, out, jnp.zeros_like(w))
        return out

    def apply_fn(params, state):
        active = state.count >= at_step
        return jax.tree.map(
            lambda w, a, c: apply_leaf(w, a, c, active), params, state.assignments, state.trainable
        )

    def update_fn(params, state, grads=None):
        del grads
        count = state.count + 1
        a, c = state.assignments, state.trainable
        if at_step > 0:
            a, c = lax.cond(count == at_step, lambda: cluster_all(params, count), lambda: (a, c))
        if update_every is not None:
            refresh = (count > at_step) & (count % update_every == 0)
            a = lax.cond(refresh, lambda: jax.tree.map(reassign_leaf, params, c), lambda: a)
        new = KMeansState(
            count=count,
            bits=bits_of(params, count >= at_step),
            mask=mask_of(params),
            assignments=a,
            trainable=c,
        )
        return params, new

    return Compressor(init_fn, apply_fn, update_fn)
