"""A jitted distillation train step for Flax NNX, on ``nnx.Optimizer`` and any Compressor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import optax
from flax import nnx

from jaxcompress._src.base import Compressor, identity, trainable
from jaxcompress.flax import _distill_common as common
from jaxcompress.flax._nnx import Compressed

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x) -> augmented x


class NNXDistillState(NamedTuple):
    """The functional part of an NNX distillation step (the modules stay mutable objects)."""

    compression: Any  # the Compressor state over the student's nnx.Param pure dict; None
    #   when the student is a jc.flax.Compressed (its state lives in the wrapper)
    projections: Any  # {hint name: {"kernel", "bias"}}: learned student->teacher projections
    projection_opt_state: Any  # optax state of the projections


class NNXDistiller(NamedTuple):
    """An NNX distillation recipe (see :func:`nnx_distiller`).

    Attributes:
      init: ``init(student, optimizer, teacher=None, *, sample_x=None, key=None)
        -> NNXDistillState``.
      step: ``step(student, optimizer, state, batch, *, teacher=None, key=None)
        -> (state, metrics)``, jitted with ``nnx.jit``; updates ``student`` and
        ``optimizer`` in place.
    """

    init: Callable[..., NNXDistillState]
    step: Callable[..., tuple[NNXDistillState, dict[str, jax.Array]]]


def param_dict(model: nnx.Module) -> dict[str, Any]:
    """The model's ``nnx.Param`` values as a plain nested dict (what compressors see).

    Paths are the attribute names, e.g. ``Dense_0/kernel``, the same as a linen model's
    params with the same layer names.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> import jaxcompress as jc
      >>> model = jc.workloads.MLPNNX(4, (8, 2), rngs=nnx.Rngs(0))
      >>> jax.tree.map(lambda x: x.shape, jc.flax.param_dict(model))["Dense_0"]
      {'bias': (8,), 'kernel': (4, 8)}
    """
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _with_values(state: nnx.State, values: Any) -> nnx.State:
    """A copy of an ``nnx.State`` with its leaves replaced from a pure dict."""
    out = jax.tree.map(lambda v: v, state)
    nnx.replace_by_pure_dict(out, values)
    return out


def _forward(model, x, *, capture, kwargs):
    """Runs ``model(x)`` under ``nnx.capture`` (so sown values never stay in the module).

    With ``capture``, every module method's output is recorded too.
    """
    out, inter = nnx.capture(
        model, nnx.Intermediate, method_outputs=nnx.Intermediate if capture else None
    )(x, **kwargs)
    if not capture:
        return out, {}
    return out, common.flat_features(nnx.to_pure_dict(inter))


def nnx_distiller(
    *,
    teacher: str = "module",
    compressor: Compressor | None = None,
    temperature: float | optax.Schedule = 4.0,
    alpha: float | optax.Schedule | None = None,
    num_teachers: int = 1,
    teacher_weights: Sequence[float] | None = None,
    hints: Sequence[common.Hint] = (),
    attention: Sequence[common.AttentionTransfer] = (),
    augment: Augment | None = None,
    student_kwargs: Mapping[str, Any] | None = None,
    teacher_kwargs: Mapping[str, Any] | None = None,
    projection_tx: optax.GradientTransformation | None = None,
) -> NNXDistiller:
    """Builds a jitted NNX distillation train step (``nnx.Optimizer``, any Compressor).

    The NNX counterpart of :func:`jaxcompress.flax.distiller`, with the same loss, feature
    terms, schedules, batches and metrics. Each step, inside one ``nnx.jit``: augments the
    batch once (optional), runs the teacher module(s) on it under ``stop_gradient``, splits
    the student into ``(graphdef, params, rest)``, runs ``nnx.merge(graphdef,
    compressor.apply(params), rest)`` on the same inputs, differentiates the loss with
    respect to the float params (and the hint projections), calls
    ``optimizer.update(student, grads)``, then ``compressor.update`` and writes the params
    it returns back into the student (e.g. pruned weights stay zero). Other student state
    the forward changes (rng counters, batch statistics) is written back too. Features are
    taken by path with ``nnx.capture(..., method_outputs=nnx.Intermediate)``: module outputs
    such as ``"Dense_0/__call__"`` and values sown with ``self.sow(nnx.Intermediate, ...)``.

    The student's optimizer must be ``nnx.Optimizer(student, tx, wrt=nnx.Param)``. The
    schedules run on ``optimizer.step``. Compressors with trainable variables (LSQ step
    sizes, k-means centroids) train the way :class:`jaxcompress.flax.Compressed` trains them:
    pass the wrapper ``cmodel = jc.flax.Compressed(student, compressor)`` as the student
    (and no ``compressor=`` here) with ``nnx.Optimizer(cmodel, tx, wrt=nnx.Param)``; the
    step differentiates the model params and the :class:`~jaxcompress.flax.CompressionParam`
    variables together, and ``cmodel.update`` runs the compressor (its state then lives in
    the wrapper, and :class:`NNXDistillState` ``.compression`` is ``None``). A plain student
    is run through the same wrapper internally, with the compressor state in
    ``NNXDistillState.compression``.

    Teachers (``teacher=``): ``"module"``, frozen ``nnx.Module`` teacher(s) given to each
    step (a tuple of ``num_teachers`` with several; put them in eval mode with
    ``teacher.eval()``); ``"self"``, the student's own float (uncompressed) params; or
    ``"cached"``, logits in ``batch["teacher_logits"]``.

    Args:
      teacher: ``"module"``, ``"self"`` or ``"cached"``.
      compressor: the Compressor of the student's params (default ``jc.identity()``);
        leave it out when the student is a ``jc.flax.Compressed``.
      temperature: softmax temperature ``T > 0``, a float or an optax schedule.
      alpha: weight of the hard-label cross entropy (float or schedule in ``[0, 1]``);
        ``None``: 0.5 with labels, else 0.
      num_teachers: how many teacher modules each step gets (``teacher="module"``).
      teacher_weights: weights of the teachers' KD terms (default ``1 / K`` each).
      hints: FitNets feature terms (:class:`jaxcompress.flax.Hint`).
      attention: attention-transfer terms (:class:`jaxcompress.flax.AttentionTransfer`).
      augment: ``augment(key, x) -> x``, applied once; teacher and student see the same.
      student_kwargs: static keyword arguments of the student's ``__call__``.
      teacher_kwargs: static keyword arguments of the teachers' ``__call__``.
      projection_tx: optimizer of the hint projections (default: the student optimizer's
        ``tx``).

    Returns:
      An :class:`NNXDistiller` ``(init, step)``.

    Raises:
      ValueError: as :func:`jaxcompress.flax.distiller`; also for an unknown ``teacher``
        mode, a compressor with trainable variables on a plain (unwrapped) student, a
        ``compressor=`` beside a ``jc.flax.Compressed`` student, or teachers that do not
        match ``num_teachers``.
      TypeError: if ``compressor`` is not a ``jc.Compressor``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxcompress as jc
      >>> from flax import nnx
      >>> class MLP(nnx.Module):
      ...     def __init__(self, d, h, rngs):
      ...         self.Dense_0 = nnx.Linear(d, h, rngs=rngs)
      ...         self.Dense_1 = nnx.Linear(h, 10, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.Dense_1(nnx.relu(self.Dense_0(x)))
      >>> teacher, student = MLP(20, 64, nnx.Rngs(0)), MLP(20, 16, nnx.Rngs(1))
      >>> optimizer = nnx.Optimizer(student, optax.adam(1e-3), wrt=nnx.Param)
      >>> kd = jc.flax.nnx_distiller(compressor=jc.quant.qat(bits=4), temperature=4.0)
      >>> state = kd.init(student, optimizer, teacher)
      >>> x, y = jnp.ones((8, 20)), jnp.arange(8) % 10
      >>> state, metrics = kd.step(student, optimizer, state, {"x": x, "y": y}, teacher=teacher)
      >>> int(optimizer.step[...])
      1

    References:
      Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network";
      Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"; Zagoruyko & Komodakis 2017,
      "Paying More Attention to Attention".
    """
    fn = "nnx_distiller"
    if teacher not in ("module", "self", "cached"):
        raise ValueError(f"{fn}: teacher must be 'module', 'self' or 'cached', got {teacher!r}")
    if compressor is not None and not isinstance(compressor, Compressor):
        raise TypeError(
            f"{fn}: compressor must be a jc.Compressor, got {type(compressor).__name__}"
        )
    if isinstance(num_teachers, bool) or not isinstance(num_teachers, int) or num_teachers < 1:
        raise ValueError(f"{fn}: num_teachers must be a positive integer, got {num_teachers!r}")
    if teacher != "module" and num_teachers != 1:
        raise ValueError(f"{fn}: num_teachers={num_teachers} needs teacher='module'")
    setup = common.make_setup(
        fn,
        cached=teacher == "cached",
        use_teacher="use teacher='module'",
        num_teachers=num_teachers,
        loss=(temperature, alpha, teacher_weights, hints, attention),
        augment=augment,
        kwargs=(student_kwargs, teacher_kwargs),
    )
    capture_t = setup.capture_teachers
    mode = teacher
    comp = identity() if compressor is None else compressor  # of a plain student

    def check_teachers(teachers):
        if mode != "module":
            if teachers is not None:
                raise ValueError(f"{fn}(teacher={mode!r}) takes no teacher module")
            return ()
        ts = teachers if isinstance(teachers, (list, tuple)) else (teachers,)
        if (
            teachers is None
            or len(ts) != num_teachers
            or not all(isinstance(t, nnx.Module) for t in ts)
        ):
            raise ValueError(
                f"{fn}: pass teacher= {num_teachers} nnx.Module teacher(s), got {teachers!r}"
            )
        return tuple(ts)

    def check_student(student, where):
        """The student's compression wrapper, if it has one (see the docstring)."""
        if isinstance(student, Compressed):
            if compressor is not None and compressor is not student.compressor:
                raise ValueError(
                    f"{where}: the student is a jc.flax.Compressed with its own compressor; "
                    "build the distiller without compressor="
                )
            return True
        if not isinstance(student, nnx.Module):
            raise TypeError(f"{where}: student must be an nnx.Module, got {type(student)}")
        return False

    def check_compression(compression):
        if jax.tree.leaves(trainable(compression)):
            raise ValueError(
                f"{fn}: this compressor has trainable variables (e.g. LSQ step sizes, "
                "centroids), which nnx.Optimizer(student, tx, wrt=nnx.Param) does not train; "
                "wrap the student, cmodel = jc.flax.Compressed(student, compressor), and "
                "distil cmodel with nnx.Optimizer(cmodel, tx, wrt=nnx.Param)"
            )

    def wrap(student, compression):
        """The student as a ``Compressed`` module (a plain one wrapped on the fly)."""
        if isinstance(student, Compressed):
            return student
        return Compressed(student, comp, compression=compression)

    def teachers_forward(teachers, cmodel_def, params, rest, x):
        if mode == "self":
            # The student's own float params: the wrapped model, not its compressed view.
            own = nnx.merge(
                cmodel_def, jax.lax.stop_gradient(params), jax.tree.map(lambda v: v, rest)
            )
            outs = [_forward(own.model, x, capture=capture_t[0], kwargs=setup.teacher_kwargs)]
        else:
            outs = [
                _forward(t, x, capture=c, kwargs=setup.teacher_kwargs)
                for t, c in zip(teachers, capture_t, strict=True)
            ]
        return common.teacher_targets(outs, fn=fn)

    def init_fn(
        student: nnx.Module,
        optimizer: nnx.Optimizer,
        teacher: Any = None,
        *,
        sample_x: Any = None,
        key: jax.Array | None = None,
    ) -> NNXDistillState:
        """Creates the compression state and the hint projections.

        Args:
          student: the student ``nnx.Module``, or a ``jc.flax.Compressed`` wrapper of it
            (then its own compressor and state are used).
          optimizer: its ``nnx.Optimizer`` (its ``tx`` also trains the projections unless
            the distiller has a ``projection_tx``).
          teacher: the teacher module(s) (``teacher="module"``), used to check feature paths.
          sample_x: an input batch, needed with feature terms.
          key: PRNG key for projection params, needed when a hint has a projection.

        Returns:
          The :class:`NNXDistillState`.
        """
        wrapped = check_student(student, f"{fn}.init")
        if not isinstance(optimizer, nnx.Optimizer):
            raise TypeError(f"{fn}.init: optimizer must be an nnx.Optimizer, got {type(optimizer)}")
        compression = None
        if not wrapped:
            compression = comp.init(param_dict(student))
            check_compression(compression)
        projections = {}
        if setup.capture_student:
            teachers = check_teachers(teacher)
            if sample_x is None:
                raise ValueError(f"{fn}.init: hints / attention terms need sample_x (a batch)")
            cmodel_def, params, rest = nnx.split(wrap(student, compression), nnx.Param, ...)
            t_split = [nnx.split(t) for t in teachers]

            def shapes(params, rest, t_states, x):
                # Fresh copies: capturing never touches the caller's modules.
                ts = [nnx.merge(gd, st) for (gd, _), st in zip(t_split, t_states, strict=True)]
                _, t_feats = teachers_forward(ts, cmodel_def, params, rest, x)
                model = nnx.merge(cmodel_def, params, rest).model
                _, s_feats = _forward(model, x, capture=True, kwargs=setup.student_kwargs)
                return s_feats, t_feats

            s_feats, t_feats = jax.eval_shape(
                shapes, params, rest, [st for _, st in t_split], sample_x
            )
            projections = common.projections_for(setup.obj, s_feats, t_feats, key, fn=fn)
        tx = projection_tx if projection_tx is not None else optimizer.tx
        return NNXDistillState(compression, projections, tx.init(projections))

    @nnx.jit
    def _step(student, optimizer, state, batch, teachers, key):
        x, labels, mask, cached = common.unpack_batch(batch, fn=fn)
        if augment is not None and key is None:
            raise ValueError(f"{fn}: augment needs a key: step(..., key=key)")
        x, key = common.augment_batch(augment, x, key)
        wrapped = isinstance(student, Compressed)
        if not wrapped:
            check_compression(state.compression)
        cmodel = wrap(student, state.compression)
        cmodel_def, params, rest = nnx.split(cmodel, nnx.Param, ...)
        if mode == "cached":
            targets = common.cached_targets(
                cached,
                missing=f"{fn}(teacher='cached'): each batch needs a 'teacher_logits' entry "
                "(see jc.distill.teacher_logits)",
            )
        else:
            targets = teachers_forward(teachers, cmodel_def, params, rest, x)
        step = optimizer.step[...]

        def loss_fn(pure, projections):
            # Fresh Variables for this trace (rest holds the step-level ones, e.g. rng counts).
            model = nnx.merge(
                cmodel_def, _with_values(params, pure), jax.tree.map(lambda v: v, rest)
            )
            out, s_feats = _forward(
                model.compressed_model(),
                x,
                capture=setup.capture_student,
                kwargs=setup.student_kwargs,
            )
            total, metrics = common.loss_and_metrics(
                setup.obj, out, s_feats, targets, fn=fn, step=step, labels=labels, mask=mask,
                projections=projections,
            )  # fmt: skip
            new_rest = nnx.split(model, nnx.Param, ...)[2]
            return total, (metrics, new_rest)

        (g_pure, g_proj), (metrics, new_rest) = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(
            nnx.to_pure_dict(params), state.projections
        )
        nnx.update(cmodel, new_rest)
        if wrapped:  # the optimizer trains the wrapper: params and CompressionParams
            optimizer.update(student, _with_values(params, g_pure))
        else:  # the optimizer trains the plain student's params
            optimizer.update(student, _with_values(nnx.state(student, nnx.Param), g_pure["model"]))
        cmodel.update(g_pure)  # compressor.update; its params are written back to the model
        compression = None if wrapped else cmodel.compression_state
        tx = projection_tx if projection_tx is not None else optimizer.tx
        projections, proj_opt = common.update_projections(
            tx, g_proj, state.projection_opt_state, state.projections
        )
        return NNXDistillState(compression, projections, proj_opt), metrics

    def step_fn(student, optimizer, state, batch, *, teacher=None, key=None):
        check_student(student, fn)
        teachers = check_teachers(teacher)
        if not isinstance(state, NNXDistillState):
            raise TypeError(f"{fn}: state must come from init, got {type(state).__name__}")
        return _step(student, optimizer, state, batch, teachers, key)

    return NNXDistiller(init_fn, step_fn)
