"""Bit packing: unsigned integers of any width 1..32 in a little-endian bit stream.

Value ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of the stream, least significant bit
first, and bit ``j`` of the stream is bit ``j % 8`` of byte ``j // 8``. ``n`` values take exactly
``ceil(n * bits / 8)`` bytes, so 5-bit cluster indices cost 5 bits each, not 8. Both functions
are pure ``jax.numpy`` and jit-compatible (``bits`` and ``n`` are static).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def check_pack_bits(bits: int) -> None:
    """Raises a ValueError unless ``bits`` is an int in 1..32."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32, got {bits!r}")


def packed_size(n: int, bits: int) -> int:
    """Bytes taken by ``n`` values of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return math.ceil(n * bits / 8)


def pack_bits(values: jax.typing.ArrayLike, bits: int) -> jax.Array:
    """Packs non-negative integers below ``2**bits`` into a ``uint8`` bit stream.

    Args:
      values: integers in ``[0, 2**bits)``, any shape (flattened in row-major order).
      bits: bits per value, 1..32.

    Returns:
      ``uint8[ceil(values.size * bits / 8)]``.

    Raises:
      ValueError: if ``bits`` is not in 1..32.

    Example:
      >>> import jax.numpy as jnp
      >>> pack_bits(jnp.array([1, 2, 3]), 2).tolist()  # 01 | 10 | 11 -> 0b111001
      [57]
    """
    check_pack_bits(bits)
    v = jnp.ravel(jnp.asarray(values)).astype(jnp.uint32)
    if bits == 8:
        return v.astype(jnp.uint8)
    shifts = jnp.arange(bits, dtype=jnp.uint32)
    planes = ((v[:, None] >> shifts[None, :]) & jnp.uint32(1)).astype(jnp.uint8)
    return jnp.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: jax.typing.ArrayLike, bits: int, n: int) -> jax.Array:
    """Inverse of :func:`pack_bits`: the first ``n`` values of the stream, as ``uint32``.

    Args:
      packed: the ``uint8`` stream.
      bits: bits per value, 1..32.
      n: number of values (static).

    Returns:
      ``uint32[n]``.

    Raises:
      ValueError: if ``bits`` is not in 1..32 or the stream is shorter than ``n`` values.

    Example:
      >>> import jax.numpy as jnp
      >>> unpack_bits(jnp.array([57], jnp.uint8), 2, 3).tolist()
      [1, 2, 3]
    """
    check_pack_bits(bits)
    packed = jnp.ravel(jnp.asarray(packed)).astype(jnp.uint8)
    if packed.size < packed_size(n, bits):
        raise ValueError(
            f"packed stream has {packed.size} bytes, fewer than the {packed_size(n, bits)} "
            f"needed for {n} values of {bits} bits"
        )
    if bits == 8:
        return packed[:n].astype(jnp.uint32)
    planes = jnp.unpackbits(packed, count=n * bits, bitorder="little")
    planes = planes.reshape(n, bits).astype(jnp.uint32)
    shifts = jnp.arange(bits, dtype=jnp.uint32)
    return jnp.sum(planes << shifts[None, :], axis=1, dtype=jnp.uint32)


def pack_mask(mask: jax.typing.ArrayLike) -> jax.Array:
    """Packs a boolean mask (row-major) into a bitmask, one bit per entry.

    Args:
      mask: booleans, any shape.

    Returns:
      ``uint8[ceil(mask.size / 8)]``, entry ``i`` in bit ``i % 8`` of byte ``i // 8``.

    Example:
      >>> import jax.numpy as jnp
      >>> pack_mask(jnp.array([True, False, True, True])).tolist()
      [13]
    """
    return jnp.packbits(jnp.ravel(jnp.asarray(mask)).astype(jnp.uint8), bitorder="little")


def unpack_mask(packed: jax.typing.ArrayLike, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of :func:`pack_mask`.

    Args:
      packed: the ``uint8`` bitmask.
      shape: the mask's shape (static).

    Returns:
      A ``bool`` array of ``shape``.

    Example:
      >>> unpack_mask([13], (2, 2)).tolist()
      [[True, False], [True, True]]
    """
    size = math.prod(shape)
    bits = jnp.unpackbits(jnp.asarray(packed, jnp.uint8), count=size, bitorder="little")
    return bits.astype(bool).reshape(shape)
