"""Training and evaluation for the command: models, optimizers, batches, phases, metrics."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcompress as jc
from jaxcompress import io as ckpt
from jaxcompress.cli._errors import Interrupted, UsageError, one_line
from jaxcompress.cli._progress import Progress

CLASSIFICATION = "classification"
LANGUAGE_MODEL = "language_model"
# Model attributes the command fills in from the data set when the recipe leaves them out.
_FROM_DATA = ("num_classes", "vocab_size")


def task_of(ds: jc.workloads.Dataset) -> str:
    """``language_model`` for next-token targets ``[n, seq]``, else ``classification``."""
    return LANGUAGE_MODEL if np.ndim(ds.y_train) == 2 else CLASSIFICATION


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


def model_classes() -> list[str]:
    """Names of the linen model classes in ``jc.workloads``."""
    return sorted(
        n
        for n in jc.workloads.__all__
        if isinstance(getattr(jc.workloads, n), type)
        and issubclass(getattr(jc.workloads, n), nn.Module)
    )


def build_model(name: str, kwargs: Mapping[str, Any], num_classes: int) -> tuple[nn.Module, dict]:
    """Instantiates ``jc.workloads.<name>(**kwargs)``.

    ``num_classes`` / ``vocab_size`` attributes left out of ``kwargs`` are set from the data.

    Returns:
      ``(model, resolved_kwargs)``; the kwargs are JSON-compatible (for the artifact).

    Raises:
      UsageError: for an unknown model or bad attributes.
    """
    cls = getattr(jc.workloads, name, None) if not name.startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UsageError(
            f"config model.name {name!r} is not a model of jc.workloads; known: "
            + ", ".join(model_classes())
        )
    kwargs = _tuples(dict(kwargs))
    fields = {f.name for f in dataclasses.fields(cls)}
    for f in _FROM_DATA:
        if f in fields and f not in kwargs:
            kwargs[f] = int(num_classes)
    unknown = sorted(set(kwargs) - fields - {"parent", "name"})
    if unknown:
        valid = sorted(fields - {"parent", "name"})
        raise UsageError(
            f"config model.kwargs: {name} has no attribute(s) {', '.join(unknown)}; "
            f"it has: {', '.join(valid)}"
        )
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"config model.kwargs: {name}: {one_line(e)}") from None
    return model, json.loads(json.dumps(kwargs))


# Jitted once per process: linen modules are hashable, so the compiled init and evaluation
# are shared by every run of the same model (a sweep, a test session).
@functools.partial(jax.jit, static_argnums=0)
def _init(model: nn.Module, key: jax.Array, x: jax.Array) -> Any:
    return model.init(key, x)


@functools.partial(jax.jit, static_argnums=0)
def _eval_sums(model: nn.Module, params: Any, x: jax.Array, y: jax.Array, w: jax.Array):
    logits = model.apply({"params": params}, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    if loss.ndim == 2:  # [batch, seq]: every position counts
        loss, correct = loss.sum(-1), correct.sum(-1)
    return jnp.sum(loss * w), jnp.sum(correct * w)


def param_shapes(model: nn.Module, example: np.ndarray, num_classes: int) -> Any:
    """The params' shapes (nothing compiled); checks the output has ``num_classes`` logits.

    Raises:
      UsageError: if the model rejects the data or its output width does not match.
    """
    x = jnp.asarray(example[:1])
    try:
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
        out = jax.eval_shape(lambda p: model.apply({"params": p}, x), shapes)
    except (TypeError, ValueError) as e:
        raise UsageError(
            f"model {type(model).__name__} does not fit the data: {one_line(e)}"
        ) from None
    if out.shape[-1] != num_classes:
        raise UsageError(
            f"model {type(model).__name__} gives {out.shape[-1]} outputs but the data "
            f"set has {num_classes} classes; fix config model.kwargs"
        )
    return shapes


def init_params(model: nn.Module, example: np.ndarray, seed: int, num_classes: int) -> Any:
    """``model.init`` on one example, after the checks of :func:`param_shapes`.

    Raises:
      UsageError: if the model rejects the data or its output width does not match.
    """
    param_shapes(model, example, num_classes)
    return _init(model, jax.random.key(seed), jnp.asarray(example[:1]))["params"]


def make_schedule(train: Any, steps: int, lr: float | None = None) -> optax.Schedule:
    """The learning-rate schedule of ``config.train`` over ``steps`` steps (peak ``lr`` or
    ``train.lr``)."""
    lr = float(train.lr if lr is None else lr)
    if train.schedule == "constant":
        return optax.constant_schedule(lr)
    if train.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(steps, 1))
    if train.schedule == "linear":
        return optax.linear_schedule(lr, 0.0, max(steps, 1))
    warm = min(int(train.warmup_steps), max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(steps, warm + 1))


def make_optimizer(train: Any, steps: int, lr: float | None = None) -> optax.GradientTransformation:
    """``optax.<train.optimizer>(learning_rate=schedule, **train.optimizer_kwargs)``.

    Raises:
      UsageError: for an unknown optimizer or arguments it rejects.
    """
    name = train.optimizer
    fn = getattr(optax, name, None) if not name.startswith("_") else None
    if not callable(fn) or isinstance(fn, type):
        raise UsageError(
            f"config train.optimizer {name!r} is not an optax optimizer "
            "(e.g. adam, adamw, sgd, lion)"
        )
    kwargs = _tuples(train.optimizer_kwargs.to_dict())
    try:
        tx = fn(learning_rate=make_schedule(train, steps, lr), **kwargs)
    except (TypeError, ValueError) as e:
        raise UsageError(f"config train.optimizer {name}: {one_line(e)}") from None
    if not isinstance(tx, optax.GradientTransformation):
        raise UsageError(f"config train.optimizer {name!r} is not an optax optimizer")
    return tx


def num_steps(train: Any, n_train: int) -> int:
    """Steps of a phase: ``train.steps``, or ``ceil(epochs * n_train / batch_size)``."""
    if train.steps is not None:
        return int(train.steps)
    return max(1, math.ceil(float(train.epochs) * (n_train // int(train.batch_size))))


class BatchSource:
    """The batch of any step, in the order of ``jc.workloads.batches(x, y, bs, seed=seed)``.

    Random access makes resuming at step ``k`` exact and free (no replay of ``k`` batches).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
        if not 1 <= batch_size <= len(x):
            raise UsageError(
                f"config train.batch_size must be in 1..{len(x)} (the training split "
                f"size), got {batch_size}"
            )
        self.x, self.y, self.bs, self.seed = x, y, batch_size, seed
        self.per_epoch = len(x) // batch_size
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        idx = self._perm[i * self.bs : (i + 1) * self.bs]
        return self.x[idx], self.y[idx]


def make_train_step(
    distill_fn: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    weight: float = 0.5,
    teacher_apply: Callable[..., jax.Array] | None = None,
) -> Callable:
    """A jitted ``(state, x, y, teacher=None) -> (state, loss)`` for a ``jc.flax.TrainState``.

    The loss is the cross-entropy with the labels. With ``distill_fn`` and teacher params, it
    is ``(1 - weight) * cross_entropy + weight * mean(distill_fn(student_logits,
    teacher_logits))``, the teacher run inside the step under ``stop_gradient``.

    Args:
      distill_fn: ``(student_logits, teacher_logits) -> loss`` (any shape; averaged).
      weight: weight of the distillation term, in ``[0, 1]``.
      teacher_apply: the teacher model's ``apply`` (e.g. a bigger model's); ``None``: the
        student's own ``state.apply_fn`` with the teacher's params.
    """

    def train_step(state, x, y, teacher=None):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            if distill_fn is not None and teacher is not None:
                t_apply = state.apply_fn if teacher_apply is None else teacher_apply
                t_logits = jax.lax.stop_gradient(t_apply({"params": teacher}, x))
                kd = jnp.mean(distill_fn(logits, t_logits))
                loss = (1.0 - weight) * loss + weight * kd
            return loss

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    return jax.jit(train_step)


class Evaluator:
    """Loss and accuracy (and perplexity for a language model) of params on a split.

    One jitted function per model; the last partial batch is padded and masked, so every
    split evaluates with one compiled shape.
    """

    def __init__(self, model: nn.Module, task: str, batch_size: int, max_examples: int | None):
        self.model, self.task, self.bs, self.max_examples = model, task, batch_size, max_examples
        self._finalize = jax.jit(lambda s: s.finalized_params())

    def finalized(self, state: Any) -> Any:
        """The compressed (finalized) params of a TrainState."""
        return self._finalize(state)

    def __call__(self, params: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        n = len(x) if self.max_examples is None else min(len(x), self.max_examples)
        bs = min(self.bs, n)
        loss = correct = 0.0
        for i in range(0, n, bs):
            xb, yb = x[i : min(i + bs, n)], y[i : min(i + bs, n)]
            w = np.ones(bs, np.float32)
            if len(xb) < bs:
                pad = bs - len(xb)
                w[len(xb) :] = 0
                xb = np.concatenate([xb, np.repeat(xb[:1], pad, 0)])
                yb = np.concatenate([yb, np.repeat(yb[:1], pad, 0)])
            batch_loss, batch_correct = _eval_sums(self.model, params, xb, yb, w)
            loss += float(batch_loss)
            correct += float(batch_correct)
        per = n * (y.shape[1] if y.ndim == 2 else 1)
        out = {"loss": loss / per, "accuracy": correct / per, "examples": n}
        if self.task == LANGUAGE_MODEL:
            out["perplexity"] = math.exp(min(out["loss"], 700.0))
        return out


def empty_history() -> dict[str, list]:
    return {"step": [], "loss": [], "val_step": [], "val_loss": [], "val_accuracy": []}


@dataclasses.dataclass
class PhaseResult:
    """What a training phase leaves behind."""

    state: Any  # the final jc.flax.TrainState
    history: dict[str, list]  # curves (see empty_history)
    seconds: float  # wall time of the steps run in this process (compile included)
    steps_run: int  # steps run in this process (0 when restored complete)
    steps_per_second: float | None  # after the first step (no compile); None if < 2 steps


def run_phase(
    name: str,
    directory: pathlib.Path,
    state: Any,
    total: int,
    train_step: Callable,
    batches: BatchSource,
    *,
    evaluate_val: Callable[[Any], dict[str, float]] | None,
    eval_every: int,
    log_every: int,
    checkpoint_every: int,
    max_to_keep: int,
    progress: Progress,
    run_dir: str,
    teacher: Any = None,
    eval_at_start: bool = False,
) -> PhaseResult:
    """Trains ``state`` to ``total`` steps, resuming from ``directory/ckpt`` if it has a checkpoint.

    Checkpoints every ``checkpoint_every`` steps, at the end, and on Ctrl-C (then raises
    :class:`Interrupted`). The history (training loss every ``log_every`` steps, validation
    metrics every ``eval_every``) is saved with each checkpoint in ``directory/history.json``.
    ``teacher`` params, if given, go to every ``train_step`` (distillation).
    ``eval_at_start`` adds a validation point at step 0 (e.g. right after compression).
    """
    directory.mkdir(parents=True, exist_ok=True)
    hist_file = directory / "history.json"
    manager = ckpt.checkpoint_manager(directory / "ckpt", max_to_keep=max_to_keep)
    try:
        history = empty_history()
        start = ckpt.latest_step(manager)
        if start is not None:
            state = ckpt.restore(manager, state, start)
            if hist_file.exists():
                saved = json.loads(hist_file.read_text())
                history = {k: saved.get(k, []) for k in history}
                keep = sum(1 for s in history["step"] if s <= start)
                vkeep = sum(1 for s in history["val_step"] if s <= start)
                for k in ("step", "loss"):
                    history[k] = history[k][:keep]
                for k in ("val_step", "val_loss", "val_accuracy"):
                    history[k] = history[k][:vkeep]
        start = int(start or 0)
        if start > total:
            raise UsageError(
                f"{name}: the checkpoint in {directory} is at step {start}, past the "
                f"{total} steps of this config"
            )

        def save(step):
            if ckpt.latest_step(manager) != step:
                ckpt.save(manager, step, state)
            hist_file.write_text(json.dumps(history) + "\n")

        if eval_at_start and start == 0 and evaluate_val is not None and eval_every:
            m = evaluate_val(state)
            history["val_step"].append(0)
            history["val_loss"].append(m["loss"])
            history["val_accuracy"].append(m["accuracy"])
        t0 = time.perf_counter()
        t1 = None
        losses: list[Any] = []
        progress.start(name, total, start)
        try:
            for step in range(start, total):
                x, y = batches(step)
                state, loss = train_step(state, x, y, teacher)
                losses.append(loss)
                done = step + 1
                if done == start + 1:
                    jax.block_until_ready(loss)
                    t1 = time.perf_counter()
                if done % log_every == 0 or done == total:
                    history["step"].append(done)
                    history["loss"].append(float(np.mean(jax.device_get(losses))))
                    losses = []
                    progress.set_loss(history["loss"][-1])
                if (
                    evaluate_val is not None
                    and eval_every
                    and (done % eval_every == 0 or done == total)
                ):
                    m = evaluate_val(state)
                    history["val_step"].append(done)
                    history["val_loss"].append(m["loss"])
                    history["val_accuracy"].append(m["accuracy"])
                if checkpoint_every and done % checkpoint_every == 0 and done < total:
                    save(done)
                progress.advance()
            jax.block_until_ready(state)
            t_end = time.perf_counter()
            save(total)
        except KeyboardInterrupt:
            done = int(state.step)
            save(done)
            raise Interrupted(name, done, total, run_dir) from None
        finally:
            progress.stop()
    finally:
        manager.close()
    run = total - start
    sps = (run - 1) / (t_end - t1) if run >= 2 and t1 is not None and t_end > t1 else None
    return PhaseResult(state, history, t_end - t0, run, sps)
