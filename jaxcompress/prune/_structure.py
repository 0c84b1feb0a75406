"""Sparsity structures: N:M groups, h x w blocks, whole channels (output units).

A structure says what the unit of pruning is. Element scores are reduced to one score per
unit (sum of squares for magnitude, i.e. the L2 norm's order; plain sum for the other
criteria), the units are selected like single weights, and the unit mask is expanded back to
the leaf's shape. N:M is local (the top N of every M consecutive entries along an axis), so it
needs no threshold at all.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class NMStructure(NamedTuple):
    """Keep the ``n`` largest of every ``m`` consecutive entries along ``axis``."""

    n: int  # entries kept per group
    m: int  # group size
    axis: int  # grouped axis (-2: the input / contraction axis of a Flax kernel)


class BlockStructure(NamedTuple):
    """Prune ``h x w`` blocks of the last two axes."""

    h: int  # block height (along axis -2)
    w: int  # block width (along axis -1)


class ChannelStructure(NamedTuple):
    """Prune whole units along ``axis`` (output features of a Dense / Conv kernel)."""

    axis: int  # the unit axis (-1: output features of a Flax kernel)
    group_by_parent: bool  # leaves under one parent (kernel + bias) share the unit mask


Structure = NMStructure | BlockStructure | ChannelStructure | None


def _pos_int(x: object, where: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{where} must be an integer >= 1, got {x!r}")
    return x


def nm(n: int, m: int, *, axis: int = -2) -> NMStructure:
    """N:M semi-structured sparsity: the ``n`` largest of every ``m`` consecutive entries.

    Groups run along ``axis``, by default ``-2``: the contraction (input) axis of a Flax
    ``Dense`` kernel ``(in, out)`` or ``Conv`` kernel ``(h, w, in, out)``, the layout sparse
    tensor cores accelerate (2:4). Ties: lower index first. Sparsity is ``1 - n / m``.

    Args:
      n: entries kept per group, ``1 <= n <= m``.
      m: group size.
      axis: the grouped axis; its length must be a multiple of ``m``.

    Returns:
      An :class:`NMStructure` for the ``structure=`` argument of a pruning method.

    Raises:
      ValueError: if ``n > m`` or either is not a positive integer.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(structure=jc.prune.nm(2, 4))
      >>> p = {"kernel": jnp.array([[1.0], [-4.0], [3.0], [2.0]])}
      >>> comp.apply(p, comp.init(p))["kernel"][:, 0].tolist()
      [0.0, -4.0, 3.0, 0.0]

    References:
      Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks" (2:4 on Ampere);
      Zhou et al. 2021, "Learning N:M Fine-grained Structured Sparse Neural Networks From
      Scratch".
    """
    n, m = _pos_int(n, "nm: n"), _pos_int(m, "nm: m")
    if n > m:
        raise ValueError(f"nm: n ({n}) must be <= m ({m})")
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"nm: axis must be an integer, got {axis!r}")
    return NMStructure(n, m, axis)


def block(h: int, w: int) -> BlockStructure:
    """Block sparsity: whole ``h x w`` tiles of the last two axes are kept or removed.

    A block's score is the sum of its entries' scores (sum of squares for magnitude: the
    block's L2 norm order).

    Args:
      h: block size along axis -2 (a kernel's input axis).
      w: block size along axis -1 (its output axis).

    Returns:
      A :class:`BlockStructure`.

    Raises:
      ValueError: if ``h`` or ``w`` is not a positive integer.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5, structure=jc.prune.block(2, 2))
      >>> p = {"kernel": jax.random.normal(jax.random.key(0), (4, 4))}
      >>> int((comp.apply(p, comp.init(p))["kernel"] == 0).sum())
      8

    References:
      Gray, Radford & Kingma 2017, "GPU Kernels for Block-Sparse Weights".
    """
    return BlockStructure(_pos_int(h, "block: h"), _pos_int(w, "block: w"))


def channel(*, axis: int = -1, group_by_parent: bool = True) -> ChannelStructure:
    """Channel / neuron pruning: whole units along ``axis`` by the norm of their weights.

    With ``group_by_parent`` the leaves under one parent (a layer's ``kernel`` and ``bias``,
    when both are routed to the pruner) share one mask per unit and are scored together, so a
    removed unit is entirely zero and :func:`jaxcompress.prune.shrink` can drop it exactly.

    Args:
      axis: the unit axis; ``-1`` is the output features of a Flax kernel and of its bias.
      group_by_parent: score and mask the leaves of one parent together.

    Returns:
      A :class:`ChannelStructure`.

    Raises:
      ValueError: if ``axis`` is not an integer.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5, structure=jc.prune.channel())
      >>> p = {"kernel": jnp.array([[1.0, 5.0, 0.1, 2.0]])}
      >>> comp.apply(p, comp.init(p))["kernel"].tolist()
      [[0.0, 5.0, 0.0, 2.0]]

    References:
      Li et al. 2017, "Pruning Filters for Efficient ConvNets"; Liu et al. 2017, "Learning
      Efficient Convolutional Networks through Network Slimming".
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"channel: axis must be an integer, got {axis!r}")
    return ChannelStructure(axis, bool(group_by_parent))


def check_leaf(structure: Structure, path: str, shape: tuple[int, ...], method: str) -> None:
    """Raises a ValueError naming ``path`` if ``structure`` does not fit a leaf of ``shape``."""
    if structure is None:
        return
    if isinstance(structure, NMStructure):
        ax = structure.axis
        if not -len(shape) <= ax < len(shape):
            raise ValueError(
                f"{method}: N:M axis {ax} is out of range for leaf {path!r} of shape {shape}; "
                "route 1-D leaves (biases) to None in jc.rules"
            )
        if shape[ax] % structure.m:
            raise ValueError(
                f"{method}: leaf {path!r} has {shape[ax]} entries along the N:M axis {ax}, not "
                f"a multiple of m={structure.m}"
            )
    elif isinstance(structure, BlockStructure):
        if len(shape) < 2:
            raise ValueError(
                f"{method}: block pruning needs leaves of rank >= 2, leaf {path!r} has shape "
                f"{shape}; route it to None in jc.rules"
            )
        if shape[-2] % structure.h or shape[-1] % structure.w:
            raise ValueError(
                f"{method}: block {structure.h}x{structure.w} does not divide the last two axes "
                f"{shape[-2:]} of leaf {path!r}"
            )
    elif isinstance(structure, ChannelStructure):
        if not -len(shape) <= structure.axis < len(shape):
            raise ValueError(
                f"{method}: channel axis {structure.axis} is out of range for leaf {path!r} of "
                f"shape {shape}"
            )
    else:
        raise TypeError(
            f"{method}: structure must be jc.prune.nm(...), block(...), channel(...) or None, "
            f"got {structure!r}"
        )


def num_units(structure: Structure, shape: tuple[int, ...]) -> int:
    """Selectable units of a leaf: entries, blocks or channels."""
    if isinstance(structure, BlockStructure):
        return math.prod(shape[:-2]) * (shape[-2] // structure.h) * (shape[-1] // structure.w)
    if isinstance(structure, ChannelStructure):
        return shape[structure.axis]
    return math.prod(shape)


def unit_scores(structure: Structure, scores: jax.Array, aggregate: str) -> jax.Array:
    """Reduces element scores (float32) to one score per unit."""
    if aggregate == "sumsq":
        scores = scores * scores
    if isinstance(structure, BlockStructure):
        *lead, hh, ww = scores.shape
        h, w = structure.h, structure.w
        r = scores.reshape(*lead, hh // h, h, ww // w, w)
        return jnp.sum(r, axis=(-3, -1))
    if isinstance(structure, ChannelStructure):
        ax = structure.axis % scores.ndim
        return jnp.sum(scores, axis=tuple(a for a in range(scores.ndim) if a != ax))
    return scores


def expand(structure: Structure, unit_mask: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Expands a unit mask back to the leaf's shape."""
    if isinstance(structure, BlockStructure):
        *lead, hh, ww = shape
        h, w = structure.h, structure.w
        m = unit_mask.reshape(*lead, hh // h, 1, ww // w, 1)
        return jnp.broadcast_to(m, (*lead, hh // h, h, ww // w, w)).reshape(shape)
    if isinstance(structure, ChannelStructure):
        ax = structure.axis % len(shape)
        bshape = [1] * len(shape)
        bshape[ax] = shape[ax]
        return jnp.broadcast_to(unit_mask.reshape(bshape), shape)
    return unit_mask


def nm_mask(structure: NMStructure, scores: jax.Array) -> jax.Array:
    """Keeps the ``n`` largest scores of every ``m`` consecutive entries along the axis.

    Sort-free: each entry's rank in its group is counted by comparison with the other
    ``m - 1`` entries (ties: lower index first).
    """
    n, m = structure.n, structure.m
    ax = structure.axis % scores.ndim
    shape = scores.shape
    g = scores.reshape(shape[:ax] + (shape[ax] // m, m) + shape[ax + 1 :])
    gax = ax + 1  # the within-group axis
    a = jnp.expand_dims(g, gax + 1)  # entry i along gax, j along gax + 1
    b = jnp.expand_dims(g, gax)
    i = jax.lax.broadcasted_iota(jnp.int32, (m, m), 0)
    j = jax.lax.broadcasted_iota(jnp.int32, (m, m), 1)
    before = (j < i).reshape((1,) * gax + (m, m) + (1,) * (g.ndim - gax - 1))
    # rank of entry i: entries j that beat it (larger, or equal and earlier).
    beats = (b > a) | ((b == a) & before)
    rank = jnp.sum(beats, axis=gax + 1, dtype=jnp.int32)
    return (rank < n).reshape(shape)
