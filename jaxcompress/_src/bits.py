"""Bit packing: unsigned ``bits``-bit integers in a dense bit stream, along the last axis.

The one implementation behind every packed layout of the project: ``jc.quant.pack`` (QArray
codes below 8 bits), ``jc.cluster.pack_bits`` / ``pack_mask`` (cluster indices and masks),
the bitmask of ``jc.prune.SparseArray`` and the packed sections of ``jc.io`` artifacts.

Layout: along the last axis, value ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of the
stream, least significant bit first, and the stream fills bytes in ``bitorder``: with
``"little"`` stream bit ``j`` is bit ``j % 8`` of byte ``j // 8``; with ``"big"`` it is bit
``7 - j % 8`` (``numpy.packbits``' default). ``n`` values take exactly ``ceil(n * bits / 8)``
bytes, the last one zero-padded. For ``bits == 8`` and little order the bytes are the values.

Both directions take NumPy arrays to NumPy arrays (host-side export, no device transfer) and
anything else through ``jax.numpy``, jit-compatible with ``bits`` and ``n`` static.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MAX_BITS = 32  # widest value the stream holds (uint32)


def check_bits(bits: object, *, max_bits: int = MAX_BITS, where: str = "bits") -> None:
    """Raises a ValueError unless ``bits`` is an int in ``1..max_bits``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= max_bits:
        raise ValueError(f"{where} must be an integer in 1..{max_bits}, got {bits!r}")


def packed_size(n: int, bits: int) -> int:
    """Bytes taken by ``n`` values of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return math.ceil(n * bits / 8)


def value_dtype(bits: int) -> np.dtype:
    """The narrowest unsigned dtype holding ``bits``-bit values (uint8, uint16 or uint32)."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def _xp(x: Any) -> Any:
    return np if isinstance(x, (np.ndarray, np.generic)) else jnp


def _checked(x: Any, bits: int, bitorder: str, what: str) -> tuple[Any, Any]:
    """``(array namespace, x as an array)`` after checking the arguments of pack / unpack."""
    check_bits(bits)
    if bitorder not in ("little", "big"):
        raise ValueError(f"bitorder must be 'little' or 'big', got {bitorder!r}")
    xp = _xp(x)
    arr = xp.asarray(x)
    if arr.ndim == 0:
        raise ValueError(f"{what} must have at least one axis, got shape {arr.shape}")
    return xp, arr


def pack(values: jax.typing.ArrayLike, bits: int, *, bitorder: str = "little") -> Any:
    """Packs unsigned integers below ``2**bits`` along the last axis into ``uint8`` bytes.

    Args:
      values: integers in ``[0, 2**bits)`` of shape ``[..., n]`` (higher bits are dropped).
        A NumPy array is packed with NumPy; anything else with ``jax.numpy``.
      bits: bits per value, ``1..32`` (static).
      bitorder: ``"little"`` (default) or ``"big"``: the bit order within each byte.

    Returns:
      ``uint8[..., ceil(n * bits / 8)]``.

    Raises:
      ValueError: if ``bits`` is not in ``1..32`` or ``bitorder`` is unknown.

    Example:
      >>> import jax.numpy as jnp
      >>> pack(jnp.array([1, 2, 3]), 2).tolist()  # 01 | 10 | 11 -> 0b111001
      [57]
    """
    xp, v = _checked(values, bits, bitorder, "pack: values")
    dt = value_dtype(bits)
    v = v.astype(dt)
    if bits == 8 and bitorder == "little":
        return v
    shifts = xp.arange(bits, dtype=dt).reshape((1,) * v.ndim + (bits,))
    planes = ((v[..., None] >> shifts) & dt.type(1)).astype(xp.uint8)
    planes = planes.reshape(*v.shape[:-1], v.shape[-1] * bits)
    return xp.packbits(planes, axis=-1, bitorder=bitorder)


def unpack(
    packed: jax.typing.ArrayLike,
    bits: int,
    n: int,
    *,
    bitorder: str = "little",
    dtype: Any = None,
) -> Any:
    """Inverse of :func:`pack`: the first ``n`` values along the last axis.

    Args:
      packed: ``uint8[..., m]`` bytes with ``m >= ceil(n * bits / 8)``.
      bits: bits per value, ``1..32`` (static).
      n: number of values per row (static).
      bitorder: the bit order :func:`pack` used.
      dtype: the result dtype; default :func:`value_dtype` of ``bits``.

    Returns:
      ``dtype[..., n]``.

    Raises:
      ValueError: if ``bits`` is not in ``1..32``, ``bitorder`` is unknown, or the last
        axis is shorter than ``n`` values.

    Example:
      >>> import jax.numpy as jnp
      >>> unpack(jnp.array([57], jnp.uint8), 2, 3).tolist()
      [1, 2, 3]
    """
    xp, p = _checked(packed, bits, bitorder, "unpack: packed")
    p = p.astype(xp.uint8)
    need = packed_size(n, bits)
    if p.shape[-1] < need:
        raise ValueError(
            f"packed stream has {p.shape[-1]} bytes, fewer than the {need} needed for {n} "
            f"values of {bits} bits"
        )
    dt = value_dtype(bits)
    out = np.dtype(dt if dtype is None else dtype)
    if bits == 8 and bitorder == "little":
        return p[..., :n].astype(out)
    planes = xp.unpackbits(p, axis=-1, count=n * bits, bitorder=bitorder)
    planes = planes.reshape(*p.shape[:-1], n, bits).astype(dt)
    shifts = xp.arange(bits, dtype=dt).reshape((1,) * (planes.ndim - 1) + (bits,))
    return xp.sum(planes << shifts, axis=-1, dtype=dt).astype(out)


def pack_mask(mask: jax.typing.ArrayLike, *, bitorder: str = "little") -> Any:
    """A boolean mask, flattened row-major, packed one bit per entry (``uint8[ceil(size/8)]``).

    Example:
      >>> import jax.numpy as jnp
      >>> pack_mask(jnp.array([True, False, True, True])).tolist()
      [13]
    """
    xp = _xp(mask)
    return pack(xp.ravel(xp.asarray(mask)), 1, bitorder=bitorder)


def unpack_mask(
    packed: jax.typing.ArrayLike, shape: tuple[int, ...], *, bitorder: str = "little"
) -> Any:
    """Inverse of :func:`pack_mask`: a ``bool`` array of ``shape`` (static).

    Example:
      >>> unpack_mask(np.array([13], np.uint8), (2, 2)).tolist()
      [[True, False], [True, True]]
    """
    xp = _xp(packed)
    flat = xp.ravel(xp.asarray(packed))
    return unpack(flat, 1, math.prod(shape), bitorder=bitorder, dtype=bool).reshape(shape)
