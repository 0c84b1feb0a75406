"""w8a8 training on integers: an int8 x int8 -> int32 forward with straight-through gradients.

:func:`int8_matmul` is ``lax.dot_general(lhs, rhs)`` for quantization-aware training where
the forward matmul really runs on integers (as Qwix's quantized training does): the
activations are quantized like :func:`~jaxcompress.quant.fake_quant_activation` (one scale
per token, or a static range), the weights to int8 per output channel on exactly the grid
of ``jc.quant.qat(bits=8)`` (narrow range ``[-127, 127]``, live min-max scales from
``_fake_quant.symmetric_scale``), and the int32 accumulator is rescaled once per output.
On CPUs with int8 matrix units (AMX, VNNI) this forward is faster than the float one.

The backward is the straight-through estimator applied to the whole quantized matmul:
``d lhs = g rhs^T`` (masked outside a static range with the clipped STE) and
``d rhs = lhs^T g`` from the original activations (``residuals="original"``) or from the
dequantized int8 ones (``"quantized"``; only the int8 levels are kept for the backward).

The activations' scales skip ``_fake_quant.materialize``: XLA computes ``1 / scale`` in one
small fusion and recomputes the scale (three ops) inside the rescaling fusion, which is
cheaper than a second small fusion (as Qwix's quantized training lowers). The weights' scales,
whose mantissa rounding costs more, are materialized (measured with
``benchmarks/quant_overhead.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.quant import _fake_quant, _intmm

WEIGHT_QMAX = 127  # int8 narrow range, the grid of qat(bits=8)
_DROP = max(2, WEIGHT_QMAX.bit_length())  # symmetric_scale's mantissa rounding for 127
MAX_TERMS = (2**31 - 1) // (127 * 127)  # contraction length the int32 accumulator holds exactly


class _Spec(NamedTuple):
    """The static part of :func:`int8_matmul` (hashable: a custom_vjp nondiff argument)."""

    dimension_numbers: Any
    qmax: float  # activation grid [-qmax, qmax]
    ste: str  # "identity" for dynamic ranges (nothing is clipped)
    residuals: str
    precision: Any
    out_dtype: Any
    lhs_dtype: Any

    def float_dot(self, a, b):
        return lax.dot_general(a, b, self.dimension_numbers, precision=self.precision)


def _free_axes(ndim: int, contract: Sequence[int]) -> list[int]:
    return [i for i in range(ndim) if i not in contract]


def weight_levels(rhs: jax.Array, contract: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """``rhs`` as ``(int8 levels, float32 scale)``: int8 per output channel, qat(bits=8)'s grid.

    The scale is ``symmetric_scale(max|rhs| over the contracting axes, 127)``, so a kernel
    already fake-quantized by ``jc.quant.qat(bits=8)`` gets its own levels back exactly.
    A channel with a non-finite weight gets an infinite scale: its levels are 0 and its
    outputs NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> q, s = weight_levels(jnp.array([[0.5, -2.0], [-1.0, 1.0]]), (0,))
      >>> q.tolist()
      [[64, -127], [-127, 64]]
      >>> q2, s2 = weight_levels(q * s, (0,))  # a kernel on the grid keeps its levels
      >>> bool((q2 == q).all() & (s2 == s).all())
      True
    """
    w = lax.stop_gradient(rhs).astype(jnp.float32)
    absmax = jnp.max(jnp.abs(w), axis=tuple(contract), keepdims=True)
    # symmetric_scale's rounding of absmax / 127 (the same expression, so the same result
    # eagerly and under jit), with every NaN pattern mapped to +inf first (a NaN payload
    # could otherwise carry into a finite pattern)
    s = absmax / float(WEIGHT_QMAX)
    bits_ = jnp.minimum(lax.bitcast_convert_type(s, jnp.uint32), jnp.uint32(0x7F800000))
    s = _fake_quant.round_scale_mantissa(lax.bitcast_convert_type(bits_, jnp.float32), _DROP)
    # Materialized (unlike the activations' scale): the rescaling fusions would otherwise
    # redo the mantissa rounding for every output entry (measured: ~0.7% of the MLP step).
    scale = _fake_quant.materialize(_finite_or_inf(s))
    # No clip: with the channel's own min-max scale |w / scale| <= 127 (1 + 2**-16) rounds
    # to at most 127.
    return _fake_quant.grid_levels(w, scale, None).astype(jnp.int8), scale


def _finite_or_inf(s: jax.Array) -> jax.Array:
    """Scales below the smallest normal float32 become 1; an infinite or NaN one stays.

    A non-finite scale needs no select of its own: ``1 / s`` is 0 (or NaN), so its token's
    or channel's levels are 0 (XLA converts NaN to integer 0), and the rescaled outputs are
    ``0 * s``: NaN. (An int8 x int8 product only mixes a row of the activations with a
    column of the weights.) Three ops per entry where XLA recomputes the scale inside the
    rescaling fusion, as few as Qwix's.
    """
    return jnp.where(s < _fake_quant._TINY, jnp.ones_like(s), s)


def _act_levels(lhs, contract, bits, per_token, absmax):
    """The activations' int8 levels and scale (infinite for a token with a NaN / Inf)."""
    qmax = _intmm._act_qmax(bits)
    x = lax.stop_gradient(lhs).astype(jnp.float32)
    # max|x| per token: the dynamic scale's source, and (also for static ranges) how a
    # token with a NaN / Inf entry is found: clipping would otherwise hide it.
    axes = tuple(contract) if per_token or absmax is not None else tuple(range(x.ndim))
    amax = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    if absmax is None:
        scale = _finite_or_inf(amax / qmax)
        # no clip: the scale comes from these very values, |x / scale| <= qmax (1 + 3 eps)
        q = _fake_quant.grid_levels(x, scale, None)
    else:
        static = jnp.reshape(_fake_quant.usable_scale(absmax / qmax), (1,) * x.ndim)
        scale = jnp.where(jnp.isfinite(amax), static, jnp.inf)
        q = jnp.clip(_fake_quant.grid_levels(x, scale, None), -qmax, qmax)
    return q.astype(jnp.int8), scale


def _out_shape_scales(spec: _Spec, lhs_shape, rhs_shape, sx, sw):
    """The activation / weight scales reshaped to broadcast against the dot's output."""
    (lc, rc), _ = spec.dimension_numbers
    lf, rf = _free_axes(len(lhs_shape), lc), _free_axes(len(rhs_shape), rc)
    sx_o = jnp.reshape(sx, [sx.shape[i] for i in lf] + [1] * len(rf))
    sw_o = jnp.reshape(sw, [1] * len(lf) + [sw.shape[i] for i in rf])
    return sx_o, sw_o


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _int8_matmul(spec, bits, per_token, lhs, rhs, absmax):
    return _forward(spec, bits, per_token, lhs, rhs, absmax)[0]


def _forward(spec, bits, per_token, lhs, rhs, absmax):
    (lc, rc), _ = spec.dimension_numbers
    qx, sx = _act_levels(lhs, lc, bits, per_token, absmax)
    qw, sw = weight_levels(rhs, rc)
    acc = _intmm.int8_dot_general(qx, qw, spec.dimension_numbers)
    sx_o, sw_o = _out_shape_scales(spec, lhs.shape, rhs.shape, sx, sw)
    y = (acc.astype(jnp.float32) * sx_o * sw_o).astype(spec.out_dtype)
    return y, qx, sx


def _int8_matmul_fwd(spec, bits, per_token, lhs, rhs, absmax):
    y, qx, sx = _forward(spec, bits, per_token, lhs, rhs, absmax)
    kept = qx if spec.residuals == "quantized" else lhs
    return y, (kept, rhs, sx, absmax, lhs if spec.ste != "identity" else None)


def _int8_matmul_bwd(spec, bits, per_token, res, g):
    kept, rhs, sx, absmax, lhs = res
    if spec.residuals == "quantized":
        a = (kept.astype(jnp.float32) * sx).astype(spec.lhs_dtype)  # dequantized activations
    else:
        a = kept
    _, vjp = jax.vjp(spec.float_dot, a, rhs)
    dlhs, drhs = vjp(g.astype(jnp.result_type(a.dtype, rhs.dtype)))
    if spec.ste != "identity":
        lo, hi = jnp.float32(-spec.qmax), jnp.float32(spec.qmax)
        dlhs = _fake_quant.ste_dx(spec.ste, lhs.astype(jnp.float32), sx, None, lo, hi, dlhs)
    d_absmax = None if absmax is None else jnp.zeros_like(absmax)
    return dlhs.astype(spec.lhs_dtype), drhs.astype(rhs.dtype), d_absmax


_int8_matmul.defvjp(_int8_matmul_fwd, _int8_matmul_bwd)


def int8_matmul(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: lax.DotDimensionNumbers | None = None,
    *,
    bits: int = 8,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    ste: str = "clipped",
    residuals: str = "original",
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """``lax.dot_general(lhs, rhs)`` on integers for training: int8 forward, STE backward.

    The forward quantizes ``lhs`` (the activations) to ``bits`` (one scale per token reduced
    over the contracting axes, per tensor, or from a static ``absmax``) and ``rhs`` (the
    weights) to int8 per output channel on ``jc.quant.qat(bits=8)``'s grid, multiplies the
    int8 levels with int32 accumulation (exact) and rescales once: the numbers of
    ``fake_quant_activation(lhs) @ qat8(rhs)`` to float rounding. A kernel already
    fake-quantized by ``qat(bits=8)`` keeps its levels (so a model trained either way exports
    with ``jc.quant.quantize`` to the integers it was trained with). A token or output
    channel with a NaN / Inf entry gives NaN outputs (integers cannot carry them).

    The backward applies the straight-through estimator to the whole quantized matmul:
    ``d lhs = g rhs^T`` (zero where a static range clips ``lhs``, with ``ste="clipped"``),
    ``d rhs = lhs^T g`` with the original activations (``residuals="original"``, the
    default) or the dequantized int8 ones (``"quantized"``, which keeps only int8 levels).

    Args:
      lhs: activations; ``rhs``: weights (float, any float dtype).
      dimension_numbers: of ``lax.dot_general``, without batch dimensions (default:
        ``lhs``'s last axis with ``rhs``'s first).
      bits: activation bit width, 2..8 (the weights are always int8).
      per_token: dynamic per-token activation scales (else one per tensor).
      absmax: a static calibrated activation range (scalar).
      ste: ``"clipped"`` or ``"identity"`` (only matters with ``absmax``).
      residuals: ``"original"`` or ``"quantized"``.
      precision: of the backward's float matmuls.
      preferred_element_type: the result dtype (default: ``lhs`` and ``rhs`` promoted).

    Returns:
      The ``dot_general`` result.

    Raises:
      ValueError: for bad arguments, batch dimensions, contracting axes out of range, or a
        contraction longer than ``MAX_TERMS`` (133,144: the int32 accumulator would overflow).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[0.5, -1.0]])
      >>> w = jnp.array([[1.0, 0.0], [0.0, 2.0]])
      >>> [round(v, 4) for v in int8_matmul(x, w)[0].tolist()]
      [0.5039, -2.0]
      >>> jax.grad(lambda w: int8_matmul(x, w).sum())(w).tolist()
      [[0.5, 0.5], [-1.0, -1.0]]

    References:
      Jacob et al. 2018; Dettmers et al. 2022 (per-token scales); Bengio et al. 2013 (STE).
    """
    _intmm.check_ste_residuals(ste, residuals, "int8_matmul")
    qmax = _intmm._act_qmax(bits)
    if dimension_numbers is None:
        dimension_numbers = (((lhs.ndim - 1,), (0,)), ((), ()))
    (lc, rc), (lb, rb) = dimension_numbers
    if tuple(lb) or tuple(rb):
        raise ValueError(f"int8_matmul: batch dimensions are not supported, got {lb} and {rb}")
    lc, rc = tuple(int(a) for a in lc), tuple(int(a) for a in rc)
    for name, axes, nd in (("lhs", lc, lhs.ndim), ("rhs", rc, rhs.ndim)):
        if not axes or any(not 0 <= a < nd for a in axes):
            raise ValueError(
                f"int8_matmul: {name} contracting axes must lie in 0..{nd - 1}, got {axes}"
            )
    terms = math.prod(lhs.shape[a] for a in lc)
    if terms > MAX_TERMS:
        raise ValueError(
            f"int8_matmul: {terms} contracted terms could overflow the int32 accumulator "
            f"(at most {MAX_TERMS}: 127 * 127 * terms < 2**31)"
        )
    for name, a in (("lhs", lhs), ("rhs", rhs)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"int8_matmul: {name} must be a float array, got {a.dtype}")
    out_dtype = preferred_element_type or jnp.result_type(lhs.dtype, rhs.dtype)
    spec = _Spec(
        ((lc, rc), ((), ())),
        qmax,
        _intmm._ste_for(ste, absmax),
        residuals,
        precision,
        jnp.dtype(out_dtype),
        jnp.dtype(lhs.dtype),
    )
    if absmax is not None:
        absmax = jnp.asarray(absmax, jnp.float32)
        if absmax.ndim:
            raise ValueError(f"int8_matmul: absmax must be a scalar, got shape {absmax.shape}")
    return _int8_matmul(spec, bits, per_token, lhs, rhs, absmax)
