"""A jitted distillation train step for Flax linen, on ``jc.flax.TrainState``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import optax
from flax import struct

from jaxcompress.flax import _distill_common as common
from jaxcompress.flax._train_state import TrainState

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x) -> augmented x


class DistillState(struct.PyTreeNode):
    """What a linen distillation step carries: the student and everything around it.

    Attributes:
      student: the student's ``jc.flax.TrainState`` (params, optimizer, Compressor state).
      teacher: the frozen teacher variables (e.g. ``{"params": ...}``), a tuple of them with
        several teachers, or ``None`` (self-distillation, cached teacher logits). Never
        differentiated or updated.
      projections: ``{hint name: {"kernel", "bias"}}``, the learned student→teacher feature
        projections of the hints that have one (``{}`` otherwise).
      projection_opt_state: the optax state of the projections.
      projection_tx: the optax optimizer of the projections (static).
    """

    student: TrainState
    teacher: Any = None
    projections: Any = struct.field(default_factory=dict)
    projection_opt_state: Any = None
    projection_tx: optax.GradientTransformation | None = struct.field(
        pytree_node=False, default=None
    )


class Distiller(NamedTuple):
    """A linen distillation recipe (see :func:`distiller`).

    Attributes:
      init: ``init(student, teacher=None, *, sample_x=None, key=None, projection_tx=None)
        -> DistillState``.
      step: ``step(state, batch, key=None) -> (state, metrics)``, jitted.
    """

    init: Callable[..., DistillState]
    step: Callable[..., tuple[DistillState, dict[str, jax.Array]]]


def _forward(apply_fn, variables, x, *, capture, kwargs, rngs):
    extra = dict(kwargs)
    if rngs:
        extra["rngs"] = rngs
    if capture:
        out, state = apply_fn(
            variables, x, capture_intermediates=True, mutable=["intermediates"], **extra
        )
        return out, common.flat_features(state.get("intermediates", {}))
    return apply_fn(variables, x, **extra), {}


def distiller(
    teacher_apply_fn: Callable[..., Any] | Sequence[Callable[..., Any]] | str | None,
    *,
    temperature: float | optax.Schedule = 4.0,
    alpha: float | optax.Schedule | None = None,
    teacher_weights: Sequence[float] | None = None,
    hints: Sequence[common.Hint] = (),
    attention: Sequence[common.AttentionTransfer] = (),
    augment: Augment | None = None,
    student_kwargs: Mapping[str, Any] | None = None,
    teacher_kwargs: Mapping[str, Any] | None = None,
    rng_streams: Sequence[str] = (),
    donate: bool = False,
) -> Distiller:
    """Builds a jitted linen distillation train step that works with any Compressor.

    Each step, inside one ``jax.jit``: (optionally) augments the batch once, runs the
    teacher(s) on those inputs under ``stop_gradient``, runs the student on its compressed
    view (``state.compress(state.trainables)``: fake-quantized, masked ... weights), and
    differentiates ``alpha * CE + (1 - alpha) * KD + sum_i w_i * feature_term_i`` with
    respect to ``state.trainables`` (the params and any trainable compression variables)
    and the hint projections; then ``state.apply_gradients`` runs the optimizer and
    ``compressor.update``. So KD combines with any ``jc.quant`` / ``jc.prune`` / ``jc.rules``
    recipe. Intermediate features for :class:`~jaxcompress.flax.Hint` and
    :class:`~jaxcompress.flax.AttentionTransfer` terms are taken by path with linen's
    ``capture_intermediates`` (and anything the model ``sow``\\ s into ``"intermediates"``).

    Teachers:

    * a callable (``teacher.apply``) or a sequence of them (multi-teacher, weighted by
      ``teacher_weights``, default ``1 / K`` each); their variables go to ``init``;
    * ``"self"``: self-distillation, the teacher is the student's own float
      (uncompressed) params, so the compressed view learns to match the float model;
    * ``None``: cached teacher logits, given in each batch as ``batch["teacher_logits"]``
      (see :func:`jaxcompress.distill.teacher_logits`); no teacher forward pass at all.

    Self-distillation for QAT (float model → its own quantized or pruned copy): train the
    float model, then create the student ``TrainState`` from the *same* params with a
    compressor (e.g. ``jc.quant.qat(bits=4)``) and pass the float params as a frozen
    teacher: ``distiller(model.apply).init(student, {"params": float_params})``. (``"self"``
    is the online variant, where the teacher moves with the student's float params.)

    Batches are dicts ``{"x", "y"?, "mask"?, "teacher_logits"?}`` (``mask``: boolean, which
    examples count, e.g. padding in a last partial batch) or ``(x, y)`` tuples. Metrics:
    ``loss``, ``kd``, ``ce`` and ``accuracy`` (with labels), ``alpha``, ``temperature``,
    ``agreement`` (student argmax equals the first teacher's), ``hint/<name>``,
    ``attention/<name>``.

    Args:
      teacher_apply_fn: the teacher apply function(s), ``"self"`` or ``None`` (see above).
      temperature: softmax temperature ``T > 0``, a float or an optax schedule of the
        student's step (e.g. ``optax.linear_schedule(8.0, 2.0, 5000)``).
      alpha: weight of the hard-label cross entropy, a float or schedule in ``[0, 1]``;
        ``None``: 0.5 when the batch has labels, else 0.
      teacher_weights: weights of the teachers' KD terms (multi-teacher).
      hints: FitNets feature terms.
      attention: attention-transfer terms.
      augment: ``augment(key, x) -> x``, applied once per step; teacher and student see the
        same augmented inputs. Needs a ``key`` at each step.
      student_kwargs: static keyword arguments of the student's apply (e.g.
        ``{"train": True}``).
      teacher_kwargs: static keyword arguments of the teachers' apply (e.g.
        ``{"train": False}``).
      rng_streams: names of the student's rng streams (e.g. ``("dropout",)``), fed from the
        step ``key``.
      donate: donate the state's buffers to the step (saves memory; the old state becomes
        invalid).

    Returns:
      A :class:`Distiller` ``(init, step)``.

    Raises:
      ValueError: on a bad temperature or alpha (checked at step 0 for schedules), bad
        teacher weights, a malformed or duplicate feature term, feature terms with cached
        logits; at ``init``, on a missing teacher, unknown feature paths (listing the captured
        ones) or mismatched feature shapes; at ``step``, on a batch without the entries the
        recipe needs.
      TypeError: if ``teacher_apply_fn`` is of the wrong type.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxcompress as jc
      >>> teacher, student = jc.workloads.MLP((64, 10)), jc.workloads.MLP((16, 10))
      >>> x, y = jnp.ones((8, 20)), jnp.arange(8) % 10
      >>> t_vars = teacher.init(jax.random.key(0), x)
      >>> state = jc.flax.TrainState.create(
      ...     apply_fn=student.apply, params=student.init(jax.random.key(1), x)["params"],
      ...     tx=optax.adam(1e-3), compressor=jc.quant.qat(bits=4))
      >>> kd = jc.flax.distiller(teacher.apply, temperature=4.0, alpha=0.5,
      ...     hints=[jc.flax.Hint("Dense_0/__call__", "Dense_0/__call__")])
      >>> dstate = kd.init(state, t_vars, sample_x=x, key=jax.random.key(2))
      >>> dstate, metrics = kd.step(dstate, {"x": x, "y": y})
      >>> sorted(dstate.projections)
      ['hint_0']
      >>> int(dstate.student.step)
      1

    References:
      Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network";
      Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"; Zagoruyko & Komodakis 2017,
      "Paying More Attention to Attention"; Polino, Pascanu, Alistarh 2018, "Model
      compression via distillation and quantization".
    """
    fn = "distiller"
    if teacher_apply_fn is None:
        mode, teacher_fns = "cached", ()
    elif isinstance(teacher_apply_fn, str):
        if teacher_apply_fn != "self":
            raise ValueError(
                f"{fn}: teacher_apply_fn must be a callable, a sequence of them, 'self' or None, "
                f"got {teacher_apply_fn!r}"
            )
        mode, teacher_fns = "self", ()
    elif callable(teacher_apply_fn):
        mode, teacher_fns = "module", (teacher_apply_fn,)
    elif isinstance(teacher_apply_fn, (list, tuple)) and teacher_apply_fn:
        for i, f in enumerate(teacher_apply_fn):
            if not callable(f):
                raise TypeError(f"{fn}: teacher_apply_fn[{i}] is not callable: {f!r}")
        mode, teacher_fns = "module", tuple(teacher_apply_fn)
    else:
        raise TypeError(
            f"{fn}: teacher_apply_fn must be a callable, a non-empty sequence of them, 'self' "
            f"or None, got {teacher_apply_fn!r}"
        )
    setup = common.make_setup(
        fn,
        cached=mode == "cached",
        use_teacher="pass the teacher's apply function instead",
        num_teachers=max(len(teacher_fns), 1),
        loss=(temperature, alpha, teacher_weights, hints, attention),
        augment=augment,
        kwargs=(student_kwargs, teacher_kwargs),
    )
    capture_s, capture_t = setup.capture_student, setup.capture_teachers
    s_kwargs, t_kwargs = setup.student_kwargs, setup.teacher_kwargs
    rng_streams = tuple(rng_streams)

    def teachers_forward(state: DistillState, x):
        """Teacher logits and features (no gradient)."""
        if mode == "self":
            variables = {"params": jax.lax.stop_gradient(state.student.params)}
            out, feats = _forward(
                state.student.apply_fn,
                variables,
                x,
                capture=capture_t[0],
                kwargs=t_kwargs,
                rngs=None,
            )
            outs = [(out, feats)]
        else:
            variables = state.teacher if len(teacher_fns) > 1 else (state.teacher,)
            outs = [
                _forward(f, jax.lax.stop_gradient(v), x, capture=c, kwargs=t_kwargs, rngs=None)
                for f, v, c in zip(teacher_fns, variables, capture_t, strict=True)
            ]
        return common.teacher_targets(outs, fn=fn)

    def init_fn(
        student: TrainState,
        teacher: Any = None,
        *,
        sample_x: Any = None,
        key: jax.Array | None = None,
        projection_tx: optax.GradientTransformation | None = None,
    ) -> DistillState:
        """Creates the :class:`DistillState`; checks feature paths and makes projections.

        Args:
          student: the student ``jc.flax.TrainState`` (any compressor).
          teacher: the teacher variables (a tuple/list with several teachers); ``None`` for
            ``"self"`` and cached logits.
          sample_x: an input batch (only its shape is used), needed with feature terms.
          key: PRNG key for projection params, needed when a hint has a projection.
          projection_tx: optimizer of the projections (default: the student's ``tx``).

        Returns:
          The state for ``step``.
        """
        if not isinstance(student, TrainState):
            raise TypeError(
                f"{fn}.init: student must be a jc.flax.TrainState, got {type(student).__name__}"
            )
        if mode == "module":
            if teacher is None:
                raise ValueError(f"{fn}.init: pass the teacher variables, e.g. {{'params': ...}}")
            if len(teacher_fns) > 1:
                if not isinstance(teacher, (list, tuple)) or len(teacher) != len(teacher_fns):
                    raise ValueError(
                        f"{fn}.init: {len(teacher_fns)} teacher apply functions need a tuple of "
                        f"{len(teacher_fns)} teacher variables"
                    )
                teacher = tuple(teacher)
        elif teacher is not None:
            raise ValueError(
                f"{fn}.init: teacher_apply_fn={teacher_apply_fn!r} takes no teacher variables"
            )
        state = DistillState(student=student, teacher=teacher)
        projections = {}
        if capture_s:
            if sample_x is None:
                raise ValueError(f"{fn}.init: hints / attention terms need sample_x (a batch)")

            def shapes(state, x):
                _, t_feats = teachers_forward(state, x)
                _, s_feats = _forward(
                    student.apply_fn,
                    {"params": state.student.params},
                    x,
                    capture=True,
                    kwargs=s_kwargs,
                    rngs=_abstract_rngs(rng_streams),
                )
                return s_feats, t_feats

            s_feats, t_feats = jax.eval_shape(shapes, state, sample_x)
            projections = common.projections_for(setup.obj, s_feats, t_feats, key, fn=fn)
        tx = projection_tx if projection_tx is not None else student.tx
        return state.replace(
            projections=projections, projection_opt_state=tx.init(projections), projection_tx=tx
        )

    def step_fn(state: DistillState, batch: Any, key: jax.Array | None = None):
        x, labels, mask, cached = common.unpack_batch(batch, fn=fn)
        if (augment is not None or rng_streams) and key is None:
            raise ValueError(f"{fn}: augment / rng_streams need a key: step(state, batch, key)")
        x, key = common.augment_batch(augment, x, key)
        rngs = None
        if rng_streams:
            ks = jax.random.split(key, len(rng_streams))
            rngs = dict(zip(rng_streams, ks, strict=True))
        if mode == "cached":
            targets = common.cached_targets(
                cached,
                missing=f"{fn}(None) distils from cached teacher logits: each batch needs a "
                "'teacher_logits' entry (see jc.distill.teacher_logits)",
            )
        else:
            targets = teachers_forward(state, x)
        st = state.student

        def loss_fn(trainables, projections):
            view = st.compress(trainables)
            out, s_feats = _forward(
                st.apply_fn, {"params": view}, x, capture=capture_s, kwargs=s_kwargs, rngs=rngs
            )
            return common.loss_and_metrics(
                setup.obj, out, s_feats, targets, fn=fn, step=st.step, labels=labels, mask=mask,
                projections=projections,
            )  # fmt: skip

        grads, metrics = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            st.trainables, state.projections
        )
        g_train, g_proj = grads
        student = st.apply_gradients(grads=g_train)
        projections, proj_opt = common.update_projections(
            state.projection_tx, g_proj, state.projection_opt_state, state.projections
        )
        return (
            state.replace(student=student, projections=projections, projection_opt_state=proj_opt),
            metrics,
        )

    step = jax.jit(step_fn, donate_argnums=(0,) if donate else ())
    return Distiller(init_fn, step)


def _abstract_rngs(streams: Sequence[str]) -> dict[str, jax.Array] | None:
    if not streams:
        return None
    return {s: jax.random.key(i) for i, s in enumerate(streams)}
