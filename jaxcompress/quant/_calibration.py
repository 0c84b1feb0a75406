"""Range calibration: min-max, percentile (sort-free), MSE search of the clipping range, EMA.

Every calibrator works on the grouped view of a leaf and reduces over the layout's
``reduce_axes`` with ``keepdims``, so one call calibrates every channel / group at once and,
under ``jax.sharding``, every step is a reduction (no gather, no sort).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.quant import _fake_quant

CALIBRATIONS = ("minmax", "percentile", "mse", "ema")


def _ordered_key(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (NaN above +inf)."""
    i = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)
    return lax.bitcast_convert_type(i, jnp.uint32) ^ jnp.uint32(0x80000000)


def _key_to_float(k: jax.Array) -> jax.Array:
    i = lax.bitcast_convert_type(k ^ jnp.uint32(0x80000000), jnp.int32)
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)
    return lax.bitcast_convert_type(i, jnp.float32)


def kth_largest(x: jax.Array, k: int, axes: tuple[int, ...]) -> jax.Array:
    """The ``k``-th largest entry (1-based) of each slice over ``axes``, without sorting.

    A 32-step bitwise bisection on an order-preserving integer view: each step is a compare
    and a count (a reduction), O(N) per step, and sharding-friendly.

    Args:
      x: float array.
      k: static rank, ``1 <= k <= slice size`` (clipped).
      axes: the axes each slice spans.

    Returns:
      float32 array, ``x``'s rank with size-1 ``axes``.

    Example:
      >>> import jax.numpy as jnp
      >>> kth_largest(jnp.array([[3.0, -1.0, 7.0, 5.0]]), 2, (1,)).tolist()
      [[5.0]]
    """
    n = math.prod(x.shape[a] for a in axes) if axes else 1
    k = min(max(int(k), 1), max(n, 1))
    keys = _ordered_key(x)
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))

    def body(i, t):
        cand = t | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
        cnt = jnp.sum(keys >= cand, axis=axes, keepdims=True, dtype=jnp.int32)
        return jnp.where(cnt >= k, cand, t)

    t = lax.fori_loop(0, 32, body, jnp.zeros(shape, jnp.uint32))
    return _key_to_float(t)


def percentile_rank(percentile: float, n: int) -> int:
    """Rank from the top (1-based) of the ``percentile``-th percentile of ``n`` values."""
    return min(max(math.floor((1.0 - percentile / 100.0) * n) + 1, 1), max(n, 1))


def percentile_params(xg, axes, *, percentile, symmetric, qmin, qmax):
    """``(scale, zero_point, None)`` clipping at the ``percentile``-th percentile.

    Symmetric: of ``|x|``. Asymmetric: the upper percentile of ``x`` and the lower one
    (``100 - percentile``), each extended to include 0.
    """
    xg = _fake_quant.finite_or_zero(lax.stop_gradient(xg).astype(jnp.float32))
    n = math.prod(xg.shape[a] for a in axes) if axes else 1
    k = percentile_rank(percentile, n)
    if symmetric:
        return _fake_quant.safe_scale(kth_largest(jnp.abs(xg), k, axes) / qmax), None, None
    hi = kth_largest(xg, k, axes)
    lo = -kth_largest(-xg, k, axes)
    return _fake_quant.range_params(lo, hi, qmin=qmin, qmax=qmax)


def mse_params(xg, axes, *, grid, symmetric, qmin, qmax):
    """``(scale, zero_point, None)`` minimising ``sum((q(x) - x)**2)`` per slice.

    Candidates clip the min-max range by ``alpha = i / grid`` for ``i = 1..grid``; the
    best ``alpha`` is chosen per slice (ties: the widest range). ``grid`` passes over the
    tensor, in a ``fori_loop`` (memory O(N)).
    """
    xg = _fake_quant.finite_or_zero(lax.stop_gradient(xg).astype(jnp.float32))
    if symmetric:
        hi0 = jnp.max(jnp.abs(xg), axis=axes, keepdims=True)
        lo0 = None
    else:
        lo0 = jnp.minimum(jnp.min(xg, axis=axes, keepdims=True), 0.0)
        hi0 = jnp.maximum(jnp.max(xg, axis=axes, keepdims=True), 0.0)

    def params_at(alpha):
        if symmetric:
            return _fake_quant.safe_scale(alpha * hi0 / qmax), None
        s, z, _ = _fake_quant.range_params(alpha * lo0, alpha * hi0, qmin=qmin, qmax=qmax)
        return s, z

    def err(s, z):
        q = jnp.clip(_fake_quant.grid_levels(xg, s, z), qmin, qmax)
        d = _fake_quant.grid_dequant(q, s, z) - xg
        return jnp.sum(d * d, axis=axes, keepdims=True)

    s1, z1 = params_at(jnp.float32(1.0))
    init = (err(s1, z1), s1, z1 if z1 is not None else jnp.zeros_like(s1))

    def body(i, carry):
        best, bs, bz = carry
        alpha = (grid - 1 - i).astype(jnp.float32) / grid  # (grid-1)/grid down to 1/grid
        s, z = params_at(alpha)
        e = err(s, z)
        better = e < best
        z = jnp.zeros_like(s) if z is None else z
        return jnp.where(better, e, best), jnp.where(better, s, bs), jnp.where(better, z, bz)

    _, s, z = lax.fori_loop(0, grid - 1, body, init)
    return s, (None if symmetric else z), None


def ema(old: jax.Array, new: jax.Array, decay: float) -> jax.Array:
    """Exponential moving average ``decay * old + (1 - decay) * new``."""
    return decay * old + (1.0 - decay) * new
