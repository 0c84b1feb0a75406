"""``jaxcompress inspect`` and ``jaxcompress eval`` of an exported artifact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax

import jaxcompress as jc
from jaxcompress import io as ckpt
from jaxcompress.cli import _artifact, _report, _run, _train
from jaxcompress.cli._errors import UsageError, one_line


def _meta(path: str) -> dict[str, Any]:
    try:
        return _artifact.load_meta(path)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(one_line(e)) from None


def summary_from_dict(d: dict[str, Any]) -> jc.Summary:
    """Rebuilds a :class:`jaxcompress.Summary` from its ``to_dict()`` form."""
    rows = tuple(jc.LeafSummary(**{**r, "shape": tuple(r["shape"])}) for r in d["leaves"])
    return jc.Summary(rows, int(d["state_bytes"]), int(d.get("param_bytes", 0)))


def inspect(path: str, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Prints what an artifact holds: model, data, per-layer summary, storage, metrics.

    Raises:
      UsageError: if ``path`` holds no readable artifact.
    """
    meta = _meta(path)
    d = _artifact.find(path)
    try:
        info = ckpt.artifact_info(_artifact.params_file(d))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read artifact {path}: {one_line(e)}") from None
    kw = ", ".join(f"{k}={v}" for k, v in meta["model"]["kwargs"].items())
    echo(
        f"artifact {d}: model {meta['model']['name']}({kw}); data {meta['data']['name']}; "
        f"task {meta['task']}; recipe {meta.get('config_file', '?')}"
    )
    echo(str(summary_from_dict(meta["summary"])))
    echo(f"storage ({_artifact.PARAMS_FILE}):")
    echo(str(info))
    layouts: dict[str, int] = {}
    for leaf in info.leaves:
        layouts[leaf.layout] = layouts.get(leaf.layout, 0) + 1
    echo(
        "storage: "
        + ", ".join(f"{n} {k} leaves" for k, n in sorted(layouts.items()))
        + f"; params file {_report.fmt_bytes(info.file_bytes)}, artifact folder "
        + f"{_report.fmt_bytes(ckpt.disk_bytes(d))} on disk"
    )
    m = meta.get("metrics") or {}
    parts = []
    for name in ("float", "compressed"):
        if m.get(name):
            parts.append(f"{name} {_describe(m[name])}")
    if parts:
        echo("test metrics at export: " + "; ".join(parts))
    return meta


def _describe(m: dict[str, Any]) -> str:
    s = f"accuracy {100 * m['accuracy']:.2f}%, loss {m['loss']:.4f}"
    if "perplexity" in m:
        s += f", perplexity {m['perplexity']:.2f}"
    return s


def evaluate(path: str, *, split: str = "test", echo: Callable[[str], None] = print) -> dict:
    """Runs the exported model, as stored, on a split of its data set and prints the metrics.

    Raises:
      UsageError: no artifact, missing data set, or params that do not fit the model.
    """
    _meta(path)
    try:
        params, meta = _artifact.load(path)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UsageError(f"cannot read artifact {path}: {one_line(e)}") from None
    ds = _run.load_data(meta["data"]["name"], meta["data"]["kwargs"])
    model, _ = _train.build_model(meta["model"]["name"], meta["model"]["kwargs"], ds.num_classes)
    ev = meta.get("eval", {})
    evaluator = _train.Evaluator(
        model, meta["task"], int(ev.get("batch_size", 500)), ev.get("max_examples")
    )
    x, y = ds.split(split)
    try:
        metrics = evaluator(params, x, y)
    except (TypeError, ValueError, flax.errors.FlaxError) as e:
        raise UsageError(
            f"artifact {path} does not fit model {meta['model']['name']}: {one_line(e)}"
        ) from None
    line = f"{meta['model']['name']} on {ds.name} {split} ({metrics['examples']:,} examples): "
    line += _describe(metrics)
    rec = (meta.get("metrics") or {}).get("compressed")
    if split == "test" and rec:
        same = rec["accuracy"] == metrics["accuracy"] and rec["loss"] == metrics["loss"]
        line += f"; at export {100 * rec['accuracy']:.2f}%" + (
            " (identical)" if same else " (DIFFERENT)"
        )
    echo(line)
    return metrics
