"""Sort-free top-k masks: the k-th largest score by bisection on counts.

No sort, argsort or top_k: a 32-step bitwise bisection on an order-preserving integer view of
the scores finds the threshold, then a second bisection on the flat index breaks ties so that
exactly ``k`` entries are kept (lower index first). Every step is a comparison and a sum, so the
cost is O(N) per step, and under ``jax.sharding`` each step is a reduction: no parameter is
gathered onto one device.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _ordered_key(scores: jax.Array) -> jax.Array:
    """Maps float scores to uint32 keys with the same order (NaN sorts above +inf)."""
    i = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.int32)
    # Negative floats: flip the magnitude bits so that more negative means smaller.
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)
    return lax.bitcast_convert_type(i, jnp.uint32) ^ jnp.uint32(0x80000000)


def _count(pred: jax.Array) -> jax.Array:
    return jnp.sum(pred, dtype=jnp.int32)


def topk_masks(scores: Sequence[jax.Array], k: jax.typing.ArrayLike) -> list[jax.Array]:
    """Boolean masks keeping exactly the ``k`` largest scores across all arrays together.

    Ties are broken deterministically: lower position first, arrays taken in order.

    Args:
      scores: float arrays (any shapes); their total size must fit in int32.
      k: number of entries to keep (int, may be traced); clipped to ``[0, total size]``.

    Returns:
      One bool mask per input, same shapes, with exactly ``min(max(k, 0), N)`` True in total.

    Example:
      >>> import jax.numpy as jnp
      >>> [m.tolist() for m in topk_masks([jnp.array([3.0, 1.0]), jnp.array([1.0, 2.0])], 3)]
      [[True, True], [False, True]]
    """
    keys = [_ordered_key(s) for s in scores]
    sizes = [int(s.size) for s in scores]
    total = sum(sizes)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, total)

    def count_ge(t):
        return sum(_count(key >= t) for key in keys)

    # Largest threshold t with count(key >= t) >= k, built bit by bit from the top.
    def thr_body(i, t):
        cand = t | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
        return jnp.where(count_ge(cand) >= k, cand, t)

    t = lax.fori_loop(0, 32, thr_body, jnp.uint32(0))
    need = k - sum(_count(key > t) for key in keys)

    # Among ties (key == t), keep the `need` with the lowest global index: largest j with
    # count(tie & index < j) <= need, found bit by bit.
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    flat_idx = [
        off + jnp.reshape(jnp.arange(n, dtype=jnp.int32), key.shape)
        for off, n, key in zip(offsets, sizes, keys)
    ]
    ties = [key == t for key in keys]

    def count_lt(j):
        return sum(_count(tie & (fi < j)) for tie, fi in zip(ties, flat_idx))

    nbits = max(total, 1).bit_length()

    def tie_body(i, j):
        cand = j | (jnp.int32(1) << (jnp.int32(nbits - 1) - i))
        ok = (cand <= total) & (count_lt(cand) <= need)
        return jnp.where(ok, cand, j)

    j = lax.fori_loop(0, nbits, tie_body, jnp.int32(0))
    return [(key > t) | (tie & (fi < j)) for key, tie, fi in zip(keys, ties, flat_idx)]


def topk_mask(scores: jax.Array, k: jax.typing.ArrayLike) -> jax.Array:
    """Boolean mask keeping exactly the ``k`` largest entries of ``scores`` (sort-free).

    Example:
      >>> import jax.numpy as jnp
      >>> topk_mask(jnp.array([0.1, 5.0, 0.1, 2.0]), 3).tolist()
      [True, True, False, True]
    """
    return topk_masks([scores], k)[0]
