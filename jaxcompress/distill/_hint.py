"""Feature distillation (FitNets hints): MSE, L2 and cosine, with a learned projection."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcompress.distill import _checks

METRICS = ("mse", "l2", "cosine")

Projection = dict[str, jax.Array]  # {"kernel": [in, out], "bias": [out]} (bias optional)


def init_projection(
    key: jax.Array,
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    dtype: Any = jnp.float32,
) -> Projection:
    """Parameters of a linear student→teacher feature projection (a FitNets regressor).

    The projection is a plain pytree ``{"kernel": [in, out], "bias": [out]}`` that the
    caller trains together with the student (differentiate :func:`hint_loss` with respect to
    it and apply an optax optimizer; ``jc.flax.distiller`` does this for you). It acts on the
    last (channel) axis, so on ``[batch, height, width, channels]`` features it is the 1x1
    convolution of FitNets. The kernel is LeCun-uniform initialised (variance ``1 / in``),
    the bias zero.

    Args:
      key: a PRNG key.
      in_features: the student's feature width (last axis).
      out_features: the teacher's feature width.
      use_bias: whether to add a bias.
      dtype: parameter dtype.

    Returns:
      The projection params.

    Raises:
      ValueError: if a width is not a positive integer.

    Example:
      >>> import jax, jaxcompress as jc
      >>> proj = jc.distill.init_projection(jax.random.key(0), 32, 64)
      >>> proj["kernel"].shape, proj["bias"].shape
      ((32, 64), (64,))

    References:
      Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", https://arxiv.org/abs/1412.6550
    """
    for name, v in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"init_projection: {name} must be a positive integer, got {v!r}")
    init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    kernel = init(key, (in_features, out_features), dtype)
    proj = {"kernel": kernel}
    if use_bias:
        proj["bias"] = jnp.zeros((out_features,), dtype)
    return proj


def project(projection: Projection, features: jax.typing.ArrayLike) -> jax.Array:
    """Applies a projection from :func:`init_projection` to the last axis of ``features``.

    Args:
      projection: ``{"kernel": [in, out]}`` with an optional ``"bias": [out]``.
      features: ``[..., in]``.

    Returns:
      ``[..., out]`` features.

    Raises:
      ValueError: if the projection is malformed or its input width differs from the
        features' last axis (naming both).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> proj = jc.distill.init_projection(jax.random.key(0), 4, 2)
      >>> jc.distill.project(proj, jnp.ones((3, 4))).shape
      (3, 2)
    """
    if not isinstance(projection, dict) or "kernel" not in projection:
        raise ValueError(
            "project: projection must be a dict with a 'kernel' [in, out] (and optional "
            f"'bias' [out]) from jc.distill.init_projection, got {type(projection).__name__}"
        )
    x = jnp.asarray(features)
    kernel = jnp.asarray(projection["kernel"])
    if kernel.ndim != 2:
        raise ValueError(f"project: kernel must be [in, out], got shape {kernel.shape}")
    if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"project: features of shape {x.shape} have width {x.shape[-1] if x.ndim else None} "
            f"but the projection kernel is {kernel.shape} (expects width {kernel.shape[0]})"
        )
    y = jnp.matmul(x, kernel)
    bias = projection.get("bias")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(
                f"project: bias has shape {bias.shape}, expected ({kernel.shape[1]},) to match "
                f"the kernel {kernel.shape}"
            )
        y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


def _safe_norm(sq: jax.Array) -> jax.Array:
    """``sqrt(sq)`` with a zero (not NaN) gradient at ``sq == 0``."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, jnp.ones_like(sq))), jnp.zeros_like(sq))


def hint_loss(
    student_features: jax.typing.ArrayLike,
    teacher_features: jax.typing.ArrayLike,
    *,
    projection: Projection | None = None,
    metric: str = "mse",
    axis: int | tuple[int, ...] = -1,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Feature-matching loss between a student and a teacher feature map (FitNets hint).

    The student features are first mapped by ``projection`` (when given) so their width
    matches the teacher's. Then, along ``axis``:

    * ``"mse"``: mean squared difference (FitNets, up to a constant);
    * ``"l2"``: Euclidean distance ``||s - t||_2`` (zero gradient, not NaN, at ``s == t``);
    * ``"cosine"``: cosine distance ``1 - cos(s, t)`` (``optax.losses.cosine_distance``),
      insensitive to the features' scale.

    The teacher features receive no gradient. Computation is in float32 or wider.

    Args:
      student_features: student activations, e.g. ``[batch, d_s]`` or
        ``[batch, h, w, c_s]``.
      teacher_features: teacher activations with the same shape after projection.
      projection: optional :func:`init_projection` params mapping the student's last axis
        to the teacher's width; differentiate the loss with respect to it to train it.
      metric: ``"mse"``, ``"l2"`` or ``"cosine"``.
      axis: axis or axes reduced (the feature axes; default the last).
      where: optional boolean mask shaped like the result (which positions count; the others
        are 0 with no gradient).

    Returns:
      The loss with ``axis`` reduced (e.g. ``[batch]`` for ``[batch, d]`` features).

    Raises:
      ValueError: on an unknown metric, a shape mismatch (naming both shapes, and suggesting
        a projection when only the widths differ), or a ``where`` of the wrong shape.
      TypeError: on non-float features.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> s, t = jnp.ones((8, 32)), jnp.ones((8, 64))
      >>> proj = jc.distill.init_projection(jax.random.key(0), 32, 64)
      >>> jc.distill.hint_loss(s, t, projection=proj).shape
      (8,)

    References:
      Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", https://arxiv.org/abs/1412.6550
    """
    fn = "hint_loss"
    if metric not in METRICS:
        raise ValueError(f"{fn}: metric must be one of {METRICS}, got {metric!r}")
    s = _checks.as_float_array(student_features, fn=fn, name="student_features")
    t = _checks.as_float_array(teacher_features, fn=fn, name="teacher_features")
    if projection is not None:
        try:
            s = project(projection, s)
        except ValueError as e:
            raise ValueError(f"{fn}: {e}") from None
    if s.shape != t.shape:
        if s.ndim == t.ndim and s.shape[:-1] == t.shape[:-1]:
            hint = (
                f"; widths differ ({s.shape[-1]} vs {t.shape[-1]}): pass projection="
                f"jc.distill.init_projection(key, {s.shape[-1]}, {t.shape[-1]})"
                if projection is None
                else ""
            )
        else:
            hint = ""
        what = "projected student" if projection is not None else "student"
        raise ValueError(
            f"{fn}: {what} features have shape {s.shape} but teacher features have shape "
            f"{t.shape}{hint}"
        )
    dtype = _checks.compute_dtype(s, t)
    s = s.astype(dtype)
    t = jax.lax.stop_gradient(t).astype(dtype)
    if metric == "mse":
        loss = jnp.mean(jnp.square(s - t), axis=axis)
    elif metric == "l2":
        loss = _safe_norm(jnp.sum(jnp.square(s - t), axis=axis))
    else:
        loss = optax.losses.cosine_distance(s, t, axis=axis, epsilon=1e-12)
    if where is not None:
        w = jnp.asarray(where)
        if w.dtype != jnp.bool_ or w.shape != loss.shape:
            raise ValueError(
                f"{fn}: where must be a boolean mask of shape {loss.shape} (the loss shape), "
                f"got {w.dtype} {w.shape}"
            )
        loss = jnp.where(w, loss, jnp.zeros_like(loss))
    return loss
