"""Activation quantization numerics and the real integer matmul (int8 x int8 -> int32).

Activations are quantized symmetrically (narrow grid, so ``int8`` holds them), either
*dynamically* with one scale per token (``max|x|`` over the feature axis, every call) or
*statically* with a calibrated scale. :func:`qdot` runs ``lax.dot_general`` on the int8
activations and int8 weights with int32 accumulation and rescales once per output: the same
numbers as fake-quantized activations times fake-quantized weights, to float rounding.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.quant import _fake_quant, _grid
from jaxcompress.quant._export import QArray


def _act_qmax(bits: int) -> float:
    _grid.check_bits(bits, where="act_bits")
    if bits < 2:
        raise ValueError(f"act_bits must be in 2..8, got {bits!r}")
    return float(2 ** (bits - 1) - 1)


def activation_scale(
    x: jax.Array,
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Symmetric activation scale: dynamic ``max|x| / qmax`` per token, or ``absmax / qmax``.

    Args:
      x: activations ``[..., features]``.
      bits: 2..8.
      per_token: one scale per token (all axes but the last kept); else one per tensor.
      absmax: a static (calibrated) range; overrides the dynamic one.

    Returns:
      float32 scale of the rank of ``x`` (size-1 feature axis), behind ``stop_gradient``.

    Example:
      >>> import jax.numpy as jnp
      >>> activation_scale(jnp.array([[1.0, -127.0], [0.5, 2.54]])).tolist()
      [[1.0], [0.019999999552965164]]
    """
    return lhs_scale(x, (x.ndim - 1,) if x.ndim else (), bits, per_token=per_token, absmax=absmax)


def fake_quant_activation(
    x: jax.Array,
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    ste: str = "clipped",
) -> jax.Array:
    """Quantize-dequantize activations (see :func:`activation_scale`) with an STE.

    Args:
      x: activations ``[..., features]``.
      bits: 2..8.
      per_token: dynamic per-token scales (else one per tensor).
      absmax: static calibrated range (values beyond it are clipped; their gradient is 0
        with the clipped STE).
      ste: ``"clipped"`` or ``"identity"``.

    Returns:
      Array of the shape and dtype of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> fake_quant_activation(jnp.array([[0.3, -1.0]]), 2).tolist()
      [[0.0, -1.0]]

    References:
      Jacob et al. 2018; Dettmers et al. 2022 (LLM.int8(), per-token scales).
    """
    if ste not in _grid.STES:
        raise ValueError(f"fake_quant_activation: ste must be one of {_grid.STES}, got {ste!r}")
    s = activation_scale(x, bits, per_token=per_token, absmax=absmax)
    return _fake_quant_lhs(x, s, _act_qmax(bits), _ste_for(ste, absmax))


def _ste_for(ste: str, absmax) -> str:
    # A dynamic scale comes from max|x| of the very tensor it quantizes, so no entry can fall
    # outside the range: the clipped STE's mask is identically 1 and the identity kernel is
    # exact (and skips the mask in the backward pass).
    return "identity" if absmax is None else ste


def _fake_quant_lhs(x, s, qmax: float, ste: str):
    """``x`` fake-quantized on ``[-qmax, qmax]`` with scale ``s`` (float32 math, own dtype)."""
    out = _fake_quant.fq_grid(
        x.astype(jnp.float32), s, None, jnp.float32(-qmax), jnp.float32(qmax), ste
    )
    return out.astype(x.dtype)


RESIDUALS = ("original", "quantized")


def check_ste_residuals(ste: str, residuals: str, where: str) -> None:
    """ValueError naming ``where`` for an unknown ``ste`` or ``residuals`` choice."""
    if ste not in _grid.STES:
        raise ValueError(f"{where}: ste must be one of {_grid.STES}, got {ste!r}")
    if residuals not in RESIDUALS:
        raise ValueError(f"{where}: residuals must be one of {RESIDUALS}, got {residuals!r}")


def fake_quant_lhs_dot(
    x: jax.Array,
    k: jax.Array,
    dimension_numbers: lax.DotDimensionNumbers,
    *,
    bits: int = 8,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    ste: str = "clipped",
    residuals: str = "original",
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
    **dot_kwargs: Any,
) -> jax.Array:
    """``lax.dot_general(fake_quant_activation(x), k, ...)`` with a choice of backward operands.

    The forward is the same for both ``residuals``. The backward differs in the operand the
    gradient of ``k`` is formed with:

    * ``"quantized"``: plain autodiff through the fake-quantized input,
      ``dk = fake_quant(x)^T g``; the quantized activations are kept for the backward.
    * ``"original"``: ``dk = x^T g`` from the original activations (the straight-through
      estimator applied to the whole quantized matmul, as Qwix's and AQT's QAT do by
      default). The fake-quantized activations die right after the forward matmul, which
      saves a pass and their memory: the faster choice, and the default.

    ``dx = g k^T`` (masked outside a static range with the clipped STE) in both cases.

    Args:
      x: activations, the left operand (quantized with one scale per token, reduced over
        its contracting axes, or per tensor, or from a static ``absmax``).
      k: the right operand (weights), used as it is.
      dimension_numbers: of ``lax.dot_general``.
      bits, per_token, absmax, ste: as :func:`fake_quant_activation`.
      residuals: ``"original"`` or ``"quantized"``.
      precision, preferred_element_type, **dot_kwargs: passed to ``lax.dot_general``.

    Returns:
      The ``dot_general`` result.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x, k = jnp.array([[0.3, -1.0]]), jnp.eye(2)
      >>> dn = (((1,), (0,)), ((), ()))
      >>> fake_quant_lhs_dot(x, k, dn, bits=2).tolist()
      [[0.0, -1.0]]
      >>> jax.grad(lambda k: fake_quant_lhs_dot(x, k, dn, bits=2).sum())(k).tolist()
      [[0.30000001192092896, 0.30000001192092896], [-1.0, -1.0]]

    References:
      Bengio et al. 2013 (straight-through estimator); Jacob et al. 2018.
    """
    check_ste_residuals(ste, residuals, "fake_quant_lhs_dot")
    qmax = _act_qmax(bits)
    s = lhs_scale(x, dimension_numbers[0][0], bits, per_token=per_token, absmax=absmax)
    spec = _DotSpec(
        _freeze(dimension_numbers),
        precision,
        preferred_element_type,
        tuple(sorted(dot_kwargs.items())),
        _ste_for(ste, absmax),
        qmax,
    )
    if residuals == "quantized":
        return spec.dot(_fake_quant_lhs(x, s, qmax, spec.ste), k)
    return _fq_lhs_dot(spec, x, k, s)


def lhs_scale(
    x: jax.Array,
    contract: Sequence[int],
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """The activation scale of a ``dot_general``'s left operand (rank of ``x``, size-1 axes).

    Dynamic: ``max|x| / qmax`` reduced over the ``contract`` axes (one scale per token) or
    over all axes; static: ``absmax / qmax``. Zero or non-finite scales become 1.

    Example:
      >>> import jax.numpy as jnp
      >>> lhs_scale(jnp.array([[1.0, -127.0], [0.5, 2.54]]), (1,)).tolist()
      [[1.0], [0.019999999552965164]]
    """
    qmax = _act_qmax(bits)
    if absmax is not None:
        s = jnp.asarray(absmax, jnp.float32) / qmax
        return _fake_quant.safe_scale(jnp.reshape(s, (1,) * x.ndim) if s.ndim == 0 else s)
    contract = tuple(contract)
    if any(
        isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -x.ndim <= a < x.ndim
        for a in contract
    ):
        raise ValueError(
            f"lhs_scale: contract must hold axes of the rank-{x.ndim} operand, got {contract!r}"
        )
    a = jnp.abs(lax.stop_gradient(x).astype(jnp.float32))  # non-finite rows: scale 1
    axes = contract if per_token else tuple(range(x.ndim))
    return _fake_quant.safe_scale(jnp.max(a, axis=axes, keepdims=True) / qmax)


def _freeze(t):
    return tuple(_freeze(v) for v in t) if isinstance(t, (tuple, list)) else t


class _DotSpec(NamedTuple):
    """The static part of :func:`fake_quant_lhs_dot` (hashable: a custom_vjp nondiff arg)."""

    dimension_numbers: Any
    precision: Any
    preferred_element_type: Any
    kwargs: tuple
    ste: str
    qmax: float

    def dot(self, a, b):
        return lax.dot_general(
            a,
            b,
            self.dimension_numbers,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
            **dict(self.kwargs),
        )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fq_lhs_dot(spec, x, k, s):
    return spec.dot(_fake_quant_lhs(x, s, spec.qmax, "identity"), k)


def _fq_lhs_dot_fwd(spec, x, k, s):
    # The residuals are the original operands: the quantized activations are not kept.
    return _fq_lhs_dot(spec, x, k, s), (x, k, s)


def _fq_lhs_dot_bwd(spec, res, g):
    x, k, s = res
    _, vjp = jax.vjp(spec.dot, x, k)
    dx, dk = vjp(g)
    lo, hi = jnp.float32(-spec.qmax), jnp.float32(spec.qmax)
    dx = _fake_quant.ste_dx(spec.ste, x.astype(jnp.float32), s, None, lo, hi, dx)
    return dx, dk, jnp.zeros_like(s)


_fq_lhs_dot.defvjp(_fq_lhs_dot_fwd, _fq_lhs_dot_bwd)


def quantize_activation(
    x: jax.Array,
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Activations as ``(int8 levels, float32 scale)`` (see :func:`activation_scale`).

    Example:
      >>> import jax.numpy as jnp
      >>> q, s = quantize_activation(jnp.array([[0.5, -1.0]]))
      >>> q.dtype, q.tolist()
      (dtype('int8'), [[64, -127]])
    """
    qmax = _act_qmax(bits)
    s = activation_scale(x, bits, per_token=per_token, absmax=absmax)
    q = jnp.clip(_fake_quant.grid_levels(x.astype(jnp.float32), s, None), -qmax, qmax)
    q = q.astype(jnp.int8)
    return q, s


def int8_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: lax.DotDimensionNumbers,
) -> jax.Array:
    """``lax.dot_general`` of two int8 arrays with exact int32 accumulation.

    Example:
      >>> import jax.numpy as jnp
      >>> a = jnp.full((1, 300), 127, jnp.int8)
      >>> int(int8_dot_general(a, a.T, (((1,), (0,)), ((), ())))[0, 0])
      4838700
    """
    if lhs.dtype != jnp.int8 or rhs.dtype != jnp.int8:
        raise TypeError(f"int8_dot_general: operands must be int8, got {lhs.dtype} and {rhs.dtype}")
    return lax.dot_general(lhs, rhs, dimension_numbers, preferred_element_type=jnp.int32)


def qdot(
    x: jax.Array,
    w: QArray,
    *,
    act_bits: int = 8,
    per_token: bool = True,
    act_absmax: jax.typing.ArrayLike | None = None,
    out_dtype: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """``x @ w`` on integers: int8 activations x int8 weights, int32 accumulation.

    The activations are quantized (dynamic per token, or static with ``act_absmax``), the
    weight's integer levels are used as they are (unpacked below 8 bits), and the int32
    accumulator is rescaled by ``activation scale * weight scale``. Per-group weights
    accumulate each group in int32 and sum the rescaled groups.

    Args:
      x: activations ``[..., in]``.
      w: a symmetric :class:`QArray` kernel ``[in, out]`` (per tensor, per output channel,
        or per group along ``in``; integer, binary or ternary grid).
      act_bits: activation bit width, 2..8.
      per_token: dynamic per-token activation scales (else one per tensor).
      act_absmax: a static calibrated activation range (scalar).
      out_dtype: result dtype (default: ``x.dtype``).

    Returns:
      ``[..., out]``.

    Raises:
      ValueError: if ``w`` is not a 2-D symmetric QArray whose input size matches ``x``, or
        its scale layout is not per tensor / channel / group along ``in``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=8)
      >>> params = {"w": jax.random.normal(jax.random.key(0), (16, 4))}
      >>> qw = jc.quant.quantize(params, comp.init(params), comp)["w"]
      >>> qdot(jnp.ones((2, 16)), qw).shape
      (2, 4)

    References:
      Jacob et al. 2018; Dettmers et al. 2022, "LLM.int8()".
    """
    if not isinstance(w, QArray):
        raise ValueError(f"qdot: w must be a jc.quant.QArray, got {type(w).__name__}")
    if len(w.shape) != 2 or w.zero_point is not None:
        raise ValueError(
            f"qdot: needs a 2-D symmetric QArray kernel [in, out]; got shape {w.shape} "
            f"({'asymmetric' if w.zero_point is not None else 'symmetric'}); dequantize instead"
        )
    n_in, n_out = w.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"qdot: x has {x.shape[-1]} features, the kernel expects {n_in}")
    out_dtype = x.dtype if out_dtype is None else out_dtype
    qx, sx = quantize_activation(x, act_bits, per_token=per_token, absmax=act_absmax)
    lead = x.shape[:-1]
    qx = qx.reshape(-1, n_in)
    sx = sx.reshape(-1, 1) if sx.size > 1 else sx.reshape(1, 1)
    qw = w.levels().astype(jnp.int8)
    if w.grouped_shape == w.shape and w.scale.shape[0] == 1:
        acc = int8_dot_general(qx, qw, (((1,), (0,)), ((), ())))
        sw = w.scale.reshape(1, -1) if w.scale.size > 1 else w.scale.reshape(1, 1)
        y = acc.astype(jnp.float32) * sx * sw
    elif len(w.grouped_shape) == 3 and w.grouped_shape[2] == n_out:
        ng, g, _ = w.grouped_shape
        acc = int8_dot_general(
            qx.reshape(-1, ng, g).transpose(1, 0, 2),
            qw.reshape(ng, g, n_out),
            (((2,), (1,)), ((0,), (0,))),
        )  # [groups, tokens, out]
        sw = w.scale.reshape(ng, 1, -1)
        y = jnp.sum(acc.astype(jnp.float32) * sw, axis=0) * sx
    else:
        raise ValueError(f"qdot: unsupported scale layout {w.grouped_shape} for kernel {w.shape}")
    return y.reshape(*lead, n_out).astype(out_dtype)
