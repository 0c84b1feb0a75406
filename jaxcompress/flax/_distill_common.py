"""What the linen and NNX distillation steps share: specs, schedules, batches, the objective."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcompress import distill
from jaxcompress._src import paths as paths_lib
from jaxcompress.distill import _checks, _hint


class Hint(NamedTuple):
    """A FitNets hint: match a student feature to a teacher feature, both taken by path.

    Paths are '/'-joined keys into the captured intermediates: ``"Dense_0/__call__"`` is the
    output of the submodule ``Dense_0`` (linen ``capture_intermediates`` / NNX
    ``nnx.capture(..., method_outputs=nnx.Intermediate)``), ``"features"`` a value the
    module stored with ``self.sow("intermediates", "features", x)`` (linen) or
    ``self.sow(nnx.Intermediate, "features", x)`` (NNX). A trailing ``/0`` (the first call)
    may be left out.
    """

    student: str  # path of the student feature, e.g. "Dense_0/__call__"
    teacher: str  # path of the teacher feature, e.g. "Dense_1/__call__"
    weight: float = 1.0  # multiplies this term in the total loss
    metric: str = "mse"  # "mse" | "l2" | "cosine" (see jc.distill.hint_loss)
    projection: bool | None = None  # learned student->teacher projection; None: iff widths differ
    teacher_index: int = 0  # which teacher, with several
    name: str | None = None  # key of the metric and the projection; default "hint_{i}"


class AttentionTransfer(NamedTuple):
    """An attention-transfer term between a student and a teacher activation, by path.

    Paths as in :class:`Hint`; the activations need spatial axes (``[batch, *spatial,
    channels]``). The default weight is the paper's ``beta = 1000`` for the mean-squared form
    of :func:`jaxcompress.distill.attention_transfer_loss`.
    """

    student: str  # path of the student activation
    teacher: str  # path of the teacher activation
    weight: float = 1000.0  # beta; multiplies this term in the total loss
    p: float = 2.0  # power of the attention map
    channel_axis: int = -1  # channel axis of both activations
    teacher_index: int = 0  # which teacher, with several
    name: str | None = None  # key of the metric; default "attention_{i}"


def as_schedule(value: Any, *, fn: str, name: str, lo: float, hi: float | None) -> Callable:
    """A float or an optax schedule as a schedule; its value at step 0 is checked now."""
    sched = value if callable(value) else optax.constant_schedule(value)
    try:
        v0 = np.asarray(sched(0))
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"{fn}: {name} schedule fails at step 0: {e}") from e
    ok = v0.ndim == 0 and np.isfinite(v0) and (v0 > lo if hi is None else lo <= v0 <= hi)
    if not ok:
        want = f"> {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{fn}: {name} must be a scalar {want}, got {value!r} (= {v0} at step 0)")
    return sched


def check_specs(
    hints: Sequence[Hint], attention: Sequence[AttentionTransfer], num_teachers: int, *, fn: str
) -> tuple[tuple[Hint, ...], tuple[AttentionTransfer, ...]]:
    """Validates the feature terms and gives each a unique name."""
    out_h, out_a, names = [], [], set()
    for kind, specs, cls, out in (
        ("hint", hints, Hint, out_h),
        ("attention", attention, AttentionTransfer, out_a),
    ):
        for i, spec in enumerate(specs):
            if not isinstance(spec, cls):
                raise TypeError(
                    f"{fn}: {kind}s[{i}] must be a jc.flax.{cls.__name__}, got {spec!r}"
                )
            for field in ("student", "teacher"):
                if not isinstance(getattr(spec, field), str) or not getattr(spec, field):
                    raise ValueError(f"{fn}: {kind}s[{i}].{field} must be a non-empty path string")
            w = spec.weight
            if (
                isinstance(w, bool)
                or not isinstance(w, (int, float))
                or not (math.isfinite(w) and w >= 0)
            ):
                raise ValueError(
                    f"{fn}: {kind}s[{i}].weight must be a finite number >= 0, got {w!r}"
                )
            ti = spec.teacher_index
            if isinstance(ti, bool) or not isinstance(ti, int) or not 0 <= ti < num_teachers:
                raise ValueError(
                    f"{fn}: {kind}s[{i}].teacher_index={ti!r} but there are {num_teachers} teachers"
                )
            if cls is Hint and spec.metric not in _hint.METRICS:
                raise ValueError(
                    f"{fn}: hints[{i}].metric must be one of {_hint.METRICS}, got {spec.metric!r}"
                )
            if cls is AttentionTransfer and (
                isinstance(spec.p, bool) or not isinstance(spec.p, (int, float)) or spec.p < 1
            ):
                raise ValueError(f"{fn}: attention[{i}].p must be a number >= 1, got {spec.p!r}")
            name = spec.name or f"{kind}_{i}"
            if name in names:
                raise ValueError(f"{fn}: two feature terms are named {name!r}; names must differ")
            names.add(name)
            out.append(spec._replace(name=name))
    return tuple(out_h), tuple(out_a)


def flat_features(tree: Any) -> dict[str, jax.Array]:
    """``{path: array}`` of a captured-intermediates tree."""
    return dict(paths_lib.leaves_with_paths(tree))


def lookup(features: Mapping[str, Any], path: str, *, fn: str, who: str) -> Any:
    """The feature at ``path`` (or ``path/0``); a clear error listing the paths otherwise."""
    for p in (path, f"{path}/0"):
        if p in features:
            return features[p]
    shown = sorted(features)
    more = f" ... ({len(shown)} in all)" if len(shown) > 40 else ""
    raise ValueError(
        f"{fn}: the {who} has no captured feature {path!r}; the captured paths are: "
        + ", ".join(shown[:40])
        + more
    )


def unpack_batch(batch: Any, *, fn: str) -> tuple[Any, Any, Any, Any]:
    """``(x, labels, mask, teacher_logits)`` of a batch dict or an ``(x, y)`` tuple."""
    if isinstance(batch, Mapping):
        unknown = set(batch) - {"x", "y", "mask", "teacher_logits"}
        if unknown or "x" not in batch:
            raise ValueError(
                f"{fn}: a batch dict holds 'x' and optionally 'y' (labels), 'mask' (which "
                f"examples count) and 'teacher_logits' (cached); got keys {sorted(batch)}"
            )
        return batch["x"], batch.get("y"), batch.get("mask"), batch.get("teacher_logits")
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
        return batch[0], (batch[1] if len(batch) == 2 else None), None, None
    raise ValueError(
        f"{fn}: batch must be a dict with 'x' (and 'y', 'mask', 'teacher_logits') or an "
        f"(x, y) tuple, got {type(batch).__name__}"
    )


def masked_mean(loss: jax.Array, mask: jax.Array | None, *, fn: str) -> jax.Array:
    """Mean of ``loss`` over the examples ``mask`` keeps (all when ``mask`` is None)."""
    if mask is None:
        return jnp.mean(loss)
    m = jnp.asarray(mask)
    if m.dtype != jnp.bool_:
        raise TypeError(f"{fn}: batch['mask'] must be boolean, got {m.dtype}")
    while m.ndim > loss.ndim:
        m = jnp.any(m, axis=-1)
    while loss.ndim > m.ndim:
        loss = jnp.mean(loss, axis=-1)
    if m.shape != loss.shape:
        raise ValueError(
            f"{fn}: batch['mask'] has shape {jnp.shape(mask)}, which does not match the "
            f"leading axes of a loss of shape {loss.shape}"
        )
    kept = jnp.where(m, loss, jnp.zeros_like(loss))
    return jnp.sum(kept) / jnp.maximum(jnp.sum(m), 1).astype(loss.dtype)


def check_logits(out: Any, *, fn: str, who: str) -> jax.Array:
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(
            f"{fn}: the {who} must return a logits array [..., num_classes], got "
            f"{type(out).__name__}; wrap the apply function to pick the logits"
        )
    return out


class Objective(NamedTuple):
    """The static configuration of a distillation loss, shared by linen and NNX steps."""

    temperature: Callable  # schedule: step -> T
    alpha: Callable | None  # schedule: step -> alpha, None: 0.5 with labels, else 0
    teacher_weights: Any  # None or a [K] float32 array
    num_teachers: int
    hints: tuple[Hint, ...]
    attention: tuple[AttentionTransfer, ...]


def feature_widths(obj: Objective, s_feats, t_feats, *, fn: str) -> dict[str, tuple[int, int]]:
    """Checks every feature term on (abstract) features; ``{hint name: (d_s, d_t)}``."""
    widths = {}
    for h in obj.hints:
        sf = lookup(s_feats, h.student, fn=fn, who="student")
        tf = lookup(t_feats[h.teacher_index], h.teacher, fn=fn, who=f"teacher {h.teacher_index}")
        if len(sf.shape) < 1 or len(tf.shape) < 1:
            raise ValueError(f"{fn}: hint {h.name!r}: features must have a feature axis")
        widths[h.name] = (sf.shape[-1], tf.shape[-1])
        if sf.shape[:-1] != tf.shape[:-1]:
            raise ValueError(
                f"{fn}: hint {h.name!r}: student feature {h.student!r} has shape {sf.shape} but "
                f"teacher feature {h.teacher!r} has shape {tf.shape}; only the last (width) "
                "axis may differ"
            )
    for a in obj.attention:
        sf = lookup(s_feats, a.student, fn=fn, who="student")
        tf = lookup(t_feats[a.teacher_index], a.teacher, fn=fn, who=f"teacher {a.teacher_index}")
        try:
            jax.eval_shape(
                lambda s, t, a=a: distill.attention_transfer_loss(
                    s, t, p=a.p, channel_axis=a.channel_axis
                ),
                sf,
                tf,
            )
        except ValueError as e:
            raise ValueError(f"{fn}: attention term {a.name!r}: {e}") from None
    return widths


def init_projections(
    obj: Objective, widths: Mapping[str, tuple[int, int]], key: Any, *, fn: str
) -> dict[str, Any]:
    """Projection params for the hints that need one (explicitly, or widths differ)."""
    need = [
        h
        for h in obj.hints
        if h.projection or (h.projection is None and widths[h.name][0] != widths[h.name][1])
    ]
    if not need:
        return {}
    if key is None:
        raise ValueError(
            f"{fn}: hints {[h.name for h in need]} need a learned projection (their widths "
            "differ or projection=True); pass key=jax.random.key(...) to init"
        )
    keys = jax.random.split(key, len(need))
    return {
        h.name: distill.init_projection(k, widths[h.name][0], widths[h.name][1])
        for h, k in zip(need, keys, strict=True)
    }


def needs_features(obj: Objective) -> tuple[bool, list[bool]]:
    """Whether the student, and each teacher, must capture intermediates."""
    t = [False] * obj.num_teachers
    for spec in obj.hints + obj.attention:
        t[spec.teacher_index] = True
    return bool(obj.hints or obj.attention), t


def loss_and_metrics(
    obj: Objective,
    out: Any,
    s_feats: Mapping[str, jax.Array],
    targets: tuple[Sequence[jax.Array], Sequence[Mapping[str, jax.Array]]],
    *,
    fn: str,
    step: jax.Array,
    labels: Any,
    mask: Any,
    projections: Mapping[str, Any],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The total distillation loss (a scalar) and its parts as metrics.

    ``total = alpha * CE + (1 - alpha) * KD + sum_i w_i * feature_term_i``, each term a mean
    over the examples ``mask`` keeps. With labels and a constant ``alpha`` it equals the mean
    of :func:`jaxcompress.distill.kd_loss` plus the feature terms.

    Args:
      obj: the objective.
      out: the student's forward output (its logits).
      s_feats: the student's captured features.
      targets: ``(teacher logits, teacher features)``, one entry per teacher.
      fn: the factory's name, for errors.
      step: the student's step (the schedules' argument).
      labels: the batch labels or None.
      mask: the batch mask or None.
      projections: the hint projections.

    Returns:
      ``(total, metrics)``.
    """
    s_logits = check_logits(out, fn=fn, who="student")
    t_logits = [jax.lax.stop_gradient(t) for t in targets[0]]
    t_feats = [jax.lax.stop_gradient(dict(f)) for f in targets[1]]
    temperature = obj.temperature(step)
    where = None if mask is None else jnp.asarray(mask)
    if where is not None and where.shape != s_logits.shape[:-1]:
        raise ValueError(
            f"{fn}: batch['mask'] has shape {where.shape}, expected {s_logits.shape[:-1]} "
            f"(the logits {s_logits.shape} without the class axis)"
        )
    if obj.num_teachers == 1:
        soft = distill.kd_loss(s_logits, t_logits[0], temperature=temperature, where=where)
    else:
        w = obj.teacher_weights
        soft = distill.multi_teacher_kd_loss(
            s_logits,
            list(t_logits),
            weights=None if w is None else jnp.asarray(w),
            temperature=temperature,
            where=where,
        )
    kd = masked_mean(soft, where, fn=fn)
    metrics = {"kd": kd, "temperature": jnp.asarray(temperature, jnp.float32)}
    s32 = s_logits.astype(kd.dtype)
    agree = (jnp.argmax(s32, -1) == jnp.argmax(t_logits[0], -1)).astype(kd.dtype)
    metrics["agreement"] = masked_mean(agree, where, fn=fn)
    if labels is None:
        if obj.alpha is not None and not np.asarray(obj.alpha(0)) == 0:
            raise ValueError(
                f"{fn}: alpha weights the hard-label cross entropy but the batch has no labels "
                "('y'); add them or use alpha=0.0"
            )
        total = kd
    else:
        labels = _checks.check_labels(labels, s_logits.shape, fn=fn, row_mask=None)
        if jnp.issubdtype(labels.dtype, jnp.integer):
            ce_ex = optax.losses.softmax_cross_entropy_with_integer_labels(s32, labels)
            correct = (jnp.argmax(s32, -1) == labels).astype(kd.dtype)
            metrics["accuracy"] = masked_mean(correct, where, fn=fn)
        else:
            ce_ex = optax.losses.safe_softmax_cross_entropy(s32, labels.astype(s32.dtype))
        ce = masked_mean(ce_ex, where, fn=fn)
        alpha = 0.5 if obj.alpha is None else obj.alpha(step)
        alpha = jnp.asarray(alpha, kd.dtype)
        total = alpha * ce + (1 - alpha) * kd
        metrics["ce"] = ce
        metrics["alpha"] = alpha
    batch_mask = where
    for h in obj.hints:
        sf = lookup(s_feats, h.student, fn=fn, who="student")
        tf = lookup(t_feats[h.teacher_index], h.teacher, fn=fn, who=f"teacher {h.teacher_index}")
        per = distill.hint_loss(sf, tf, projection=projections.get(h.name), metric=h.metric)
        term = masked_mean(per, batch_mask, fn=fn)
        metrics[f"hint/{h.name}"] = term
        total = total + h.weight * term
    for a in obj.attention:
        sf = lookup(s_feats, a.student, fn=fn, who="student")
        tf = lookup(t_feats[a.teacher_index], a.teacher, fn=fn, who=f"teacher {a.teacher_index}")
        per = distill.attention_transfer_loss(sf, tf, p=a.p, channel_axis=a.channel_axis)
        term = masked_mean(per, batch_mask, fn=fn)
        metrics[f"attention/{a.name}"] = term
        total = total + a.weight * term
    metrics["loss"] = total
    return total, metrics


def update_projections(tx, grads, opt_state, projections):
    """One optax step on the projection params (no-op when there are none)."""
    if not jax.tree.leaves(projections):
        return projections, opt_state
    updates, opt_state = tx.update(grads, opt_state, projections)
    return optax.apply_updates(projections, updates), opt_state


class Setup(NamedTuple):
    """The checked, static part of a distiller: its objective and forward-pass options."""

    obj: Objective
    capture_student: bool  # the student must capture intermediates (feature terms)
    capture_teachers: list[bool]  # per teacher: must capture intermediates
    student_kwargs: dict[str, Any]  # static keyword arguments of the student's forward
    teacher_kwargs: dict[str, Any]  # static keyword arguments of the teachers' forward


def make_setup(
    fn: str,
    *,
    cached: bool,
    use_teacher: str,
    num_teachers: int,
    loss: tuple[Any, Any, Any, Sequence[Hint], Sequence[AttentionTransfer]],
    augment: Any,
    kwargs: tuple[Mapping[str, Any] | None, Mapping[str, Any] | None],
) -> Setup:
    """Validates a distiller's options (the linen and NNX factories share them).

    Args:
      fn: the factory's name, for errors.
      cached: the teacher logits come with the batch.
      use_teacher: what to pass instead of cached logits for feature terms (an error's hint).
      num_teachers: how many teachers the KD term averages.
      loss: ``(temperature, alpha, teacher_weights, hints, attention)`` as the factory got
        them.
      augment: the factory's ``augment``.
      kwargs: ``(student_kwargs, teacher_kwargs)`` as the factory got them.

    Returns:
      The :class:`Setup`.
    """
    temperature, alpha, teacher_weights, hints, attention = loss
    temp = as_schedule(temperature, fn=fn, name="temperature", lo=0.0, hi=None)
    alp = None if alpha is None else as_schedule(alpha, fn=fn, name="alpha", lo=0.0, hi=1.0)
    w = None
    if teacher_weights is not None:
        w = np.asarray(teacher_weights, np.float32)
        if w.shape != (num_teachers,) or not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            raise ValueError(
                f"{fn}: teacher_weights must be {num_teachers} finite numbers >= 0, got "
                f"{teacher_weights!r}"
            )
    obj = Objective(temp, alp, w, num_teachers, *check_specs(hints, attention, num_teachers, fn=fn))
    capture_s, capture_t = needs_features(obj)
    if cached and capture_s:
        raise ValueError(
            f"{fn}: hints and attention terms need the teacher's features, which cached "
            f"teacher logits do not have; {use_teacher}"
        )
    if augment is not None and not callable(augment):
        raise TypeError(f"{fn}: augment must be a callable (key, x) -> x, got {augment!r}")
    return Setup(obj, capture_s, capture_t, *(dict(k or {}) for k in kwargs))


def augment_batch(augment: Any, x: Any, key: Any) -> tuple[Any, Any]:
    """``(augment(k, x), rest of key)``: the batch augmented once per step (if ``augment``)."""
    if augment is None:
        return x, key
    key, k_aug = jax.random.split(key)
    return augment(k_aug, x), key


def teacher_targets(
    outs: Sequence[tuple[Any, Mapping[str, jax.Array]]], *, fn: str
) -> tuple[list[jax.Array], list[Mapping[str, jax.Array]]]:
    """Teacher ``(logits, features)`` per teacher from their forward outputs, no gradient."""
    logits = [check_logits(o, fn=fn, who="teacher") for o, _ in outs]
    return jax.lax.stop_gradient(logits), jax.lax.stop_gradient([f for _, f in outs])


def cached_targets(cached: Any, *, missing: str) -> tuple[list[jax.Array], list[dict]]:
    """The targets of cached teacher logits; ``missing`` is the error without them."""
    if cached is None:
        raise ValueError(missing)
    return [jax.lax.stop_gradient(cached)], [{}]


def projections_for(
    obj: Objective, s_feats: Mapping[str, Any], t_feats: Sequence[Any], key: Any, *, fn: str
) -> dict[str, Any]:
    """Checks the feature terms on (abstract) features and makes the hint projections."""
    return init_projections(obj, feature_widths(obj, s_feats, t_feats, fn=fn), key, fn=fn)
