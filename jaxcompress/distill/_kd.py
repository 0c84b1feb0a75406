"""Knowledge distillation on logits (Hinton et al.): soft targets at a temperature."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcompress.distill import _checks


def _prepare(student_logits, teacher_logits, *, fn):
    s = _checks.as_float_array(student_logits, fn=fn, name="student_logits")
    t = _checks.as_float_array(teacher_logits, fn=fn, name="teacher_logits")
    if s.ndim < 1:
        raise ValueError(f"{fn}: logits must have shape [..., num_classes], got a scalar")
    if s.shape != t.shape:
        if s.shape[:-1] == t.shape[:-1]:
            raise ValueError(
                f"{fn}: class-count mismatch: student_logits has shape {s.shape} "
                f"({s.shape[-1]} classes) but teacher_logits has shape {t.shape} "
                f"({t.shape[-1]} classes)"
            )
        raise ValueError(
            f"{fn}: student_logits has shape {s.shape} but teacher_logits has shape {t.shape}; "
            "both must be [..., num_classes] with equal shapes"
        )
    return s, t


def _resolve_alpha(alpha, labels, *, fn):
    if alpha is None:
        return 0.0 if labels is None else 0.5
    a = _checks.check_unit_interval(alpha, fn=fn, name="alpha")
    c = _checks.concrete(alpha)
    if labels is None and (c is None or c != 0):
        raise ValueError(
            f"{fn}: alpha={alpha!r} weights the hard-label cross entropy, but no labels were "
            "given; pass labels=... or alpha=0.0"
        )
    return a


def _masked_logits(x, class_mask, valid):
    """Masked classes become -inf; rows that do not count become zeros (finite gradients)."""
    if class_mask is not None:
        x = jnp.where(class_mask, x, -jnp.inf)
    return jnp.where(valid[..., None], x, jnp.zeros_like(x))


def _soft_kd(s, t, temperature, class_mask, row_mask):
    """Per-example ``T**2 * KL(softmax(t / T) || softmax(s / T))``.

    A class the teacher gives zero probability (``-inf`` logit, or underflow at extreme
    logits) contributes nothing (``0 log 0 = 0``); a row whose teacher logits are all masked
    does not count. ``s`` and ``t`` are already float of the compute dtype; ``t`` carries no
    gradient.
    """
    t_in = t if class_mask is None else jnp.where(class_mask, t, -jnp.inf)
    valid = jnp.any(t_in > -jnp.inf, axis=-1)
    if row_mask is not None:
        valid = valid & row_mask
    s = _masked_logits(s, class_mask, valid)
    t = _masked_logits(t, class_mask, valid)
    temperature = temperature.astype(s.dtype)
    log_q = jax.nn.log_softmax(s / temperature, axis=-1)
    log_p = jax.nn.log_softmax(t / temperature, axis=-1)
    kl = optax.losses.kl_divergence_with_log_targets(log_q, log_p, where=jnp.exp(log_p) > 0)
    kd = jnp.square(temperature) * kl
    return jnp.where(valid, kd, jnp.zeros_like(kd))


def _hard_ce(s_masked, labels):
    """Cross entropy of the (masked, sanitised) student logits at temperature 1."""
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return optax.losses.softmax_cross_entropy_with_integer_labels(s_masked, labels)
    # 0 * log(0) = 0 at masked (-inf) classes with zero target mass.
    return optax.losses.safe_softmax_cross_entropy(s_masked, labels.astype(s_masked.dtype))


def _distill(fn, s, teachers, weights, temperature, labels, alpha, where):
    """The shared body of :func:`kd_loss` and :func:`multi_teacher_kd_loss`."""
    temperature = _checks.check_positive_scalar(temperature, fn=fn, name="temperature")
    row_mask, class_mask = _checks.split_where(where, s.shape, fn=fn)
    if labels is not None:
        labels = _checks.check_labels(labels, s.shape, fn=fn, row_mask=row_mask)
    alpha = _resolve_alpha(alpha, labels, fn=fn)
    teachers = [jnp.asarray(t) for t in teachers]
    dtype = _checks.compute_dtype(s, *teachers)
    s = s.astype(dtype)
    soft = jnp.zeros(s.shape[:-1], dtype)
    for i, t in enumerate(teachers):
        t = jax.lax.stop_gradient(t).astype(dtype)
        kd = _soft_kd(s, t, temperature, class_mask, row_mask)
        soft = soft + (kd if weights is None else weights[i].astype(dtype) * kd)
    if labels is None:
        return soft
    # The hard term counts on every example the mask keeps that has a class left.
    valid = jnp.ones(s.shape[:-1], bool) if row_mask is None else row_mask
    if class_mask is not None:
        valid = valid & jnp.any(class_mask, axis=-1)
    ce = _hard_ce(_masked_logits(s, class_mask, valid), labels)
    alpha = jnp.asarray(alpha, dtype)
    loss = alpha * ce + (1 - alpha) * soft
    return jnp.where(valid, loss, jnp.zeros_like(loss))


def kd_loss(
    student_logits: jax.typing.ArrayLike,
    teacher_logits: jax.typing.ArrayLike,
    *,
    temperature: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike | None = None,
    alpha: jax.typing.ArrayLike | None = None,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Knowledge-distillation loss per example: soft teacher targets mixed with hard labels.

    .. math::
        \ell = \alpha \cdot \mathrm{CE}(s, y)
            + (1 - \alpha) \cdot T^2 \, \mathrm{KL}\big(\mathrm{softmax}(t / T)
            \,\|\, \mathrm{softmax}(s / T)\big)

    The ``T**2`` factor keeps the soft-target gradients at the same scale as the hard-label
    ones when ``T`` changes (Hinton et al. 2015, section 2). The KL term is
    ``optax.losses.kl_divergence_with_log_targets`` on ``log_softmax`` outputs and the
    hard term ``optax.losses.softmax_cross_entropy_with_integer_labels`` (integer labels) or
    ``optax.losses.safe_softmax_cross_entropy`` (one-hot / soft labels), always on the
    student logits at temperature 1.

    The teacher receives no gradient (``stop_gradient``). Computation is in float32 (or
    wider) whatever the logits dtype. Extreme logits (``±1e4``) are safe; a class whose
    teacher probability is exactly zero (a ``-inf`` logit, or underflow) contributes nothing
    (``0 log 0 = 0``), so classes masked with ``-inf`` in both models (or by a class mask in
    ``where``) are ignored with finite gradients. A class the student masks (``-inf``) while
    the teacher gives it probability makes the loss infinite, as the KL divergence is.

    Args:
      student_logits: ``[..., num_classes]`` float logits of the student.
      teacher_logits: ``[..., num_classes]`` float logits of the teacher (same shape).
      temperature: softmax temperature ``T > 0`` (a float, or a traced scalar such as
        ``optax.linear_schedule(4.0, 1.0, n)(step)``).
      labels: hard labels: integer class ids ``[...]`` or one-hot / soft labels
        ``[..., num_classes]``. Optional.
      alpha: weight of the hard-label cross entropy in ``[0, 1]``; the soft term gets
        ``1 - alpha``. ``alpha=1`` is plain cross entropy, ``alpha=0`` pure distillation.
        Default: 0.5 when ``labels`` are given, else 0.
      where: optional boolean mask, either ``[...]`` (which examples count; the others get
        loss 0 and no gradient) or ``[..., num_classes]`` (which classes exist; the others
        are removed from both softmaxes, as if their logits were ``-inf``).

    Returns:
      The loss per example, shape ``[...]`` (reduce it yourself, e.g. ``.mean()``, or
      ``sum(loss) / sum(where)`` with an example mask). Examples that do not count, and rows
      whose teacher logits are all masked, are 0.

    Raises:
      ValueError: on a shape or class-count mismatch (naming both shapes), a temperature that
        is not > 0, ``alpha`` outside ``[0, 1]``, ``alpha > 0`` without labels, labels of the
        wrong shape or (when concrete) out of range, or a ``where`` of the wrong shape.
      TypeError: on non-float logits or a non-boolean ``where``.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> s = jnp.array([[2.0, 0.0, -1.0]])
      >>> t = jnp.array([[3.0, 1.0, -2.0]])
      >>> loss = jc.distill.kd_loss(s, t, temperature=2.0, labels=jnp.array([0]), alpha=0.1)
      >>> loss.shape
      (1,)
      >>> float(jc.distill.kd_loss(s, s, temperature=4.0)[0])
      0.0

    References:
      Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network",
      https://arxiv.org/abs/1503.02531
    """
    fn = "kd_loss"
    s, t = _prepare(student_logits, teacher_logits, fn=fn)
    return _distill(fn, s, [t], None, temperature, labels, alpha, where)


def multi_teacher_kd_loss(
    student_logits: jax.typing.ArrayLike,
    teacher_logits: Sequence[jax.typing.ArrayLike] | jax.typing.ArrayLike,
    *,
    temperature: jax.typing.ArrayLike,
    weights: Sequence[float] | jax.typing.ArrayLike | None = None,
    labels: jax.typing.ArrayLike | None = None,
    alpha: jax.typing.ArrayLike | None = None,
    where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Distillation from several teachers: a weighted sum of per-teacher KD terms.

    .. math::
        \ell = \alpha \cdot \mathrm{CE}(s, y) + (1 - \alpha) \sum_k w_k \, T^2 \,
            \mathrm{KL}\big(\mathrm{softmax}(t_k / T) \,\|\, \mathrm{softmax}(s / T)\big)

    With one teacher and weight 1 it equals :func:`kd_loss`. The weights are used as given
    (not renormalised); the default is ``1 / K`` each.

    Args:
      student_logits: ``[..., num_classes]`` student logits.
      teacher_logits: a sequence of ``K`` arrays shaped like the student logits, or one
        stacked array ``[K, ..., num_classes]``.
      temperature: softmax temperature ``T > 0``, shared by all teachers.
      weights: ``K`` non-negative weights (default ``1 / K`` each).
      labels: optional hard labels (see :func:`kd_loss`).
      alpha: weight of the hard-label cross entropy (see :func:`kd_loss`).
      where: optional example or class mask (see :func:`kd_loss`).

    Returns:
      The loss per example, shape ``[...]``.

    Raises:
      ValueError: on shape mismatches (naming the teacher and the shapes), a wrong number of
        weights, negative or non-finite weights, or the errors of :func:`kd_loss`.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> s = jnp.zeros((2, 3))
      >>> t1, t2 = jnp.ones((2, 3)), jnp.eye(2, 3)
      >>> jc.distill.multi_teacher_kd_loss(s, [t1, t2], temperature=2.0,
      ...                                  weights=[0.7, 0.3]).shape
      (2,)

    References:
      Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network" (ensembles
      of specialists); You et al. 2017, "Learning from Multiple Teacher Networks".
    """
    fn = "multi_teacher_kd_loss"
    s = _checks.as_float_array(student_logits, fn=fn, name="student_logits")
    if isinstance(teacher_logits, (list, tuple)):
        teachers = list(teacher_logits)
        if not teachers:
            raise ValueError(f"{fn}: teacher_logits is empty; give at least one teacher")
    else:
        stacked = _checks.as_float_array(teacher_logits, fn=fn, name="teacher_logits")
        if stacked.ndim != s.ndim + 1:
            raise ValueError(
                f"{fn}: stacked teacher_logits must be [num_teachers, *student_shape] = "
                f"[K, {', '.join(map(str, s.shape))}], got shape {stacked.shape}"
            )
        teachers = [stacked[k] for k in range(stacked.shape[0])]
    k = len(teachers)
    for i, t in enumerate(teachers):
        try:
            _prepare(s, t, fn=fn)
        except ValueError as e:
            raise ValueError(f"{str(e)} (teacher {i})") from None
    if weights is None:
        w = jnp.full((k,), 1.0 / k, jnp.float32)
    else:
        w = jnp.asarray(weights, jnp.float32)
        if w.shape != (k,):
            raise ValueError(f"{fn}: weights has shape {w.shape}, expected ({k},) for {k} teachers")
        c = _checks.concrete(weights)
        if c is not None and not (np.all(np.isfinite(c)) and np.all(c >= 0)):
            raise ValueError(f"{fn}: weights must be finite and >= 0, got {c.tolist()}")
    return _distill(fn, s, teachers, w, temperature, labels, alpha, where)
