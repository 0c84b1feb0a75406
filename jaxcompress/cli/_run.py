"""``jaxcompress run``: float baseline, compressed training, evaluation, export, report."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import jaxcompress as jc
from jaxcompress import io as ckpt
from jaxcompress.cli import _artifact, _report, _spec, _train
from jaxcompress.cli import _config as config_lib
from jaxcompress.cli._errors import UsageError, one_line
from jaxcompress.cli._progress import Progress

# Files and folders of a run folder that a fresh run replaces (nothing else is touched).
_RUN_FILES = ("report.json", "report.md", "curves.png", "layers.png")
_RUN_DIRS = ("baseline", "compressed", "artifact")


@dataclasses.dataclass
class Loaded:
    """Everything a run builds from its config before training."""

    ds: Any  # jc.workloads.Dataset
    task: str  # classification | language_model
    model: Any  # flax linen module
    model_kwargs: dict  # its resolved attributes
    params: Any  # initial float params
    compressor: jc.Compressor  # jc.rules(...) of the recipe
    hparams_used: set  # hyper-parameter names the rule specs refer to
    steps: int  # compressed-phase steps
    baseline_steps: int | None  # baseline steps (None: no baseline)
    distill_fn: Callable | None  # (student_logits, teacher_logits) -> loss, or None
    baseline_model: Any = None  # the baseline's (teacher's) linen module; None: `model`
    baseline_model_kwargs: dict | None = None  # its resolved attributes
    baseline_params: Any = None  # its initial float params; None: `params`


def load_data(name: str, kwargs: dict[str, Any]) -> Any:
    """Loads a data set by name; a missing package is a one-line UsageError."""
    try:
        return jc.workloads.load(name, **_train._tuples(dict(kwargs)))
    except jc.workloads.DataNotFoundError as e:
        raise UsageError(one_line(e)) from None
    except (TypeError, ValueError) as e:
        raise UsageError(f"config data: {one_line(e)}") from None


def build(cfg: Any) -> Loaded:
    """Data, model, initial params and Compressor of a validated config.

    Raises:
      UsageError: for anything the config gets wrong (data, model, rules, specs).
    """
    # The specs first: a typo there is reported before any data is loaded.
    comp, used = _spec.build_compressor(cfg.compress.rules, config_lib.hparams(cfg))
    ds = load_data(cfg.data.name, cfg.data.kwargs.to_dict())
    task = _train.task_of(ds)
    model, kwargs = _train.build_model(cfg.model.name, cfg.model.kwargs.to_dict(), ds.num_classes)
    shapes = _train.param_shapes(model, ds.x_train, ds.num_classes)
    try:
        jax.eval_shape(comp.init, shapes)  # rule and spec errors before anything compiles
    except (TypeError, ValueError) as e:
        raise UsageError(f"config compress.rules: {one_line(e)}") from None
    distill_fn = None
    if cfg.distill.loss:
        try:
            fn = _spec.resolve(cfg.distill.loss)
        except UsageError as e:
            raise UsageError(f"config distill.loss: {e}") from None
        distill_fn = functools.partial(fn, **_train._tuples(cfg.distill.kwargs.to_dict()))
        x2 = jnp.asarray(ds.x_train[:2])
        logits = jax.eval_shape(lambda p: model.apply({"params": p}, x2), shapes)
        try:
            jax.eval_shape(distill_fn, logits, logits)
        except (TypeError, ValueError) as e:
            raise UsageError(f"config distill.loss {cfg.distill.loss}: {one_line(e)}") from None
    params = _train.init_params(model, ds.x_train, int(cfg.train.seed), ds.num_classes)
    steps = _train.num_steps(cfg.train, len(ds.x_train))
    bsteps = None
    if cfg.baseline.enabled:
        bsteps = int(cfg.baseline.steps) if cfg.baseline.steps is not None else steps
    loaded = Loaded(ds, task, model, kwargs, params, comp, used, steps, bsteps, distill_fn)
    bm = cfg.baseline.model
    if cfg.baseline.enabled and (bm.name or bm.kwargs.keys()):
        try:
            bmodel, bkwargs = _train.build_model(
                bm.name or cfg.model.name, bm.kwargs.to_dict(), ds.num_classes
            )
        except UsageError as e:
            raise UsageError(str(e).replace("config model.", "config baseline.model.")) from None
        loaded.baseline_model, loaded.baseline_model_kwargs = bmodel, bkwargs
        loaded.baseline_params = _train.init_params(
            bmodel, ds.x_train, int(cfg.train.seed), ds.num_classes
        )
    return loaded


def _writable_dir(out: pathlib.Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"output directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out}: {e.strerror or e}") from None


def check_out(out: pathlib.Path, cfg: Any, resume: bool) -> None:
    """Checks the run folder is writable and, on --resume, that the config matches the saved one.

    Raises:
      UsageError: unwritable folder, nothing to resume, or a different config.
    """
    _writable_dir(out)
    cfg_file = out / "config.json"
    plain = config_lib.to_plain(cfg)
    if resume:
        if not cfg_file.exists():
            raise UsageError(
                f"--resume: {out} holds no run to resume (no config.json); run without --resume"
            )
        try:
            saved = json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(f"--resume: cannot read {cfg_file}: {e}") from None
        changed = [k for k in config_lib.diff(saved, plain) if not k.startswith("output.")]
        if changed:
            raise UsageError(
                f"--resume: the config differs from the run in {out} at {', '.join(changed)}; "
                "resume with the same recipe and overrides, or start a new run"
            )


def reset_out(out: pathlib.Path, cfg: Any) -> None:
    """Starts a fresh run folder: removes the files a previous run wrote (nothing else) and
    saves the config."""
    for d in _RUN_DIRS:
        if (out / d).exists():
            shutil.rmtree(out / d)
    for f in _RUN_FILES:
        (out / f).unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(config_lib.to_plain(cfg), indent=1) + "\n")


def _new_state(model: Any, params: Any, tx: Any, comp: jc.Compressor) -> Any:
    def create(p):
        st = jc.flax.TrainState.create(apply_fn=model.apply, params=p, tx=tx, compressor=comp)
        return st.replace(step=jnp.zeros([], jnp.int32))

    # Jitted: compressor.init (e.g. the sort-free top-k of pruning) runs compiled, not op by op.
    return jax.jit(create)(params)


def _environment() -> dict[str, Any]:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def run(
    config_file: str,
    cfg: Any,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overrides: Sequence[str] = (),
    baseline_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    echo: Callable[[str], None] = print,
    verbose: bool = True,
) -> dict[str, Any]:
    """Runs a recipe end to end and writes the run folder; returns the report dict.

    Args:
      config_file: the recipe's path (for the report and messages).
      cfg: the merged, overridden config.
      out: the run folder (default ``cfg.output.dir``).
      resume: continue the run in ``out`` from its checkpoints.
      overrides: the ``--config.`` arguments given (for the report and the resume hint).
      baseline_dir: where the float baseline's checkpoint lives (default ``out/baseline``); a
        sweep shares one between points. A complete checkpoint there is reused.
      progress: the progress bar (default: on a terminal only).
      echo: where to print results.
      verbose: print the data/model line and the summary table.

    Raises:
      UsageError: for config, data or output-folder problems (before any training).
      Interrupted: on Ctrl-C, after writing a resumable checkpoint.
    """
    t_start = time.perf_counter()
    config_lib.validate(cfg)
    out = pathlib.Path(out or cfg.output.dir)
    check_out(out, cfg, resume)
    L = build(cfg)  # every config problem surfaces here, before the folder is touched
    if not resume:
        reset_out(out, cfg)
    ds, task = L.ds, L.task
    progress = progress or Progress()
    train_step = _train.make_train_step(
        L.distill_fn,
        float(cfg.distill.weight),
        None if L.baseline_model is None else L.baseline_model.apply,
    )
    evaluator = _train.Evaluator(L.model, task, int(cfg.eval.batch_size), cfg.eval.max_examples)
    batches = _train.BatchSource(
        ds.x_train, ds.y_train, int(cfg.train.batch_size), int(cfg.train.seed)
    )
    num_params = _num_params(L.params)
    if verbose:
        echo(
            f"data {ds.name}: {len(ds.x_train):,} train / {len(ds.x_val):,} val / "
            f"{len(ds.x_test):,} test; model {cfg.model.name} ({num_params:,} params); "
            f"run folder {out}"
        )

    def val_fn(state):
        return evaluator(evaluator.finalized(state), ds.x_val, ds.y_val)

    common = dict(
        eval_every=int(cfg.eval.every),
        log_every=int(cfg.train.log_every),
        checkpoint_every=int(cfg.output.checkpoint_every),
        max_to_keep=int(cfg.output.max_to_keep),
        progress=progress,
        run_dir=str(out),
        evaluate_val=val_fn,
    )
    history, timing, metrics = {}, {}, {"float": None}
    start_params, teacher = L.params, None
    if L.baseline_steps is not None:
        tx = _train.make_optimizer(cfg.train, L.baseline_steps, cfg.baseline.lr)
        if L.baseline_model is None:
            bmodel, bparams, bevaluator = L.model, L.params, evaluator
        else:  # another model (a bigger teacher): its own evaluation
            bmodel, bparams = L.baseline_model, L.baseline_params
            bevaluator = _train.Evaluator(
                bmodel, task, int(cfg.eval.batch_size), cfg.eval.max_examples
            )
        state = _new_state(bmodel, bparams, tx, jc.identity())
        bdir = pathlib.Path(baseline_dir) if baseline_dir is not None else out / "baseline"
        res = _train.run_phase(
            "baseline",
            bdir,
            state,
            L.baseline_steps,
            train_step,
            batches,
            **{
                **common,
                "evaluate_val": lambda st: bevaluator(st.params, ds.x_val, ds.y_val),
            },
        )
        history["baseline"] = res.history
        timing["baseline"] = {
            "seconds": res.seconds,
            "steps_run": res.steps_run,
            "steps_per_second": res.steps_per_second,
        }
        metrics["float"] = bevaluator(res.state.params, ds.x_test, ds.y_test)
        if cfg.baseline.warm_start:
            start_params = res.state.params
        if L.distill_fn is not None:
            teacher = res.state.params
        if verbose:
            echo(
                f"float baseline: {L.baseline_steps} steps ({res.steps_run} run, "
                f"{res.seconds:.1f} s); test {_describe(metrics['float'], task)}"
            )

    tx = _train.make_optimizer(cfg.train, L.steps)
    state = _new_state(L.model, start_params, tx, L.compressor)
    res = _train.run_phase(
        "compressed",
        out / "compressed",
        state,
        L.steps,
        train_step,
        batches,
        teacher=teacher,
        eval_at_start=True,
        **common,
    )
    state = res.state
    history["compressed"] = res.history
    timing["compressed"] = {
        "seconds": res.seconds,
        "steps_run": res.steps_run,
        "steps_per_second": res.steps_per_second,
    }
    final = evaluator.finalized(state)
    metrics["compressed"] = evaluator(final, ds.x_test, ds.y_test)
    metrics["accuracy_drop_pp"] = (
        None
        if metrics["float"] is None
        else 100 * (metrics["float"]["accuracy"] - metrics["compressed"]["accuracy"])
    )
    summ = jc.summary(L.compressor, state.params, state.compression)
    if verbose:
        echo(
            f"compressed: {L.steps} steps ({res.steps_run} run, {res.seconds:.1f} s); test "
            f"{_describe(metrics['compressed'], task)}"
        )

    # Export: the finalized (compressed-view) params, with what `eval` needs to run them.
    meta = {
        "model": {"name": cfg.model.name, "kwargs": L.model_kwargs},
        "data": {"name": cfg.data.name, "kwargs": config_lib.to_plain(cfg.data.kwargs)},
        "task": task,
        "eval": {"batch_size": int(cfg.eval.batch_size), "max_examples": cfg.eval.max_examples},
        "summary": summ.to_dict(),
        "metrics": {"float": metrics["float"], "compressed": metrics["compressed"]},
        "config_file": str(config_file),
    }
    storage = _artifact.save(out / "artifact", final, meta)["storage"]
    artifact_bytes = ckpt.disk_bytes(out / "artifact")
    ckpt_bytes = ckpt.disk_bytes(out / "compressed" / "ckpt" / str(L.steps))

    plots = []
    if cfg.output.plots and not _report.have_matplotlib():
        echo("plots skipped: matplotlib is not installed (pip install matplotlib)")
    elif cfg.output.plots:
        offset = L.baseline_steps if (L.baseline_steps and cfg.baseline.warm_start) else 0
        _report.plot_curves(out / "curves.png", history, task, offset)
        _report.plot_layers(out / "layers.png", summ.to_dict())
        plots = ["curves.png", "layers.png"]
    report = {
        "jaxcompress": jc.__version__,
        "name": pathlib.Path(config_file).stem,
        "config_file": str(config_file),
        "overrides": list(overrides),
        "run_dir": str(out),
        "config": config_lib.to_plain(cfg),
        "task": task,
        "data": {
            "name": ds.name,
            "train": len(ds.x_train),
            "val": len(ds.x_val),
            "test": len(ds.x_test),
            "num_classes": ds.num_classes,
        },
        "model": {"name": cfg.model.name, "kwargs": L.model_kwargs, "num_params": num_params},
        "steps": {"baseline": L.baseline_steps, "compressed": L.steps},
        "distill": (
            {
                "loss": cfg.distill.loss,
                "kwargs": config_lib.to_plain(cfg.distill.kwargs),
                "weight": float(cfg.distill.weight),
                "teacher": "float baseline"
                + (
                    ""
                    if L.baseline_model is None
                    else f" ({cfg.baseline.model.name or cfg.model.name}, "
                    f"{_num_params(L.baseline_params):,} params)"
                ),
            }
            if L.distill_fn is not None
            else None
        ),
        "metrics": metrics,
        "summary": summ.to_dict(),
        "size": {
            "float32_bytes": summ.float32_bytes,
            "logical_bytes": summ.logical_bytes,
            "ratio": summ.ratio,
            "artifact_file_bytes": storage["file_bytes"],
            "artifact_ratio": storage["ratio"],
            "artifact_disk_bytes": artifact_bytes,
            "checkpoint_disk_bytes": ckpt_bytes,
        },
        "timing": {**timing, "total_seconds": time.perf_counter() - t_start},
        "history": history,
        "files": {
            "report_md": "report.md",
            "plots": plots,
            "artifact": "artifact",
            "checkpoint": "compressed/ckpt",
        },
        "environment": _environment(),
    }
    _report.write(out, report)
    if verbose:
        echo(str(summ))
        echo(result_line(report))
        echo(
            f"wrote {out}/report.md, report.json"
            + (", curves.png, layers.png" if plots else "")
            + f", artifact/ ({_artifact.PARAMS_FILE} "
            f"{_report.fmt_bytes(storage['file_bytes'])}), checkpoints"
        )
    return report


def _num_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


def _describe(m: dict[str, Any], task: str) -> str:
    if task == _train.LANGUAGE_MODEL:
        return (
            f"loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, "
            f"char accuracy {100 * m['accuracy']:.2f}%"
        )
    return f"accuracy {100 * m['accuracy']:.2f}% (loss {m['loss']:.4f})"


def result_line(report: dict[str, Any]) -> str:
    """``float 97.60% -> compressed 97.20% (-0.40 pp), 7.52x smaller``."""
    m, size = report["metrics"], report["size"]
    comp = m["compressed"]
    parts = []
    if m["float"] is not None:
        parts.append(
            f"test accuracy: float {100 * m['float']['accuracy']:.2f}% -> compressed "
            f"{100 * comp['accuracy']:.2f}% (drop {m['accuracy_drop_pp']:.2f} pp)"
        )
    else:
        parts.append(f"test accuracy: {100 * comp['accuracy']:.2f}%")
    if report["task"] == _train.LANGUAGE_MODEL:
        if m["float"] is not None:
            parts.append(f"perplexity {m['float']['perplexity']:.2f} -> {comp['perplexity']:.2f}")
        else:
            parts.append(f"perplexity {comp['perplexity']:.2f}")
    parts.append(
        f"size {_report.fmt_bytes(size['float32_bytes'])} -> "
        f"{_report.fmt_bytes(size['logical_bytes'])} ({size['ratio']:.2f}x smaller)"
    )
    if size.get("artifact_file_bytes") is not None:
        parts.append(
            f"artifact file {_report.fmt_bytes(size['artifact_file_bytes'])} "
            f"({size['artifact_ratio']:.2f}x smaller)"
        )
    return "; ".join(parts)
