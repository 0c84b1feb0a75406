"""Attention transfer (Zagoruyko & Komodakis): match normalised spatial attention maps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcompress.distill import _checks


def _check_p(p: float, fn: str) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p >= 1:
        raise ValueError(f"{fn}: p must be a number >= 1, got {p!r}")


def _spatial_layout(shape: tuple[int, ...], channel_axis: int, fn: str, name: str) -> int:
    if len(shape) < 3:
        raise ValueError(
            f"{fn}: {name} has shape {shape}; attention transfer needs spatial axes, i.e. "
            "[batch, *spatial, channels] (e.g. [batch, height, width, channels] or "
            "[batch, length, channels]); for [batch, features] use jc.distill.hint_loss"
        )
    ax = channel_axis % len(shape)
    if ax == 0:
        raise ValueError(f"{fn}: channel_axis={channel_axis} points at the batch axis 0")
    return ax


def attention_map(
    features: jax.typing.ArrayLike, *, p: float = 2.0, channel_axis: int = -1
) -> jax.Array:
    """Spatial attention map of an activation tensor, L2-normalised per example.

    ``Q = mean_c |A_c|**p`` over the channel axis, flattened over the spatial axes and
    divided by its L2 norm floored at ``1e-12`` (an all-zero map stays zero, with finite
    gradients).

    Args:
      features: ``[batch, *spatial, channels]`` activations (or with the channels on
        ``channel_axis``).
      p: the power (>= 1; the paper's default is 2).
      channel_axis: the channel axis (default last, as in Flax convolutions).

    Returns:
      ``[batch, prod(spatial)]`` normalised attention maps (float32 or wider).

    Raises:
      ValueError: if ``features`` has no spatial axis, ``channel_axis`` is the batch axis, or
        ``p < 1``.
      TypeError: on non-float features.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> q = jc.distill.attention_map(jnp.ones((2, 4, 4, 8)))
      >>> q.shape, float(jnp.sum(q[0] ** 2))
      ((2, 16), 1.0)

    References:
      Zagoruyko & Komodakis 2017, "Paying More Attention to Attention: Improving the
      Performance of Convolutional Neural Networks via Attention Transfer",
      https://arxiv.org/abs/1612.03928
    """
    fn = "attention_map"
    _check_p(p, fn)
    a = _checks.as_float_array(features, fn=fn, name="features")
    ax = _spatial_layout(a.shape, channel_axis, fn, "features")
    a = a.astype(_checks.compute_dtype(a))
    q = jnp.mean(jnp.abs(a) ** p if p != 2 else jnp.square(a), axis=ax)
    q = q.reshape(q.shape[0], -1)
    sq = jnp.sum(jnp.square(q), axis=-1, keepdims=True)
    # As F.normalize(eps=1e-12): the norm is floored at 1e-12.
    return q * jax.lax.rsqrt(jnp.maximum(sq, jnp.asarray(1e-24, q.dtype)))


def attention_transfer_loss(
    student_features: jax.typing.ArrayLike,
    teacher_features: jax.typing.ArrayLike,
    *,
    p: float = 2.0,
    channel_axis: int = -1,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Attention-transfer loss per example: mean squared gap of normalised attention maps.

    ``mean_j (Q_s[j] - Q_t[j])**2`` with ``Q`` from :func:`attention_map`, as in the
    authors' reference implementation; the paper weights it by ``beta = 1000`` (use that as
    the weight of this term). Student and teacher may differ in channel count, not in batch
    or spatial size. The teacher receives no gradient.

    Args:
      student_features: ``[batch, *spatial, c_s]`` student activations.
      teacher_features: ``[batch, *spatial, c_t]`` teacher activations.
      p: the power of the attention map (>= 1).
      channel_axis: the channel axis of both.
      where: optional boolean ``[batch]`` mask of the examples that count.

    Returns:
      ``[batch]`` losses.

    Raises:
      ValueError: if the batch or spatial sizes differ (naming both shapes), features have
        no spatial axis, or ``where`` has the wrong shape.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> s = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
      >>> t = jax.random.normal(jax.random.key(1), (2, 8, 8, 64))
      >>> jc.distill.attention_transfer_loss(s, t).shape
      (2,)

    References:
      Zagoruyko & Komodakis 2017, "Paying More Attention to Attention: Improving the
      Performance of Convolutional Neural Networks via Attention Transfer",
      https://arxiv.org/abs/1612.03928
    """
    fn = "attention_transfer_loss"
    _check_p(p, fn)
    s = _checks.as_float_array(student_features, fn=fn, name="student_features")
    t = _checks.as_float_array(teacher_features, fn=fn, name="teacher_features")
    s_ax = _spatial_layout(s.shape, channel_axis, fn, "student_features")
    t_ax = _spatial_layout(t.shape, channel_axis, fn, "teacher_features")
    s_rest = s.shape[:s_ax] + s.shape[s_ax + 1 :]
    t_rest = t.shape[:t_ax] + t.shape[t_ax + 1 :]
    if s.ndim != t.ndim or s_rest != t_rest:
        raise ValueError(
            f"{fn}: student features {s.shape} and teacher features {t.shape} must agree in "
            f"batch and spatial sizes (only the channel axis {channel_axis} may differ); "
            "resize or pool one of them first"
        )
    qs = attention_map(s, p=p, channel_axis=channel_axis)
    qt = attention_map(jax.lax.stop_gradient(t), p=p, channel_axis=channel_axis)
    qt = qt.astype(qs.dtype)
    loss = jnp.mean(jnp.square(qs - qt), axis=-1)
    if where is not None:
        w = jnp.asarray(where)
        if w.dtype != jnp.bool_ or w.shape != loss.shape:
            raise ValueError(
                f"{fn}: where must be a boolean mask of shape {loss.shape}, got {w.dtype} {w.shape}"
            )
        loss = jnp.where(w, loss, jnp.zeros_like(loss))
    return loss
