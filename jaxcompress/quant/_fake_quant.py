"""Fake quantization (quantize-dequantize) with straight-through and LSQ gradients.

Every kernel here works in float32 on the *grouped view* of a leaf (see ``_grid.Layout``) with
a scale (and zero point) that broadcasts against it, and is a ``jax.custom_vjp`` so that the
backward pass is exactly the estimator documented below (and cheap: nothing but ``x`` and the
quantization parameters is saved for it).

Straight-through estimators (``ste``):

* ``"clipped"``: the gradient w.r.t. ``x`` is 1 where the *rounded* level lies inside the grid
  and 0 outside. Deciding on the rounded integer (``qmin <= round(x / scale) + zp <= qmax``,
  computed as ``x * (1 / scale)``, see :func:`grid_levels`),
  not on ``x / scale``, matters: in float32 ``absmax / (absmax / 127)`` can come out slightly
  above 127, and the largest weight of a channel would wrongly get a zero gradient. For the
  sign grid ``{-s, +s}`` (level spacing ``2s``) that is ``|x| <= 2s``; for the ternary grid
  ``{-a, 0, a}`` it is ``|x| <= 1.5a``.
* ``"identity"``: the gradient is 1 everywhere (Bengio et al. 2013).

Learned step size (LSQ, Esser et al. 2019): the gradient w.r.t. the scale ``s`` is, with
``v = x / s`` and the zero point ``z`` held fixed,
``qmin - z`` if ``v + z <= qmin``, ``qmax - z`` if ``v + z >= qmax``, else ``round(v) - v``
(for a symmetric grid: ``-Qn``, ``Qp``, ``round(v) - v``, eq. 3 of the paper), summed over the
entries sharing the scale and multiplied by the gradient scale ``g = 1 / sqrt(N * Qp)`` with
``N`` the number of entries sharing the scale and ``Qp = qmax`` (section 2.2 of the paper).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress.quant import _grid

# ----------------------------------------------------------------------------------------
# Forward helpers (also used by export, so training forward and export round identically).


def grid_levels(x: jax.Array, scale: jax.Array, zp: jax.Array | None) -> jax.Array:
    """Unclipped integer levels ``round(x * (1 / scale)) + zp`` (float32).

    The reciprocal is taken once per scale (per channel / group), so the per-entry work is a
    multiply, not a division. Training forward, export and the integer matmul all round
    through this one function, so they agree on every level.
    """
    q = jnp.round(x * (1.0 / scale))
    return q if zp is None else q + zp


def grid_dequant(q: jax.Array, scale: jax.Array, zp: jax.Array | None) -> jax.Array:
    return (q if zp is None else q - zp) * scale


def sign_levels(x: jax.Array) -> jax.Array:
    """Sign levels ``{-1, +1}`` (0 maps to +1)."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def ternary_levels(x: jax.Array, threshold: jax.Array) -> jax.Array:
    """Ternary levels ``{-1, 0, +1}``: ``sign(x)`` where ``|x| > threshold``."""
    return jnp.where(jnp.abs(x) > threshold, jnp.sign(x), 0.0).astype(x.dtype)


def _sum_to(t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sums ``t`` over the axes that ``shape`` broadcasts (the inverse of broadcasting)."""
    if t.shape == shape:
        return t
    if len(shape) == 0:
        return jnp.sum(t)
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and t.shape[a] != 1)
    return jnp.sum(t, axis=axes, keepdims=True)


def _zeros_or_none(a):
    return None if a is None else jnp.zeros_like(a)


# ----------------------------------------------------------------------------------------
# Integer grid, fixed scale.


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def fq_grid(x, scale, zp, qmin, qmax, ste: str):
    """``(clip(round(x/s) + z, qmin, qmax) - z) * s`` with a straight-through gradient."""
    return grid_dequant(jnp.clip(grid_levels(x, scale, zp), qmin, qmax), scale, zp)


def _fq_grid_fwd(x, scale, zp, qmin, qmax, ste):
    q = grid_levels(x, scale, zp)
    out = grid_dequant(jnp.clip(q, qmin, qmax), scale, zp)
    # The clipped STE's mask comes from the same rounded levels as the forward (a bool
    # residual; XLA may re-derive it inside the backward's fusions instead of storing it).
    inside = None if ste == "identity" else (q >= qmin) & (q <= qmax)
    return out, (inside, scale, zp, qmin, qmax)


def ste_dx(ste, x, scale, zp, qmin, qmax, g):
    """The straight-through gradient of :func:`fq_grid` w.r.t. ``x``, given the upstream ``g``."""
    if ste == "identity":
        return g
    q = grid_levels(x, scale, zp)
    return jnp.where((q >= qmin) & (q <= qmax), g, jnp.zeros_like(g))


def _fq_grid_bwd(ste, res, g):
    inside, scale, zp, qmin, qmax = res
    dx = g if inside is None else jnp.where(inside, g, jnp.zeros_like(g))
    return dx, jnp.zeros_like(scale), _zeros_or_none(zp), jnp.zeros_like(qmin), jnp.zeros_like(qmax)


fq_grid.defvjp(_fq_grid_fwd, _fq_grid_bwd)


# ----------------------------------------------------------------------------------------
# Narrow symmetric integer grid [-qmax, qmax], fixed scale (the default QAT grid).


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fq_symmetric(x, scale, qmax, ste: str):
    """:func:`fq_grid` on the narrow grid ``[-qmax, qmax]`` (``qmax`` odd: ``2**(b-1) - 1``).

    Same forward and same gradients as ``fq_grid(x, scale, None, -qmax, qmax, ste)``; only
    the clipped STE's mask is cheaper. With ``v = x * (1 / scale)`` (as in
    :func:`grid_levels`) and an odd ``qmax``, ``round-half-even(v)`` lies in
    ``[-qmax, qmax]`` exactly when ``|v| < qmax + 0.5`` (a tie ``qmax + 0.5`` rounds to the
    even ``qmax + 1``; NaN and infinities compare False, as their levels do). XLA re-derives
    the mask from ``x`` inside every consumer of the gradient (with adam: the first- and
    second-moment updates), so one compare instead of a rounding and two compares there
    is paid twice per weight per step.
    """
    return grid_dequant(jnp.clip(grid_levels(x, scale, None), -qmax, qmax), scale, None)


def _fq_sym_fwd(x, scale, qmax, ste):
    return fq_symmetric(x, scale, qmax, ste), (None if ste == "identity" else x, scale, qmax)


def _fq_sym_bwd(ste, res, g):
    x, scale, qmax = res
    if ste == "identity":
        dx = g
    else:
        inside = jnp.abs(x * (1.0 / scale)) < qmax + 0.5
        dx = jnp.where(inside, g, jnp.zeros_like(g))
    return dx, jnp.zeros_like(scale), jnp.zeros_like(qmax)


fq_symmetric.defvjp(_fq_sym_fwd, _fq_sym_bwd)


# ----------------------------------------------------------------------------------------
# Integer grid, learned scale (LSQ).


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def fq_grid_lsq(x, scale, zp, qmin, qmax, ste: str):
    """As :func:`fq_grid`, with the LSQ gradient w.r.t. ``scale`` (see the module docstring)."""
    return grid_dequant(jnp.clip(grid_levels(x, scale, zp), qmin, qmax), scale, zp)


def _fq_lsq_fwd(x, scale, zp, qmin, qmax, ste):
    return fq_grid_lsq(x, scale, zp, qmin, qmax, ste), (x, scale, zp, qmin, qmax)


def _fq_lsq_bwd(ste, res, g):
    x, scale, zp, qmin, qmax = res
    dx = ste_dx(ste, x, scale, zp, qmin, qmax, g)
    v = x * (1.0 / scale)
    z = 0.0 if zp is None else zp
    vz = v + z
    ds = jnp.where(vz <= qmin, qmin - z, jnp.where(vz >= qmax, qmax - z, jnp.round(v) - v))
    n = x.size // max(scale.size, 1)
    gscale = lax.rsqrt(n * qmax)
    ds = _sum_to(g * ds, scale.shape) * gscale
    return dx, ds, _zeros_or_none(zp), jnp.zeros_like(qmin), jnp.zeros_like(qmax)


fq_grid_lsq.defvjp(_fq_lsq_fwd, _fq_lsq_bwd)


# ----------------------------------------------------------------------------------------
# Sign grid {-s, +s} (1-bit symmetric, binary / XNOR).


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fq_sign(x, scale, ste: str, learn: bool):
    """``sign(x) * s`` (0 maps to +s); clipped STE passes where ``|x| <= 2s``."""
    return sign_levels(x) * scale


def _fq_sign_fwd(x, scale, ste, learn):
    return fq_sign(x, scale, ste, learn), (x, scale)


def _fq_sign_bwd(ste, learn, res, g):
    x, scale = res
    dx = g if ste == "identity" else jnp.where(jnp.abs(x) <= 2 * scale, g, jnp.zeros_like(g))
    if learn:
        n = x.size // max(scale.size, 1)
        ds = _sum_to(g * sign_levels(x), scale.shape) * (1.0 / math.sqrt(n))
    else:
        ds = jnp.zeros_like(scale)
    return dx, ds


fq_sign.defvjp(_fq_sign_fwd, _fq_sign_bwd)


# ----------------------------------------------------------------------------------------
# Ternary grid {-a, 0, +a} with a threshold (TWN).


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def fq_ternary(x, scale, threshold, ste: str):
    """``a * sign(x) * [|x| > threshold]``; clipped STE passes where ``|x| <= 1.5a``."""
    return ternary_levels(x, threshold) * scale


def _fq_ternary_fwd(x, scale, threshold, ste):
    return fq_ternary(x, scale, threshold, ste), (x, scale, threshold)


def _fq_ternary_bwd(ste, res, g):
    x, scale, threshold = res
    dx = g if ste == "identity" else jnp.where(jnp.abs(x) <= 1.5 * scale, g, jnp.zeros_like(g))
    return dx, jnp.zeros_like(scale), jnp.zeros_like(threshold)


fq_ternary.defvjp(_fq_ternary_fwd, _fq_ternary_bwd)


# ----------------------------------------------------------------------------------------
# Calibration-free scales (min-max), used by the functional API and as defaults.


def finite_or(s: jax.Array, fallback: jax.typing.ArrayLike) -> jax.Array:
    """Per-scale values that are non-finite replaced by ``fallback`` (cheap: scale-shaped)."""
    return jnp.where(jnp.isfinite(s), s, fallback)


def finite_or_zero(x: jax.Array) -> jax.Array:
    """Non-finite entries replaced by 0, so one bad value cannot poison a scale."""
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _divide_by_exact_one(s: jax.Array) -> jax.Array:
    return s / (1.0 + 0.0 * s)


def materialize(s: jax.Array) -> jax.Array:
    """``s`` bit for bit, computed once on CPU rather than again for every weight that uses it.

    XLA:CPU fuses the cheap elementwise ops that produce a broadcast operand (a scale's
    mantissa rounding and zero check) into each consumer, so a ``(1, out)`` scale chain runs
    once per *weight* inside the fake-quant fusion (12-15 ops per entry instead of 5). A
    float division is an "expensive" op that XLA does not duplicate into a consumer that
    reuses its elements, so ending the chain with one makes XLA compute the scale in its own
    scale-sized fusion, which the fake-quant fusion then reads. ``s / (1 + 0 * s)`` is ``s``
    exactly for finite ``s`` (``0 * s = 0`` and ``x / 1 = x`` in IEEE arithmetic), and XLA
    does not fold a float ``0 * s`` (it is NaN for an infinite ``s``) nor divide by a
    divisor that is not a constant. Measured on the benchmark MLP (2-core CPU): about 1.5% of
    the int8 per-channel train step and 1% of int4 per-group (``benchmarks/quant_overhead``).
    Other backends fuse differently: there it is the identity
    (``lax.platform_dependent``, decided at lowering).

    Example:
      >>> import jax.numpy as jnp
      >>> s = jnp.array([0.3, 2e-38, 3e38], jnp.float32)
      >>> bool((materialize(s) == s).all())
      True
    """
    return lax.platform_dependent(s, cpu=_divide_by_exact_one, default=lambda a: a)


_TINY = float(jnp.finfo(jnp.float32).tiny)  # smallest normal float32


def usable_scale(s: jax.Array) -> jax.Array:
    """:func:`safe_scale` without :func:`materialize` (to build on before materializing)."""
    return jnp.where(jnp.isfinite(s) & (s >= _TINY), s, jnp.ones_like(s))


def safe_scale(s: jax.Array) -> jax.Array:
    """Scales that are non-finite, 0 or below the smallest normal float32 become 1.

    All-zero channels get scale 1 (no division by zero); so do channels so small that their
    scale would be subnormal: XLA:CPU flushes subnormals to zero, and ``1 / s`` would
    overflow anyway. Such a channel quantizes to zeros. The result goes through
    :func:`materialize`: computed once per scale.

    Example:
      >>> import jax.numpy as jnp
      >>> safe_scale(jnp.array([0.5, 0.0, jnp.inf, 1e-40])).tolist()
      [0.5, 1.0, 1.0, 1.0]
    """
    return materialize(usable_scale(s))


def round_scale_mantissa(s: jax.Array, drop: int) -> jax.Array:
    """``s`` (float32) rounded to ``24 - drop`` significant bits, ``drop >= 1``.

    Round half up on the bit pattern; a non-finite ``s`` stays non-finite (or becomes -0 for
    a NaN payload that carries over), which :func:`safe_scale` then replaces.

    Example:
      >>> import jax.numpy as jnp
      >>> float(round_scale_mantissa(jnp.float32(1.0 + 2**-20), 7))  # 17 bits: 1 + 2**-20 -> 1
      1.0
    """
    u = lax.bitcast_convert_type(s.astype(jnp.float32), jnp.uint32)
    half = jnp.uint32(1 << (drop - 1))
    keep = jnp.uint32((0xFFFFFFFF >> drop) << drop)
    return lax.bitcast_convert_type((u + half) & keep, jnp.float32)


def symmetric_scale(absmax: jax.Array, qmax: int) -> jax.Array:
    """The symmetric min-max scale ``absmax / qmax``, in a form export can read back exactly.

    The quotient is rounded to ``24 - k`` significant bits, ``k = max(2, bit_length(qmax))``
    (int8: 17 bits, int4: 21; a relative change below ``2**-(24 - k)``, far inside the half
    level that rounding to the grid tolerates, so the largest weight still maps to
    ``qmax``). Then ``qmax * s`` is exact in float32: a fake-quantized float32 slice's
    largest magnitude is exactly ``qmax * s``, and the scale computed again from the
    quantized values is this same ``s``, bit for bit, whatever the rounding of the division
    (XLA's float32 division is not always correctly rounded; the coarser rounding absorbs
    it). So export can recover the training scales from the view. Zero results become 1
    (no division by zero); so does a non-finite ``absmax``.

    Example:
      >>> import jax.numpy as jnp
      >>> s = symmetric_scale(jnp.array([0.3, 0.0]), 127)
      >>> bool(symmetric_scale(s * 127.0, 127)[0] == s[0]), float(s[1])
      (True, 1.0)
    """
    drop = max(2, int(qmax).bit_length())
    return safe_scale(round_scale_mantissa(absmax / float(qmax), drop))


def absmax_scale(x: jax.Array, bits: int, *, channel_axis: int | None = -1) -> jax.Array:
    """Per-channel (or per-tensor if ``channel_axis`` is None) symmetric min-max scale.

    The scale keeps the rank of ``x`` (size-1 reduced axes) so it broadcasts. An all-zero
    channel gets scale 1 (no division by zero; it quantizes to zero anyway). For 1 bit the
    scale is the mean absolute value (sign quantization, XNOR-Net; 0 for an all-zero channel).

    Args:
      x: the array.
      bits: bit width 1..8.
      channel_axis: the axis with one scale per entry, or None for one scale.

    Returns:
      float32 scale of the rank of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> absmax_scale(jnp.array([[1.0, -254.0]]), 8, channel_axis=None).tolist()
      [[2.0]]

    References:
      Jacob et al. 2018; Rastegari et al. 2016 (XNOR-Net).
    """
    _grid.check_bits(bits)
    x = lax.stop_gradient(x).astype(jnp.float32)
    if x.ndim == 0 or channel_axis is None:
        axes = tuple(range(x.ndim))
    else:
        ax = channel_axis % x.ndim
        axes = tuple(a for a in range(x.ndim) if a != ax)
    if bits == 1:
        return finite_or(jnp.mean(jnp.abs(x), axis=axes, keepdims=True), 0.0)  # no division
    return safe_scale(jnp.max(jnp.abs(x), axis=axes, keepdims=True) / (2 ** (bits - 1) - 1))


def minmax_params(
    xg: jax.Array,
    axes: tuple[int, ...],
    *,
    kind: str,
    symmetric: bool,
    qmin: jax.typing.ArrayLike,
    qmax: jax.typing.ArrayLike,
    recoverable: int | None = None,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Min-max ``(scale, zero_point, threshold)`` of a grouped view (float32, keepdims).

    Symmetric grids: ``scale = max|x| / qmax`` (with ``recoverable``, the static ``qmax``:
    :func:`symmetric_scale`'s, which export can read back from the quantized view).
    Asymmetric: the range ``[min(x, 0), max(x, 0)]`` maps onto ``[qmin, qmax]`` with an
    integer zero point. Sign grid: ``scale = mean|x|`` (the least-squares optimum for
    ``sign(x) * s``; 0 for an all-zero slice). Ternary (TWN): ``threshold = 0.7 mean|x|`` and
    ``scale = mean(|x| : |x| > threshold)``.
    """
    # No elementwise clean-up of non-finite entries here (it would cost a full extra pass
    # over the weights on every calibration): a non-finite entry makes its own slice's
    # reduction non-finite, and that slice falls back to a finite scale (1, or 0 for sign /
    # ternary) instead; other slices are unaffected.
    xg = lax.stop_gradient(xg).astype(jnp.float32)
    ax = jnp.abs(xg)
    if kind == "sign":
        # no division by the scale here: an all-zero slice keeps scale 0 and stays zero
        return finite_or(jnp.mean(ax, axis=axes, keepdims=True), 0.0), None, None
    if kind == "ternary":
        thr = finite_or(0.7 * jnp.mean(ax, axis=axes, keepdims=True), 0.0)
        big = ax > thr
        cnt = jnp.sum(big, axis=axes, keepdims=True).astype(jnp.float32)
        tot = jnp.sum(jnp.where(big, ax, 0.0), axis=axes, keepdims=True)
        return safe_scale(finite_or(tot, 0.0) / jnp.maximum(cnt, 1.0)), None, thr
    if symmetric:
        m = jnp.max(ax, axis=axes, keepdims=True)
        if recoverable:
            return symmetric_scale(m, recoverable), None, None
        return safe_scale(m / qmax), None, None
    lo = jnp.minimum(jnp.min(xg, axis=axes, keepdims=True), 0.0)
    hi = jnp.maximum(jnp.max(xg, axis=axes, keepdims=True), 0.0)
    return range_params(lo, hi, qmin=qmin, qmax=qmax)


# At a zero-point tie the grid is narrowed by this relative amount (see range_params).
TIE_SHRINK = 2.0**-20
# |zp - (qmin - lo / scale)| above 0.5 - TIE_MARGIN counts as a tie. float32 noise in the
# level of a range end is about 2**-22 of that level's magnitude (<= 255): far below it, and
# far below the 2**-20 relative move of TIE_SHRINK.
TIE_MARGIN = 2.0**-10


def range_params(
    lo: jax.Array, hi: jax.Array, *, qmin: jax.typing.ArrayLike, qmax: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array, None]:
    """Asymmetric ``(scale, zero_point, None)`` mapping ``[lo, hi]`` (containing 0) to the grid.

    ``scale = (hi - lo) / (qmax - qmin)`` and ``zero_point = round(qmin - lo / scale)``. The
    range's ends then sit at levels ``qmin + e`` and ``qmax + e`` with
    ``e = zero_point - (qmin - lo / scale)`` in ``[-1/2, 1/2]``: both round (or clip) onto the
    grid's ends, so the fake-quantized tensor spans ``[qmin, qmax]`` and calibrating it again
    gives the same grid (idempotence). At a tie (``|e| = 1/2``, e.g. ``lo = -hi`` with an odd
    level count) the end inside the grid would sit on a half level, and float32 noise in
    ``x * (1 / scale)`` decides whether it rounds onto the grid's end or one level inward
    (which makes the output's range narrower, and quantizing it again recalibrates). There the
    scale is narrowed by ``TIE_SHRINK`` (``2**-20``, relative), which moves that end a
    fraction of a level outward, past the noise: it rounds onto the grid's end. The other end
    is clipped, with an error of at most ``1/2 + (qmax - qmin) * 2**-20`` steps instead of
    ``1/2`` (1.2e-4 of a step more at 8 bits).

    Example:
      >>> import jax.numpy as jnp
      >>> s, z, _ = range_params(jnp.float32(-1.0), jnp.float32(3.0), qmin=0.0, qmax=15.0)
      >>> round(float(s), 6), float(z)
      (0.266667, 4.0)
    """
    lo = jnp.minimum(finite_or(lo, 0.0), 0.0)
    hi = jnp.maximum(finite_or(hi, 0.0), 0.0)
    scale = safe_scale((hi - lo) / (qmax - qmin))
    zf = qmin - lo / scale
    zp = jnp.clip(jnp.round(zf), qmin, qmax)
    tie = jnp.abs(zp - zf) > 0.5 - TIE_MARGIN
    scale = jnp.where(tie, scale * (1.0 - TIE_SHRINK), scale)
    return scale, zp, None


# ----------------------------------------------------------------------------------------
# The functional API.


def _left_pad(a: jax.Array, ndim: int) -> jax.Array:
    """Numpy broadcasting made explicit (the tests forbid implicit rank promotion)."""
    if 0 < a.ndim < ndim:
        return a.reshape((1,) * (ndim - a.ndim) + a.shape)
    return a


def check_finite(x: jax.typing.ArrayLike, *, path: str) -> None:
    """Raises a ValueError naming ``path`` if a concrete ``x`` holds NaN or Inf (not if traced)."""
    if isinstance(x, jax.core.Tracer):
        return
    bad = ~jnp.isfinite(jnp.asarray(x, jnp.float32))
    n = int(jnp.sum(bad))
    if n:
        raise ValueError(
            f"{path}: {n} non-finite value(s) (NaN or Inf) in a tensor to quantize; "
            "quantization scales would be meaningless"
        )


def fake_quant(
    x: jax.typing.ArrayLike,
    *,
    bits: int | str = 8,
    symmetric: bool = True,
    axis: int | Sequence[int] | None = None,
    group_size: int | None = None,
    group_axis: int = -2,
    scale: jax.typing.ArrayLike | None = None,
    zero_point: jax.typing.ArrayLike | None = None,
    threshold: jax.typing.ArrayLike | None = None,
    narrow_range: bool = True,
    ste: str = "clipped",
) -> jax.Array:
    """Quantize-dequantize ``x`` with a straight-through gradient.

    ``q = clip(round(x / scale) + zero_point, qmin, qmax)`` and the result is
    ``(q - zero_point) * scale``, computed in float32 (the division as a multiply by the
    per-scale reciprocal) and cast back to ``x.dtype`` (bf16 stays bf16). Without ``scale``
    the range is calibrated by min-max (symmetric: ``max|x|``; asymmetric:
    ``[min(x, 0), max(x, 0)]``) at the requested granularity, behind ``stop_gradient``.

    Args:
      x: the array.
      bits: 1..8, ``"binary"`` (``sign(x) * mean|x|``, XNOR-Net) or ``"ternary"``
        (``{-a, 0, a}`` with threshold ``0.7 mean|x|``, TWN). 1 bit symmetric is the sign grid.
      symmetric: symmetric grid (no zero point) or asymmetric with an integer zero point.
      axis: per-channel granularity: the axis (or axes) that keep one scale per index;
        None for one scale per tensor.
      group_size: per-group granularity: one scale per ``group_size`` consecutive entries along
        ``group_axis`` (and per index of ``axis``).
      group_axis: the contraction axis that groups run along (``-2``: the input axis of a
        Flax ``Dense`` kernel ``[in, out]``).
      scale: explicit scale, broadcastable to ``x`` (or to the grouped view with groups).
      zero_point: explicit integer zero point (asymmetric only), shaped like ``scale``.
      threshold: explicit ternary threshold, shaped like ``scale``.
      narrow_range: symmetric grids use ``[-(2**(b-1) - 1), 2**(b-1) - 1]`` (True) or the
        full ``[-2**(b-1), 2**(b-1) - 1]``.
      ste: ``"clipped"`` (0 outside the range, decided on the rounded level) or ``"identity"``.

    Returns:
      An array of the shape and dtype of ``x``.

    Raises:
      ValueError: for bad ``bits``/``ste``, a ``group_size`` that does not divide the group
        axis, a zero point with a symmetric grid, or NaN/Inf in a concrete ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> fake_quant(jnp.array([0.26, -1.0]), bits=8, scale=jnp.array(0.5)).tolist()
      [0.5, -1.0]
      >>> fake_quant(jnp.array([0.0, 1.0, 4.0]), bits=2, symmetric=False).tolist()
      [0.0, 1.3333333730697632, 4.0]

    References:
      Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference"; Bengio et al. 2013 (straight-through estimator);
      Rastegari et al. 2016 (XNOR-Net); Li et al. 2016 (Ternary Weight Networks).
    """
    kind, nbits = _grid.parse_bits(bits)
    if ste not in _grid.STES:
        raise ValueError(f"fake_quant: ste must be one of {_grid.STES}, got {ste!r}")
    if kind != "grid" and not symmetric:
        raise ValueError(f"fake_quant: bits={bits!r} needs symmetric=True")
    if kind == "grid" and nbits == 1 and symmetric:
        kind = "sign"
    if symmetric and zero_point is not None:
        raise ValueError("fake_quant: zero_point given with symmetric=True; use symmetric=False")
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
    ):
        raise ValueError(f"fake_quant: group_size must be a positive integer, got {group_size!r}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"fake_quant: x has dtype {x.dtype}, expected floating point")
    check_finite(x, path="fake_quant: x")
    if group_size is not None:
        gran = "group"
    else:
        gran = "tensor" if axis is None else "channel"
    lay = _grid.layout(
        x.shape,
        granularity=gran,
        channel_axis=axis,
        group_size=group_size,
        contraction_axis=group_axis,
        path="fake_quant: x",
    )
    qmin, qmax = _grid.qrange(nbits, symmetric=symmetric, narrow_range=narrow_range)
    qmin_a, qmax_a = jnp.float32(qmin), jnp.float32(qmax)
    xg = lay.to_grouped(x.astype(jnp.float32))
    if scale is None:
        s, zp, thr = minmax_params(
            xg, lay.reduce_axes, kind=kind, symmetric=symmetric, qmin=qmin_a, qmax=qmax_a
        )
    else:
        s = _left_pad(jnp.asarray(scale, jnp.float32), xg.ndim)
        zp = (
            None if zero_point is None else _left_pad(jnp.asarray(zero_point, jnp.float32), xg.ndim)
        )
        if not symmetric and zp is None:
            zp = jnp.zeros_like(s)
        thr = None
    s = lax.stop_gradient(s)
    if threshold is not None:
        thr = _left_pad(jnp.asarray(threshold, jnp.float32), xg.ndim)
    if kind == "sign":
        out = fq_sign(xg, s, ste, False)
    elif kind == "ternary":
        if thr is None:
            thr = 0.5 * s
        out = fq_ternary(xg, s, lax.stop_gradient(thr), ste)
    else:
        zp = None if zp is None else lax.stop_gradient(zp)
        if symmetric and narrow_range and zp is None:
            out = fq_symmetric(xg, s, qmax_a, ste)
        else:
            out = fq_grid(xg, s, zp, qmin_a, qmax_a, ste)
    return lay.from_grouped(out).astype(x.dtype)


def fake_quant_symmetric(x: jax.Array, scale: jax.Array, bits: int) -> jax.Array:
    """Quantize-dequantize ``x`` on a symmetric (narrow) grid with a clipped STE.

    Shorthand for ``fake_quant(x, bits=bits, scale=scale)``.

    Args:
      x: the array.
      scale: the scale, broadcastable to ``x``.
      bits: bit width 1..8 (1 bit: ``sign(x) * scale``).

    Returns:
      An array of the shape and dtype of ``x``.

    Example:
      >>> import jax.numpy as jnp
      >>> fake_quant_symmetric(jnp.array([0.26, -1.0]), jnp.array(0.5), 8).tolist()
      [0.5, -1.0]

    References:
      Jacob et al. 2018; Bengio et al. 2013.
    """
    _grid.check_bits(bits)
    return fake_quant(x, bits=bits, scale=scale)
