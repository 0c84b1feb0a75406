"""Convolutions with fake-quantized input activations (the conv counterpart of the lhs dot).

:func:`fake_quant_lhs_conv` is ``lax.conv_general_dilated(fake_quant(x), k, ...)`` for
quantization-aware training: the input activations are fake-quantized on a symmetric grid
with one scale per *token* (per batch element and spatial position, reduced over the input
feature axis that ``dimension_numbers`` names), per tensor, or from a static calibrated range,
and the backward is a straight-through estimator with the same choice of operands as
:func:`jaxcompress.quant.fake_quant_lhs_dot` (the kernel gradient from the original or the
fake-quantized activations). ``jc.flax.quantized_conv`` hands it to ``nnx.Conv`` as its
``conv_general_dilated``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.quant import _intmm


class _ConvSpec(NamedTuple):
    """The static part of :func:`fake_quant_lhs_conv` (hashable: a custom_vjp nondiff arg).

    ``dot`` is the bilinear op the shared straight-through kernel of
    :func:`jaxcompress.quant.fake_quant_lhs_dot` differentiates.
    """

    window_strides: tuple
    padding: Any
    lhs_dilation: Any
    rhs_dilation: Any
    dimension_numbers: lax.ConvDimensionNumbers
    feature_group_count: int
    batch_group_count: int
    precision: Any
    preferred_element_type: Any
    kwargs: tuple
    ste: str
    qmax: float

    def dot(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(
            a,
            b,
            self.window_strides,
            self.padding,
            lhs_dilation=self.lhs_dilation,
            rhs_dilation=self.rhs_dilation,
            dimension_numbers=self.dimension_numbers,
            feature_group_count=self.feature_group_count,
            batch_group_count=self.batch_group_count,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
            **dict(self.kwargs),
        )


def _tuple_or_none(v: Any) -> Any:
    return None if v is None else tuple(int(a) for a in v)


def _padding(p: Any) -> Any:
    if isinstance(p, str):
        return p
    return tuple(tuple(int(a) for a in pair) for pair in p)


def fake_quant_lhs_conv(
    x: jax.Array,
    k: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
    *,
    bits: int = 8,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    ste: str = "clipped",
    residuals: str = "original",
    **conv_kwargs: Any,
) -> jax.Array:
    """``lax.conv_general_dilated(fake_quant_activation(x), k, ...)`` with an STE backward.

    The positional and keyword arguments up to ``preferred_element_type`` (and any further
    ``conv_kwargs``, e.g. ``out_sharding``) are ``lax.conv_general_dilated``'s. ``x`` (the
    input activations) is fake-quantized on ``[-qmax, qmax]``, ``qmax = 2**(bits-1) - 1``:
    with one scale ``max|x| / qmax`` per token (per batch element and spatial position,
    reduced over the input feature axis of ``dimension_numbers``: the last axis for NHWC,
    axis 1 for NCHW), per tensor (``per_token=False``), or ``absmax / qmax`` from a static
    calibrated range (clipping beyond it). ``k`` (the kernel) is used as it is: quantize it
    with ``jc.quant.qat``.

    The backward is the straight-through estimator of
    :func:`jaxcompress.quant.fake_quant_lhs_dot`: ``dx`` is the convolution's input gradient
    (zero where a static range clips ``x``, with ``ste="clipped"``); ``dk`` is formed from
    the original activations (``residuals="original"``, the default: the quantized ones are
    not kept for the backward) or from the fake-quantized ones (``"quantized"``: plain
    autodiff of the fake-quantized forward).

    Args:
      x: input activations (float).
      k: kernel (float).
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as
        ``lax.conv_general_dilated``.
      bits: activation bit width, 2..8.
      per_token: dynamic scales per token (else one per tensor).
      absmax: a static calibrated activation range (scalar).
      ste: ``"clipped"`` or ``"identity"`` (only matters with ``absmax``).
      residuals: ``"original"`` or ``"quantized"``.
      **conv_kwargs: further keyword arguments of ``lax.conv_general_dilated``.

    Returns:
      The convolution's result.

    Raises:
      ValueError: for bad ``bits``, ``ste``, ``residuals`` or a non-scalar ``absmax``.
      TypeError: for a non-float ``x`` or ``k``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[[0.3, -1.0], [0.5, 0.2]]])  # [batch, width, features] (NWC)
      >>> k = jnp.ones((1, 2, 1))  # [width, in, out] (WIO)
      >>> def conv(x, k):
      ...     return fake_quant_lhs_conv(x, k, (1,), "VALID",
      ...                                dimension_numbers=("NWC", "WIO", "NWC"), bits=2)
      >>> conv(x, k).ravel().tolist()  # tokens [0, -1.0] and [0.5, 0] after quantization
      [-1.0, 0.5]
      >>> [round(v, 4) for v in jax.grad(lambda k: conv(x, k).sum())(k).ravel().tolist()]
      [0.8, -0.8]

    References:
      Jacob et al. 2018; Bengio et al. 2013 (straight-through estimator); Dettmers et al.
      2022 (per-token scales).
    """
    _intmm.check_ste_residuals(ste, residuals, "fake_quant_lhs_conv")
    qmax = _intmm._act_qmax(bits)
    x, k = jnp.asarray(x), jnp.asarray(k)
    for name, a in (("x", x), ("k", k)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"fake_quant_lhs_conv: {name} must be a float array, got {a.dtype}")
    if absmax is not None:
        absmax = jnp.asarray(absmax, jnp.float32)
        if absmax.ndim:
            raise ValueError(
                f"fake_quant_lhs_conv: absmax must be a scalar, got shape {absmax.shape}"
            )
    dn = lax.conv_dimension_numbers(x.shape, k.shape, dimension_numbers)
    feature_axis = dn.lhs_spec[1]
    s = _intmm.lhs_scale(x, (feature_axis,), bits, per_token=per_token, absmax=absmax)
    spec = _ConvSpec(
        tuple(int(a) for a in window_strides),
        _padding(padding),
        _tuple_or_none(lhs_dilation),
        _tuple_or_none(rhs_dilation),
        dn,
        int(feature_group_count),
        int(batch_group_count),
        _intmm._freeze(precision),
        preferred_element_type,
        tuple(sorted(conv_kwargs.items())),
        _intmm._ste_for(ste, absmax),
        qmax,
    )
    if residuals == "quantized":
        return spec.dot(_intmm._fake_quant_lhs(x, s, qmax, spec.ste), k)
    return _intmm._fq_lhs_dot(spec, x, k, s)
