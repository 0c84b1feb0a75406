"""Quantization-aware training: fake-quantized weights with straight-through gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.quant import _fake_quant


class QATState(NamedTuple):
    """State of :func:`qat`."""

    count: jax.Array  # int32[]: number of update calls
    bits: Any  # per-leaf int32[] bit width (None for leaves not owned)


def qat(bits: int = 8, *, channel_axis: int | None = -1) -> Compressor:
    """Symmetric fake quantization of every leaf, one scale per output channel.

    The scale of a kernel is ``max |w| / (2**(bits-1) - 1)`` over every axis but
    ``channel_axis`` (the output channel, the last axis of a Flax kernel); leaves of rank < 2
    get one scale. The forward is ``clip(round(w / scale)) * scale``; the gradient is the
    clipped straight-through estimator (1 inside the range, 0 outside).

    Args:
      bits: bit width, 1..8 (1 bit: ``sign(w) * mean|w|`` per channel).
      channel_axis: axis with one scale per entry; ``None`` for one scale per tensor.

    Returns:
      A Compressor with a :class:`QATState`.

    Raises:
      ValueError: if ``bits`` is not in 1..8 or a leaf is not floating point (naming its path).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=4)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (16, 8))}
      >>> view = comp.apply(params, comp.init(params))
      >>> int(jnp.unique(view["kernel"][:, 0]).size) <= 15
      True

    References:
      Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference"; Bengio et al. 2013 (straight-through estimator).
    """
    _fake_quant.check_bits(bits)

    def init_fn(params):
        paths_lib.check_float_leaves(params, method=f"qat(bits={bits})")
        return QATState(
            count=jnp.zeros([], jnp.int32),
            bits=jax.tree.map(lambda _: jnp.asarray(bits, jnp.int32), params),
        )

    def quantize_leaf(w):
        axis = channel_axis if w.ndim >= 2 else None
        scale = _fake_quant.absmax_scale(w, bits, channel_axis=axis)
        return _fake_quant.fake_quant_symmetric(w, scale, bits)

    def apply_fn(params, state):
        del state
        return jax.tree.map(quantize_leaf, params)

    def update_fn(params, state, grads=None):
        del grads
        return params, state._replace(count=state.count + 1)

    return Compressor(init_fn, apply_fn, update_fn)
