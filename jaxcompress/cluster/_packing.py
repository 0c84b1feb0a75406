"""Bit packing: unsigned integers of any width 1..32 in a little-endian bit stream.

Value ``i`` occupies bits ``[i * bits, (i + 1) * bits)`` of the stream, least significant bit
first, and bit ``j`` of the stream is bit ``j % 8`` of byte ``j // 8``. ``n`` values take exactly
``ceil(n * bits / 8)`` bytes, so 5-bit cluster indices cost 5 bits each, not 8. Both functions
are pure ``jax.numpy`` and jit-compatible (``bits`` and ``n`` are static). They are the
flat, little-endian form of the project's one packing implementation (``jaxcompress._src.bits``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcompress._src import bits as bits_lib


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
    return bits_lib.pack(jnp.ravel(jnp.asarray(values)).astype(jnp.uint32), bits)


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
    packed = jnp.ravel(jnp.asarray(packed))
    return bits_lib.unpack(packed, bits, n, dtype=jnp.uint32)


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
    return bits_lib.pack_mask(jnp.asarray(mask))


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
    return bits_lib.unpack_mask(jnp.asarray(packed), shape)
