"""Integer grids and granularity layouts shared by fake quantization, calibration and export.

A *grid* is the set of integer levels a value can take: ``[qmin, qmax]`` for ``bits`` 1..8
(symmetric or asymmetric), the sign grid ``{-1, +1}`` (1-bit symmetric, XNOR-style) and the
ternary grid ``{-1, 0, +1}`` with a threshold (TWN). A *layout* says which entries share one
scale: the whole tensor, one channel (any axes kept), or a group of ``group_size`` consecutive
entries along the contraction axis. Layouts are computed from static shapes at trace time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

KINDS = ("grid", "sign", "ternary")
GRANULARITIES = ("tensor", "channel", "group")
STES = ("clipped", "identity")


def check_bits(bits: object, *, where: str = "bits") -> None:
    """Raises a ValueError unless ``bits`` is an int in 1..8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"{where} must be an integer in 1..8, 'binary' or 'ternary', got {bits!r}")


def parse_bits(bits: object, *, where: str = "bits") -> tuple[str, int]:
    """``bits`` (1..8, 'binary', 'ternary') -> ``(kind, storage bits)``; kind before symmetry."""
    if bits == "binary":
        return "sign", 1
    if bits == "ternary":
        return "ternary", 2
    check_bits(bits, where=where)
    return "grid", int(bits)


def qrange(bits: int, *, symmetric: bool, narrow_range: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a ``bits``-bit grid (static Python ints).

    Symmetric: ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (narrow) or ``[-2**(b-1), 2**(b-1) - 1]``;
    1 bit symmetric is the sign grid ``{-1, +1}``. Asymmetric: ``[0, 2**b - 1]``.

    Example:
      >>> qrange(8, symmetric=True, narrow_range=True)
      (-127, 127)
      >>> qrange(4, symmetric=False, narrow_range=True)
      (0, 15)
    """
    if not symmetric:
        return 0, 2**bits - 1
    if bits == 1:
        return -1, 1
    hi = 2 ** (bits - 1) - 1
    return (-hi if narrow_range else -hi - 1), hi


def qrange_traced(
    bits: jax.Array, *, symmetric: bool, narrow_range: bool
) -> tuple[jax.Array, jax.Array]:
    """:func:`qrange` for a traced int32 bit width (bit-width schedules), as float32."""
    b = jnp.asarray(bits, jnp.int32)
    if not symmetric:
        return jnp.zeros([], jnp.float32), (jnp.left_shift(1, b) - 1).astype(jnp.float32)
    hi = (jnp.left_shift(1, b - 1) - 1).astype(jnp.float32)
    lo = -hi if narrow_range else -hi - 1.0
    return lo, hi


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one leaf is viewed for quantization (static)."""

    shape: tuple[int, ...]  # the leaf's shape
    grouped_shape: tuple[int, ...]  # shape the scale broadcasts against (group axis split)
    reduce_axes: tuple[int, ...]  # axes of ``grouped_shape`` that share one scale

    @property
    def scale_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.reduce_axes else n for a, n in enumerate(self.grouped_shape))

    @property
    def group_count(self) -> int:
        """Number of entries sharing each scale (N of the LSQ gradient scale)."""
        return math.prod(self.grouped_shape[a] for a in self.reduce_axes) or 1

    def to_grouped(self, x: jax.Array) -> jax.Array:
        return x if self.grouped_shape == self.shape else x.reshape(self.grouped_shape)

    def from_grouped(self, x: jax.Array) -> jax.Array:
        return x if self.grouped_shape == self.shape else x.reshape(self.shape)


def _norm_axes(axes: int | Sequence[int], ndim: int, *, what: str, path: str) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int) or not -ndim <= a < ndim:
            raise ValueError(f"{path}: {what} {a!r} is out of range for a rank-{ndim} leaf")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def layout(
    shape: Sequence[int],
    *,
    granularity: str,
    channel_axis: int | Sequence[int] | None,
    group_size: int | None,
    contraction_axis: int,
    path: str = "x",
) -> Layout:
    """The static :class:`Layout` of a leaf of ``shape``.

    * ``tensor``: one scale.
    * ``channel``: one scale per index of ``channel_axis`` (an int or a tuple of axes kept).
    * ``group``: one scale per group of ``group_size`` consecutive entries along
      ``contraction_axis`` (and per index of ``channel_axis`` unless it is None); every other
      axis is reduced.

    Leaves of rank < 2 always get one scale (biases, norms, scalars).

    Raises:
      ValueError: naming ``path`` if an axis is out of range, the group axis is a channel axis,
        or ``group_size`` does not divide the contraction axis.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    all_axes = tuple(range(ndim))
    if ndim < 2 or granularity == "tensor":
        return Layout(shape, shape, all_axes)
    keep = (
        ()
        if channel_axis is None
        else _norm_axes(channel_axis, ndim, what="channel_axis", path=path)
    )
    if granularity == "channel":
        return Layout(shape, shape, tuple(a for a in all_axes if a not in keep))
    (c,) = _norm_axes(contraction_axis, ndim, what="contraction_axis", path=path)
    if c in keep:
        raise ValueError(
            f"{path}: contraction_axis {contraction_axis} is also a channel axis "
            f"(channel_axis={channel_axis!r}) for shape {shape}"
        )
    n = shape[c]
    if n % group_size:
        raise ValueError(
            f"{path}: group_size={group_size} does not divide the contraction axis "
            f"{contraction_axis} of size {n} (shape {shape}); choose a divisor of {n}"
        )
    grouped = shape[:c] + (n // group_size, group_size) + shape[c + 1 :]
    # Axes of the grouped view: a < c keep index a; c -> group index c, entries c+1; a > c -> a+1.
    kept = {a if a < c else a + 1 for a in keep} | {c}
    return Layout(shape, grouped, tuple(a for a in range(ndim + 1) if a not in kept))
