"""Counter-based random bits for random pruning and regrowth: a hash of each entry's position.

``jax.random`` (threefry) would do, but it costs about a second of XLA compile per leaf shape
and a materialized array; pruning only needs well-mixed, reproducible per-entry bits. The
MurmurHash3 finalizer of ``position * golden + salt`` is a bijection of the position for a
fixed salt, so the keys of one leaf never tie, it fuses into the selection passes, and it
depends only on the flat position, so every sharding gives the same bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_U32 = jnp.uint32


def _fmix32(x: jax.Array) -> jax.Array:
    x = x ^ (x >> 16)
    x = x * _U32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * _U32(0xC2B2AE35)
    return x ^ (x >> 16)


def salt(seed: int, count: jax.Array, leaf: int) -> jax.Array:
    """A uint32 salt from an integer seed, an update count and a leaf index."""
    s = _fmix32(_U32(seed & 0xFFFFFFFF) ^ _U32(0x9E3779B9))
    s = _fmix32(s ^ jnp.asarray(count).astype(_U32) * _U32(0x632BE5AB))
    return _fmix32(s ^ _U32((leaf * 0x7FEB352D) & 0xFFFFFFFF))


def bits(shape: tuple[int, ...], salt_: jax.Array) -> jax.Array:
    """Uniform uint32 bits per entry of ``shape``: distinct within the array for one salt."""
    idx = jnp.zeros(shape, _U32)
    stride = 1
    for a in reversed(range(len(shape))):
        idx = idx + lax.broadcasted_iota(_U32, shape, a) * _U32(stride & 0xFFFFFFFF)
        stride *= shape[a]
    return _fmix32(idx * _U32(0x9E3779B9) + salt_)


def uniform(shape: tuple[int, ...], salt_: jax.Array) -> jax.Array:
    """Float32 uniform in [0, 1) with 24-bit resolution, from :func:`bits`."""
    return (bits(shape, salt_) >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
