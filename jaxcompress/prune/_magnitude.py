"""Magnitude pruning, layer-wise, one-shot at a given step."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.prune._threshold import topk_mask


class MagnitudeState(NamedTuple):
    """State of :func:`magnitude`."""

    count: jax.Array  # int32[]: number of update calls
    mask: Any  # per-leaf bool[*leaf.shape] keep-mask (None for leaves not owned)


def check_sparsity(sparsity: float, *, where: str = "sparsity") -> None:
    """Raises a ValueError unless ``0 <= sparsity < 1``."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"{where} must be a number in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{where} must be in [0, 1), got {sparsity!r}")


def magnitude(sparsity: float, *, at_step: int = 0) -> Compressor:
    """Layer-wise magnitude pruning, one-shot when the update count reaches ``at_step``.

    Each leaf keeps exactly ``size - floor(sparsity * size)`` entries of largest ``|w|``
    (ties: lower index first), found without sorting. With ``at_step=0`` the mask is computed
    at ``init``; otherwise at the ``update`` call that makes ``count == at_step``. Until then
    the mask keeps everything. ``update`` also zeroes pruned params, so they stay zero through
    any optimizer.

    Args:
      sparsity: fraction of each leaf to remove, in ``[0, 1)``.
      at_step: the update count at which to prune (``>= 0``).

    Returns:
      A Compressor with a :class:`MagnitudeState`.

    Raises:
      ValueError: if ``sparsity`` is outside ``[0, 1)``, ``at_step < 0``, or a leaf is not
        floating point (naming its path).

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5)
      >>> params = {"w": jnp.array([1.0, -4.0, 2.0, 0.5])}
      >>> comp.apply(params, comp.init(params))["w"].tolist()
      [0.0, -4.0, 2.0, 0.0]

    References:
      Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks".
    """
    check_sparsity(sparsity)
    if isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 0:
        raise ValueError(f"magnitude: at_step must be an integer >= 0, got {at_step!r}")

    def leaf_mask(w):
        keep = w.size - math.floor(sparsity * w.size)
        return topk_mask(jnp.abs(w), keep)

    def init_fn(params):
        paths_lib.check_float_leaves(params, method=f"prune.magnitude({sparsity})")
        if at_step == 0:
            mask = jax.tree.map(leaf_mask, params)
        else:
            mask = jax.tree.map(lambda w: jnp.ones(w.shape, bool), params)
        return MagnitudeState(count=jnp.zeros([], jnp.int32), mask=mask)

    def apply_fn(params, state):
        return jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros_like(w)), params, state.mask)

    def update_fn(params, state, grads=None):
        del grads
        count = state.count + 1
        mask = lax.cond(
            count == at_step,
            lambda: jax.tree.map(leaf_mask, params),
            lambda: state.mask,
        )
        params = apply_fn(params, MagnitudeState(count, mask))
        return params, MagnitudeState(count=count, mask=mask)

    return Compressor(init_fn, apply_fn, update_fn)
