"""Sparse export: a packed bitmask plus the kept values, and ``jax.experimental.sparse`` BCOO.

A pruned leaf becomes a :class:`SparseArray`: ``bitmask`` (one bit per entry, row-major,
``jnp.packbits`` order) and ``values`` (the kept entries in row-major order). ``values`` may
be any pytree whose leaves have ``nnz`` as leading axis, so the same container holds float
values, int8 codes, or codes packed by a quantizer (``encode=`` / ``decode=`` hooks): sparse +
int4 is ``sparsify(codes, mask, encode=pack_int4)`` inside a quantized leaf. The round trip is
exact (bit for bit), and :func:`nbytes` gives the real size, which equals the logical bytes
:func:`jaxcompress.summary` reports for the same state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse

from jaxcompress._src import bits as bits_lib
from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import state_fields


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SparseArray:
    """A pruned array: packed keep-bits plus the kept values.

    Attributes:
      bitmask: ``uint8[ceil(size / 8)]``, bit ``i`` (row-major, most significant bit first,
        as ``jnp.packbits``) set iff entry ``i`` is kept.
      values: the kept entries in row-major order: an array ``[nnz]``, or any pytree whose
        leaves have leading axis ``nnz`` (or are packed codes, see ``encode=``).
      shape: the dense shape (static).
      dtype: the dense dtype name (static).
    """

    bitmask: jax.Array
    values: Any
    shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        """Number of kept entries (counted from the bitmask)."""
        return int(
            bits_lib.unpack_mask(np.asarray(self.bitmask), (self.size,), bitorder="big").sum()
        )

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: the bitmask plus every array in ``values``."""
        return int(self.bitmask.nbytes) + sum(int(x.nbytes) for x in jax.tree.leaves(self.values))


def _is_sparse(x: Any) -> bool:
    return isinstance(x, SparseArray)


def sparsify(
    x: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike,
    *,
    encode: Callable[[jax.Array], Any] | None = None,
) -> SparseArray:
    """Packs the entries of ``x`` where ``mask`` is True into a :class:`SparseArray`.

    Runs eagerly (the number of kept entries sets the output shape).

    Args:
      x: the dense array (any dtype).
      mask: bool array of ``x``'s shape.
      encode: optional ``kept_values[nnz] -> pytree`` (e.g. quantize-and-pack int4 codes);
        its output is stored as ``values``.

    Returns:
      The :class:`SparseArray`.

    Raises:
      ValueError: if ``mask`` does not have ``x``'s shape.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, 2.0], [3.0, 0.0]])
      >>> sp = sparsify(x, x != 0)
      >>> sp.values.tolist(), sp.bitmask.tolist()
      ([2.0, 3.0], [96])

    References:
      Han, Mao & Dally 2016, "Deep Compression" (sparse storage of pruned weights).
    """
    x = jnp.asarray(x)
    mask = np.asarray(mask, bool)
    if mask.shape != x.shape:
        raise ValueError(f"sparsify: mask shape {mask.shape} differs from the array's {x.shape}")
    flat = mask.reshape(-1)
    values = jnp.asarray(x).reshape(-1)[np.flatnonzero(flat)]
    if encode is not None:
        values = encode(values)
    bitmask = jnp.asarray(bits_lib.pack_mask(flat, bitorder="big"))
    return SparseArray(bitmask, values, tuple(x.shape), str(np.dtype(x.dtype)))


def mask_of(sp: SparseArray) -> jax.Array:
    """The bool keep-mask of a :class:`SparseArray` (works under ``jit``).

    Args:
      sp: the sparse array.

    Returns:
      ``bool[*sp.shape]``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([0.0, 2.0, 0.0])
      >>> mask_of(sparsify(x, x != 0)).tolist()
      [False, True, False]
    """
    return bits_lib.unpack_mask(jnp.asarray(sp.bitmask), sp.shape, bitorder="big")


def densify(sp: SparseArray, *, decode: Callable[[Any], jax.Array] | None = None) -> jax.Array:
    """The dense array of a :class:`SparseArray` (zeros where pruned); jit-compatible.

    Args:
      sp: the sparse array.
      decode: inverse of the ``encode`` given to :func:`sparsify` (``values -> [nnz]``).

    Returns:
      The dense array, bit-identical to the one sparsified at kept entries.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, 2.0], [3.0, 0.0]])
      >>> bool((densify(sparsify(x, x != 0)) == x).all())
      True

    References:
      Han, Mao & Dally 2016, "Deep Compression".
    """
    values = sp.values if decode is None else decode(sp.values)
    values = jnp.asarray(values).reshape(-1)
    flat = mask_of(sp).reshape(-1)
    nnz = values.shape[0]
    # Slot of each kept entry among the values (row-major), from a running count.
    slot = jnp.cumsum(flat, dtype=jnp.int32) - 1
    taken = jnp.take(values, jnp.clip(slot, 0, max(nnz - 1, 0)), mode="clip") if nnz else None
    zero = jnp.zeros(sp.size, values.dtype)
    dense = zero if taken is None else jnp.where(flat, taken, zero)
    return dense.reshape(sp.shape).astype(sp.dtype)


_densify_jit = jax.jit(densify, static_argnames="decode")


def masks(params: Any, state: Any) -> Any:
    """Per-leaf keep-masks of a (possibly nested) compression state.

    Combines every ``mask`` field of the state (``jc.chain`` / ``jc.rules`` nest them) with a
    logical and; leaves no mask covers get ``None``.

    Args:
      params: the params tree (gives the structure).
      state: the compression state.

    Returns:
      A tree shaped like ``params`` with bool arrays or ``None``.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.rules([("w", jc.prune.magnitude(0.5)), ("b", None)])
      >>> p = {"w": jnp.array([1.0, -3.0]), "b": jnp.ones(2)}
      >>> m = jc.prune.masks(p, comp.init(p))
      >>> m["w"].tolist(), m["b"]
      ([False, True], None)
    """
    leaves, treedef = jax.tree.flatten(params)
    out: list[Any] = [None] * len(leaves)
    for tree in state_fields(state, "mask"):
        try:
            flat = treedef.flatten_up_to(tree)
        except (ValueError, TypeError):
            continue  # a mask tree of another structure: not this params tree
        for j, m in enumerate(flat):
            if m is not None:
                out[j] = m if out[j] is None else jnp.logical_and(out[j], m)
    return jax.tree.unflatten(treedef, out)


def export(
    params: Any,
    state: Any,
    *,
    encode: Callable[[jax.Array], Any] | None = None,
) -> Any:
    """Exports pruned params: every leaf with a mask in ``state`` becomes a
    :class:`SparseArray`, the others stay dense.

    Args:
      params: the params (typically ``jc.finalize(comp, params, state)`` or the stored params,
        which ``update`` keeps zero where pruned).
      state: the compression state (any nesting of ``chain`` / ``rules``).
      encode: optional per-leaf encoder of the kept values (see :func:`sparsify`).

    Returns:
      A tree shaped like ``params`` with :class:`SparseArray` leaves where masked.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.75)
      >>> params = {"w": jnp.arange(1.0, 17.0).reshape(4, 4)}
      >>> sp = jc.prune.export(params, comp.init(params))["w"]
      >>> sp.values.tolist(), sp.nbytes
      ([13.0, 14.0, 15.0, 16.0], 18)

    References:
      Han, Mao & Dally 2016, "Deep Compression" (sparse storage of pruned weights).
    """
    paths_lib.check_array_leaves(params)
    m = masks(params, state)
    leaves, treedef = jax.tree.flatten(params)
    mleaves = treedef.flatten_up_to(m)
    out = [
        x if mk is None else sparsify(x, mk, encode=encode)
        for x, mk in zip(leaves, mleaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def restore(tree: Any, *, decode: Callable[[Any], jax.Array] | None = None) -> Any:
    """Inverse of :func:`export`: dense arrays everywhere (zeros where pruned).

    Args:
      tree: an exported tree.
      decode: inverse of the ``encode`` given to :func:`export`.

    Returns:
      The dense params, bit-identical to the exported ones.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5)
      >>> p = {"w": jnp.array([1.0, -4.0, 2.0, 0.5])}
      >>> jc.prune.restore(jc.prune.export(p, comp.init(p)))["w"].tolist()
      [0.0, -4.0, 2.0, 0.0]
    """
    return jax.tree.map(
        lambda x: _densify_jit(x, decode=decode) if _is_sparse(x) else x, tree, is_leaf=_is_sparse
    )


def nbytes(tree: Any) -> int:
    """Bytes actually stored by an exported tree (bitmasks, kept values, dense leaves).

    Equals ``jc.summary(comp, params, state).logical_bytes`` for an unencoded export.

    Args:
      tree: an exported tree (or any tree of arrays).

    Returns:
      The total number of bytes.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.75)
      >>> p = {"w": jnp.arange(1.0, 65.0)}
      >>> jc.prune.nbytes(jc.prune.export(p, comp.init(p)))  # 8 B of bits + 16 floats
      72
    """
    total = 0
    for x in jax.tree.leaves(tree, is_leaf=_is_sparse):
        total += x.nbytes if _is_sparse(x) else int(np.asarray(x).nbytes)
    return total


def to_bcoo(sp: SparseArray) -> jsparse.BCOO:
    """The :class:`SparseArray` as a ``jax.experimental.sparse.BCOO`` (row-major indices).

    Args:
      sp: a sparse array whose ``values`` is a plain ``[nnz]`` array.

    Returns:
      A BCOO with ``nse = nnz``, sorted unique indices.

    Raises:
      TypeError: if ``values`` is not an array (decode it first).

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, 2.0], [3.0, 0.0]])
      >>> bool((to_bcoo(sparsify(x, x != 0)).todense() == x).all())
      True
    """
    if not hasattr(sp.values, "shape"):
        raise TypeError("to_bcoo: values must be an array; decode encoded values first")
    idx = np.argwhere(np.asarray(mask_of(sp)))
    indices = jnp.asarray(idx.astype(np.int32).reshape(-1, len(sp.shape)))
    return jsparse.BCOO(
        (jnp.asarray(sp.values), indices),
        shape=sp.shape,
        indices_sorted=True,
        unique_indices=True,
    )


def from_bcoo(mat: jsparse.BCOO) -> SparseArray:
    """A ``BCOO`` (no batch or dense dimensions) as a :class:`SparseArray`.

    Duplicate indices are summed; stored zeros stay stored (kept entries).

    Args:
      mat: the BCOO matrix.

    Returns:
      The :class:`SparseArray` (row-major values).

    Raises:
      ValueError: for batched or dense BCOO dimensions.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[0.0, 2.0], [3.0, 0.0]])
      >>> from_bcoo(to_bcoo(sparsify(x, x != 0))).values.tolist()
      [2.0, 3.0]
    """
    if mat.n_batch or mat.n_dense:
        raise ValueError("from_bcoo: only BCOO without batch or dense dimensions")
    idx = np.asarray(mat.indices).reshape(-1, len(mat.shape))
    data = np.asarray(mat.data)
    valid = np.all(idx < np.asarray(mat.shape), axis=1)  # padding uses out-of-range indices
    idx, data = idx[valid], data[valid]
    flat = np.ravel_multi_index(tuple(idx.T), mat.shape) if len(idx) else np.zeros(0, np.int64)
    # Host-side export bookkeeping: sum duplicates, keep stored zeros, row-major order.
    uniq, inverse = np.unique(flat, return_inverse=True)
    summed = np.zeros(len(uniq), data.dtype)
    np.add.at(summed, inverse, data)
    mask = np.zeros(math.prod(mat.shape), bool)
    mask[uniq] = True
    return SparseArray(
        jnp.asarray(bits_lib.pack_mask(mask, bitorder="big")),
        jnp.asarray(summed),
        tuple(mat.shape),
        str(np.dtype(mat.dtype)),
    )
