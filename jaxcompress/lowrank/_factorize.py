"""Truncated SVD of a matrix, the rank that saves bytes, and a Dense layer run from factors."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Factors(NamedTuple):
    """A rank-``r`` kernel ``W ~= a @ b`` (a pytree: both fields are arrays)."""

    a: jax.Array  # [m, r]: input side
    b: jax.Array  # [r, n]: output side


def max_saving_rank(m: int, n: int) -> int:
    """The largest rank ``r`` whose factors are smaller than the matrix: ``r (m + n) < m n``.

    Example:
      >>> max_saving_rank(784, 512)  # 784 * 512 / 1296 = 309.7
      309
      >>> max_saving_rank(1, 100)
      0
    """
    return max(math.ceil(m * n / (m + n)) - 1, 0)


def saves_bytes(m: int, n: int, rank: int) -> bool:
    """Whether factors of ``rank`` are smaller than the dense matrix: ``rank (m + n) < m n``.

    Args:
      m, n: the matrix shape.
      rank: the rank of the factors ``[m, rank] @ [rank, n]``.

    Returns:
      True if the factors hold fewer numbers than the matrix.

    Example:
      >>> saves_bytes(64, 64, 31), saves_bytes(64, 64, 32)
      (True, False)
    """
    return rank * (m + n) < m * n


def check_energy(energy: float) -> None:
    """Raises a ValueError unless ``0 < energy <= 1``."""
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"energy must be a number in (0, 1], got {energy!r}")


def energy_rank(singular_values: jax.Array, energy: float) -> jax.Array:
    """Smallest ``r`` whose top singular values keep ``energy`` of ``sum(s**2)``: ``int32[]``.

    ``s`` is sorted descending (as ``jnp.linalg.svd`` returns it). A zero matrix has rank 0.
    Jit-compatible (``energy`` is static).

    Example:
      >>> import jax.numpy as jnp
      >>> int(energy_rank(jnp.array([3.0, 2.0, 1.0]), 0.9))  # 9/14 < 0.9 <= 13/14
      2
    """
    sq = jnp.square(singular_values.astype(jnp.float32))
    total = jnp.sum(sq)
    kept = jnp.cumsum(sq)
    # Relative slack of a few float32 ulps so that energy=1.0 is reached by the full spectrum.
    short = kept < (energy * total) * (1 - 1e-6)
    return jnp.where(total > 0, jnp.sum(short, dtype=jnp.int32) + 1, 0).astype(jnp.int32)


def _rank_for(path: str, shape: tuple[int, ...], rank: int | None) -> None:
    if rank is not None and rank > min(shape):
        raise ValueError(
            f"lowrank: rank={rank} exceeds min(m, n)={min(shape)} for leaf {path!r} of shape "
            f"{tuple(shape)}"
        )


def factorize(
    w: jax.typing.ArrayLike, rank: int | None = None, *, energy: float | None = None
) -> Factors:
    """Truncated SVD: the best rank-``r`` factors of a matrix (Eckart–Young).

    ``W = U diag(s) V^T``; the factors are ``a = U_r sqrt(s_r)`` and ``b = sqrt(s_r) V_r^T``
    (the singular values split evenly, so both factors have the same scale). The Frobenius
    error ``||W - a b||`` is ``sqrt(sum of the discarded s_i**2)``. The rank is concrete, so
    call this outside ``jax.jit`` when it comes from ``energy``.

    Args:
      w: a 2-D matrix ``[m, n]`` (a Flax Dense kernel: inputs x outputs).
      rank: the rank ``r``, ``1 <= r <= min(m, n)``.
      energy: instead of ``rank``: keep the smallest ``r`` with
        ``sum(s[:r]**2) >= energy * sum(s**2)``, ``0 < energy <= 1``.

    Returns:
      :class:`Factors` ``(a [m, r], b [r, n])`` in ``w``'s dtype (computed in float32).

    Raises:
      ValueError: if ``w`` is not 2-D, neither or both of ``rank`` / ``energy`` are given,
        ``rank`` is not in ``1..min(m, n)``, or ``energy`` is not in ``(0, 1]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> w = jax.random.normal(jax.random.key(0), (8, 6))
      >>> f = jc.lowrank.factorize(w, 6)
      >>> bool(jnp.allclose(f.a @ f.b, w, atol=1e-5)), f.a.shape, f.b.shape
      (True, (8, 6), (6, 6))

    References:
      Eckart & Young 1936; Denton et al. 2014, "Exploiting Linear Structure Within
      Convolutional Networks for Efficient Evaluation".
    """
    w = jnp.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"lowrank.factorize: w must be 2-D, got shape {tuple(w.shape)}")
    if (rank is None) == (energy is None):
        raise ValueError("lowrank.factorize: give exactly one of rank= or energy=")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"lowrank.factorize: rank must be an integer >= 1, got {rank!r}")
        _rank_for("w", w.shape, rank)
    else:
        check_energy(energy)
    u, s, vt = jnp.linalg.svd(w.astype(jnp.float32), full_matrices=False)
    r = rank if rank is not None else max(int(energy_rank(s, energy)), 1)
    root = jnp.sqrt(s[:r])
    a = (u[:, :r] * root[None, :]).astype(w.dtype)
    b = (root[:, None] * vt[:r]).astype(w.dtype)
    return Factors(a, b)


def reconstruct(kernel: Factors | jax.typing.ArrayLike) -> jax.Array:
    """The dense kernel ``a @ b`` of :class:`Factors` (arrays are returned as they are).

    Args:
      kernel: :class:`Factors` or a dense array.

    Returns:
      The ``[m, n]`` kernel.

    Example:
      >>> import jax.numpy as jnp
      >>> reconstruct(Factors(jnp.ones((3, 1)), jnp.ones((1, 2)))).tolist()
      [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
    """
    if isinstance(kernel, Factors):
        return jnp.matmul(kernel.a, kernel.b)
    return jnp.asarray(kernel)


def dense(
    x: jax.typing.ArrayLike,
    kernel: Factors | jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """A Dense layer: ``x @ a @ b + bias`` from :class:`Factors`, or ``x @ kernel + bias``.

    Pure ``jax.numpy`` (no framework), jit-compatible. With factors of rank ``r`` it costs
    ``r (m + n)`` multiply-adds per row instead of ``m n``.

    Args:
      x: inputs ``[..., m]``.
      kernel: :class:`Factors` ``(a [m, r], b [r, n])`` or a dense ``[m, n]`` kernel.
      bias: ``[n]`` or None.

    Returns:
      ``[..., n]``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> w = jax.random.normal(jax.random.key(0), (8, 4))
      >>> x = jnp.ones((2, 8))
      >>> y = jc.lowrank.dense(x, jc.lowrank.factorize(w, 4), jnp.zeros(4))
      >>> bool(jnp.allclose(y, x @ w, atol=1e-4))
      True

    References:
      Denton et al. 2014; Sainath et al. 2013, "Low-rank Matrix Factorization for Deep Neural
      Network Training with High-dimensional Output Targets".
    """
    x = jnp.asarray(x)
    if isinstance(kernel, Factors):
        y = jnp.matmul(jnp.matmul(x, kernel.a), kernel.b)
    else:
        y = jnp.matmul(x, jnp.asarray(kernel))
    if bias is not None:
        y = y + jnp.broadcast_to(jnp.asarray(bias), y.shape)
    return y
