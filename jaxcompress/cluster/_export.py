"""Export of clustered leaves: packed cluster indices, a float codebook, an optional bitmask."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._src.base import Compressor, Params, State, states_of_type
from jaxcompress._src.export import export_owned
from jaxcompress.cluster import _packing
from jaxcompress.cluster._kmeans import KMeansState, gather, index_bits


@dataclasses.dataclass(frozen=True)
class ClusteredArray:
    """A weight-shared leaf as stored: ``ceil(log2 k)``-bit indices into a float codebook.

    A pytree (the arrays are children, the rest is static), so it passes through ``jax.jit``
    and :func:`decode` runs inside a jitted model.
    """

    indices: jax.Array  # uint8[ceil(num_indices * bits / 8)]: packed cluster indices (row-major)
    codebook: jax.Array  # float32[k], or float32[C, k] with one codebook per channel
    mask: jax.Array | None  # uint8[ceil(size / 8)]: packed nonzero bitmask; None if dense
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})  # leaf shape
    dtype: str = dataclasses.field(metadata={"static": True})  # leaf dtype name
    bits: int = dataclasses.field(metadata={"static": True})  # bits per index
    num_indices: int = dataclasses.field(metadata={"static": True})  # stored indices
    channel_axis: int | None = dataclasses.field(metadata={"static": True})  # codebook axis

    @property
    def nbytes(self) -> int:
        """Logical bytes: packed indices + codebook + bitmask."""
        n = int(self.indices.size) + int(self.codebook.size) * self.codebook.dtype.itemsize
        return n + (0 if self.mask is None else int(self.mask.size))

    def decode(self) -> jax.Array:
        """The dense leaf (see :func:`decode`)."""
        idx = _packing.unpack_bits(self.indices, self.bits, self.num_indices).astype(jnp.int32)
        if self.mask is None:
            full = idx.reshape(self.shape)
        else:
            keep = _packing.unpack_mask(self.mask, self.shape)
            if self.num_indices == 0:
                return jnp.zeros(self.shape, self.dtype)
            pos = jnp.cumsum(keep.reshape(-1).astype(jnp.int32)) - 1
            full = idx[jnp.clip(pos, 0, self.num_indices - 1)].reshape(self.shape)
        values = gather(self.codebook, full, self.channel_axis).astype(self.dtype)
        if self.mask is not None:
            values = jnp.where(keep, values, jnp.zeros_like(values))
        return values


jax.tree_util.register_dataclass(ClusteredArray)


def _is_clustered(x: Any) -> bool:
    return isinstance(x, ClusteredArray)


def decode(tree: Any) -> Params:
    """Turns every :class:`ClusteredArray` of ``tree`` back into its dense leaf.

    Jit-compatible. Other leaves are returned as they are.

    Args:
      tree: the output of :func:`export` (or any tree containing ClusteredArrays).

    Returns:
      The params tree with dense arrays, equal to the view the model was trained on.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.cluster.kmeans(8)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (32, 16))}
      >>> state = comp.init(params)
      >>> out = jc.cluster.decode(jc.cluster.export(comp, params, state))
      >>> bool((out["kernel"] == comp.apply(params, state)["kernel"]).all())
      True

    References:
      Han, Mao & Dally 2016, "Deep Compression".
    """
    return jax.tree.map(
        lambda x: x.decode() if _is_clustered(x) else x, tree, is_leaf=_is_clustered
    )


def _owned(state: State, treedef: Any, leaves: list[jax.Array]) -> list[Any]:
    """Per leaf of the view: ``(assignments, codebook)`` of the k-means state that clustered
    it, or None."""
    owned: list[tuple[jax.Array, jax.Array] | None] = [None] * len(leaves)
    for s in states_of_type(state, KMeansState):
        a_flat, c_flat, b_flat = (
            treedef.flatten_up_to(t) for t in (s.assignments, s.trainable, s.bits)
        )
        for j, (a, c, b) in enumerate(zip(a_flat, c_flat, b_flat, strict=True)):
            stored = jnp.dtype(leaves[j].dtype).itemsize * 8
            if a is not None and int(b) < stored:  # clustered (its at_step has come)
                owned[j] = (a, c)
    return owned


def export(compressor: Compressor, params: Params, state: State) -> Any:
    """The compressed form of every clustered leaf; the other leaves as the forward view.

    Each leaf owned by a :func:`kmeans` state (found anywhere in a nested ``chain`` /
    ``rules`` state) becomes a :class:`ClusteredArray`: indices packed in ``ceil(log2 k)``
    bits and a float32 codebook per leaf (or per channel). Zeros of the view (pruned
    weights, with ``preserve_sparsity``) are stored as a one-bit-per-entry mask, and indices
    only for the nonzero entries, when that is smaller. Other leaves are
    :func:`jaxcompress.finalize`'s view. :func:`decode` gives back exactly that view.

    Runs on the host (it reads concrete values); call it outside ``jax.jit``.

    Args:
      compressor: the Compressor (``kmeans``, or a chain / rules containing it).
      params: the stored float params.
      state: the compressor state.

    Returns:
      A tree shaped like ``params`` with :class:`ClusteredArray` at the clustered leaves.

    Raises:
      ValueError: if a clustered leaf's view is not its codebook (a compressor chained after
        ``kmeans`` changed the values); the message names the path.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.cluster.kmeans(32)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (64, 64))}
      >>> exported = jc.cluster.export(comp, params, comp.init(params))
      >>> exported["kernel"].bits, exported["kernel"].indices.shape  # 5 bits x 4096
      (5, (2560,))

    References:
      Han, Mao & Dally 2016, "Deep Compression".
    """
    return export_owned(
        compressor,
        params,
        state,
        owned=lambda treedef, leaves: _owned(state, treedef, leaves),
        export_leaf=lambda path, v, own: _export_leaf(path, v, *own),
    )


def _export_leaf(path: str, view: jax.Array, a: jax.Array, c: jax.Array) -> ClusteredArray:
    view = np.asarray(jax.device_get(view))
    a = np.asarray(jax.device_get(a))
    c = np.asarray(jax.device_get(c), np.float32)
    bits = index_bits(c.shape[-1])
    keep = view != 0
    size, nnz = view.size, int(keep.sum())
    # A per-channel codebook is float32[C, k]; its axis is one of the leaf's axes of length C
    # (the last first). The values decide: the axis whose gather reproduces the view.
    if c.ndim == 1:
        axes = [None]
    else:
        axes = [ax for ax in reversed(range(view.ndim)) if view.shape[ax] == c.shape[0]]
    axis, shared, bad = None, None, -1
    for ax in axes:
        cand = np.asarray(gather(jnp.asarray(c), jnp.asarray(a), ax)).astype(view.dtype)
        mismatch = int(np.count_nonzero(keep & (cand != view)))
        if mismatch == 0:
            axis, shared, bad = ax, cand, 0
            break
        bad = mismatch if bad < 0 else min(bad, mismatch)
    if bad != 0:
        raise ValueError(
            f"cluster.export: leaf {path!r}: the forward view differs from the leaf's codebook "
            f"values at {bad} entries; a compressor chained after kmeans changes its values"
        )
    # Zeros of the view (preserved sparsity) need the bitmask unless their centroid is 0 too;
    # otherwise the bitmask is used when it makes the leaf smaller.
    zeros_need_mask = bool(np.any(~keep & (shared != 0)))
    smaller = math.ceil(size / 8) + math.ceil(nnz * bits / 8) < math.ceil(size * bits / 8)
    sparse = zeros_need_mask or smaller
    idx = a.reshape(-1)[keep.reshape(-1)] if sparse else a.reshape(-1)
    return ClusteredArray(
        indices=_packing.pack_bits(jnp.asarray(idx.astype(np.uint32)), bits),
        codebook=jnp.asarray(c),
        mask=_packing.pack_mask(jnp.asarray(keep)) if sparse else None,
        shape=tuple(view.shape),
        dtype=str(view.dtype),
        bits=bits,
        num_indices=int(idx.size),
        channel_axis=axis,
    )
