"""Symmetric fake quantization with a clipped straight-through gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def qmax(bits: int) -> int:
    """Largest integer level of a symmetric ``bits``-bit grid (1 bit: sign, level 1)."""
    return max(2 ** (bits - 1) - 1, 1)


def check_bits(bits: int, *, where: str = "bits") -> None:
    """Raises a ValueError unless ``bits`` is an int in 1..8."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"{where} must be an integer in 1..8, got {bits!r}")


def absmax_scale(x: jax.Array, bits: int, *, channel_axis: int | None = -1) -> jax.Array:
    """Per-channel (or per-tensor if ``channel_axis`` is None) symmetric min-max scale.

    The scale keeps the rank of ``x`` (size-1 reduced axes) so it broadcasts. An all-zero
    channel gets scale 1 (no division by zero; it quantizes to zero anyway).
    For 1 bit the scale is the mean absolute value (sign quantization, XNOR-Net).
    """
    x = jax.lax.stop_gradient(x).astype(jnp.float32)
    if x.ndim == 0 or channel_axis is None:
        axes = tuple(range(x.ndim))
    else:
        ax = channel_axis % x.ndim
        axes = tuple(a for a in range(x.ndim) if a != ax)
    if bits == 1:
        s = jnp.mean(jnp.abs(x), axis=axes, keepdims=True)
    else:
        s = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / qmax(bits)
    return jnp.where(s > 0, s, jnp.ones_like(s))


@jax.custom_vjp
def _fq_clipped(x: jax.Array, scale: jax.Array, qmax_: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round(x / scale), -qmax_, qmax_) * scale


def _fq_fwd(x, scale, qmax_):
    q = jnp.round(x / scale)
    # "Inside the range" is decided on the rounded integer, not on x / scale: in float32,
    # absmax / (absmax / qmax) can come out slightly above qmax.
    inside = jnp.abs(q) <= qmax_
    return jnp.clip(q, -qmax_, qmax_) * scale, (inside, scale, qmax_)


def _fq_bwd(res, g):
    inside, scale, qmax_ = res
    # Exactly 1 inside the range and 0 outside; the scale is not trained here.
    return jnp.where(inside, g, jnp.zeros_like(g)), jnp.zeros_like(scale), jnp.zeros_like(qmax_)


_fq_clipped.defvjp(_fq_fwd, _fq_bwd)


def fake_quant_symmetric(x: jax.Array, scale: jax.Array, bits: int) -> jax.Array:
    """Quantize-dequantize ``x`` on a symmetric grid with a clipped straight-through gradient.

    Forward: ``clip(round(x / scale), -qmax, qmax) * scale`` (1 bit: ``sign(x) * scale``).
    Backward: 1 where the rounded level is inside ``[-qmax, qmax]``, 0 outside.
    The computation runs in float32 and is cast back to ``x.dtype``.

    Example:
      >>> import jax.numpy as jnp
      >>> fake_quant_symmetric(jnp.array([0.26, -1.0]), jnp.array(0.5), 8).tolist()
      [0.5, -1.0]
    """
    xf = x.astype(jnp.float32)
    scale = jax.lax.stop_gradient(scale).astype(jnp.float32)
    if bits == 1:
        # sign with a scale; gradient passes straight through where |x| <= scale.
        q = jnp.where(xf >= 0, 1.0, -1.0)
        inside = jnp.abs(xf) <= scale
        out = xf + jax.lax.stop_gradient(q * scale - xf)
        out = jnp.where(inside, out, jax.lax.stop_gradient(out))
        return out.astype(x.dtype)
    return _fq_clipped(xf, scale, jnp.asarray(qmax(bits), jnp.float32)).astype(x.dtype)
