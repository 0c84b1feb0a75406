"""``jaxcompress sweep``: a grid of runs, a table, a Pareto plot and the smallest good model."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import pathlib
import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from jaxcompress.cli import _config as config_lib
from jaxcompress.cli import _report, _run, _spec
from jaxcompress.cli._errors import UsageError
from jaxcompress.cli._progress import Progress

_SWEEP_FILES = ("sweep.json", "sweep.md", "pareto.png")


def parse_grid(cfg: Any, grid: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """Parses ``["compress.bits=2,4,8", ...]`` into ``[("compress.bits", [2, 4, 8]), ...]``.

    Each value is parsed to the type of the config value it replaces (as for overrides).

    Raises:
      UsageError: for a malformed entry, an unknown key (valid keys listed), a repeated key,
        or a value of the wrong type.

    Example:
      >>> cfg = config_lib.defaults()
      >>> parse_grid(cfg, ["train.lr=1e-3,3e-3"])
      [('train.lr', [0.001, 0.003])]
    """
    out, seen = [], set()
    for g in grid:
        if "=" not in g:
            raise UsageError(f"--grid {g!r}: expected KEY=V1,V2,... e.g. compress.bits=2,4,8")
        key, text = g.split("=", 1)
        key = key.strip()
        if key.startswith("config."):
            key = key[len("config.") :]
        if key in seen:
            raise UsageError(f"--grid: key {key!r} is given twice")
        seen.add(key)
        current = config_lib.get(cfg, key)
        texts = config_lib.split_values(text)
        if not texts:
            raise UsageError(f"--grid {g!r}: no values")
        out.append((key, [config_lib.coerce(key, current, t) for t in texts]))
    return out


def _label(point: Sequence[tuple[str, Any]]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in point)


def _dirname(i: int, point: Sequence[tuple[str, Any]]) -> str:
    body = "_".join(f"{k.split('.')[-1]}={v}" for k, v in point)
    return f"{i:02d}-" + re.sub(r"[^A-Za-z0-9=._-]+", "", body)[:80]


def _baseline_key(cfg: Any) -> str:
    plain = config_lib.to_plain(cfg)
    relevant = {k: plain[k] for k in ("data", "model", "train", "baseline")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def best_within(rows: Sequence[dict[str, Any]], max_drop: float) -> int | None:
    """Index of the smallest model whose accuracy drop is at most ``max_drop`` points.

    Ties in size go to the higher accuracy; None when no point is within the budget.

    Example:
      >>> best_within([{"drop_pp": 0.1, "logical_bytes": 9, "accuracy": 0.9},
      ...              {"drop_pp": 2.0, "logical_bytes": 3, "accuracy": 0.8}], 0.5)
      0
    """
    ok = [i for i, r in enumerate(rows) if r["drop_pp"] <= max_drop + 1e-9]
    if not ok:
        return None
    return min(ok, key=lambda i: (rows[i]["logical_bytes"], -rows[i]["accuracy"]))


def sweep(
    config_file: str,
    cfg: Any,
    grid: Sequence[str],
    *,
    out: str | None = None,
    max_drop: float = 0.5,
    resume: bool = False,
    overrides: Sequence[str] = (),
    progress: Progress | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs every point of the grid and writes ``sweep.json``, ``sweep.md`` and ``pareto.png``.

    Points that share data, model, training and baseline settings share one float baseline
    (trained once, checkpointed in ``out/baselines``). The accuracy drop of a point is measured
    against its float baseline, or, if the recipe has none, against the best point.

    Args:
      config_file: the recipe path.
      cfg: the merged, overridden config.
      grid: ``KEY=V1,V2,...`` entries; the runs are their Cartesian product.
      out: the sweep folder (default ``<output.dir>-sweep``).
      max_drop: the accuracy budget in percentage points.
      resume: continue an interrupted sweep (finished points are re-read, not re-trained).
      overrides: the ``--config.`` arguments (for the reports).
      progress: the progress bar.
      echo: where to print.

    Returns:
      ``{"rows": [...], "best": index or None, ...}`` as written to sweep.json.

    Raises:
      UsageError: bad grid, unknown key, a ``compress.*`` grid key no rule spec uses, an
        unwritable folder, or a config problem of any point.
    """
    if not grid:
        raise UsageError("sweep needs at least one --grid KEY=V1,V2,...")
    if max_drop < 0:
        raise UsageError(f"--max-drop must be >= 0, got {max_drop}")
    axes = parse_grid(cfg, grid)
    _, used = _spec.build_compressor(cfg.compress.rules, config_lib.hparams(cfg))
    for key, _ in axes:
        name = key.split(".", 1)[1] if key.startswith("compress.") else None
        if name and name != "rules" and name not in used:
            raise UsageError(
                f"--grid {key}: no rule spec uses the hyper-parameter {name!r}, so the grid would "
                f"not change the model (specs use: {', '.join(sorted(used)) or 'none'})"
            )
    config_lib.validate(cfg)
    root = pathlib.Path(out or (str(cfg.output.dir).rstrip("/") + "-sweep"))
    _run._writable_dir(root)
    if not resume:
        for d in ("points", "baselines"):
            if (root / d).exists():
                shutil.rmtree(root / d)
        for f in _SWEEP_FILES:
            (root / f).unlink(missing_ok=True)
    progress = progress or Progress()
    points = list(itertools.product(*[[(k, v) for v in vals] for k, vals in axes]))
    echo(f"sweep of {len(points)} runs over {', '.join(k for k, _ in axes)} -> {root}")
    rows = []
    for i, point in enumerate(points):
        pcfg = copy.deepcopy(cfg)
        for k, v in point:
            config_lib.set_value(pcfg, k, v)
        pdir = root / "points" / _dirname(i, point)
        bdir = root / "baselines" / _baseline_key(pcfg)
        rep = _run.run(
            config_file,
            pcfg,
            out=pdir,
            resume=resume and (pdir / "config.json").exists(),
            overrides=[*overrides, *(f"--config.{k}={v}" for k, v in point)],
            baseline_dir=bdir,
            progress=progress,
            echo=echo,
            verbose=False,
        )
        m = rep["metrics"]
        row = {
            "label": _label(point),
            "values": {k: v for k, v in point},
            "accuracy": m["compressed"]["accuracy"],
            "loss": m["compressed"]["loss"],
            "float_accuracy": m["float"]["accuracy"] if m["float"] else None,
            "logical_bytes": rep["size"]["logical_bytes"],
            "ratio": rep["size"]["ratio"],
            "file_bytes": rep["size"].get("artifact_file_bytes"),
            "run_dir": str(pdir.relative_to(root)),
        }
        rows.append(row)
        echo(
            f"[{i + 1}/{len(points)}] {row['label']}: accuracy {100 * row['accuracy']:.2f}%, "
            f"{_report.fmt_bytes(row['logical_bytes'])} ({row['ratio']:.2f}x smaller)"
        )
    ref = None
    if all(r["float_accuracy"] is None for r in rows):
        ref = max(r["accuracy"] for r in rows)
    for r in rows:
        base = r["float_accuracy"] if r["float_accuracy"] is not None else ref
        r["drop_pp"] = 100 * (base - r["accuracy"])
    best = best_within(rows, max_drop)
    front = _report.pareto_front([(r["logical_bytes"], r["accuracy"]) for r in rows])
    for j, r in enumerate(rows):
        r["pareto"] = j in front
    floats = {r["float_accuracy"] for r in rows}
    float_acc = floats.pop() if len(floats) == 1 else None
    if float_acc is None and ref is not None:
        float_acc = ref
    result = {
        "config_file": str(config_file),
        "overrides": list(overrides),
        "grid": [{"key": k, "values": v} for k, v in axes],
        "max_drop_pp": max_drop,
        "reference_accuracy": float_acc,
        "reference": "float baseline" if ref is None else "best point (no baseline)",
        "rows": rows,
        "best": best,
    }
    (root / "sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    plotted = _report.have_matplotlib()
    if plotted:
        _report.plot_pareto(root / "pareto.png", rows, float_acc, max_drop, best)
    else:
        echo("pareto.png skipped: matplotlib is not installed (pip install matplotlib)")
    table = _report.markdown_table(
        [
            [
                r["label"],
                f"{100 * r['accuracy']:.2f}%",
                f"{r['drop_pp']:+.2f}",
                f"{r['logical_bytes']:,}",
                f"{r['ratio']:.2f}x",
                "" if r.get("file_bytes") is None else f"{r['file_bytes']:,}",
                "yes" if r["pareto"] else "",
                "**best**" if j == best else "",
            ]
            for j, r in enumerate(rows)
        ],
        ["point", "accuracy", "drop (pp)", "bytes", "smaller", "file bytes", "Pareto", ""],
    )
    verdict = (
        f"Smallest model within {max_drop:g} pp of the {result['reference']}: "
        f"**{rows[best]['label']}** ({100 * rows[best]['accuracy']:.2f}%, "
        f"{_report.fmt_bytes(rows[best]['logical_bytes'])}, {rows[best]['ratio']:.2f}x smaller)."
        if best is not None
        else f"No point is within {max_drop:g} pp of the {result['reference']}."
    )
    md = [
        f"# jaxcompress sweep: {pathlib.Path(config_file).stem}",
        "",
        f"Grid: {', '.join(f'`{k}` in {v}' for k, v in axes)}; accuracy budget "
        f"{max_drop:g} percentage points.",
        "",
        table,
        "",
        verdict,
    ]
    if plotted:
        md += ["", "![pareto](pareto.png)"]
    (root / "sweep.md").write_text("\n".join(md) + "\n")
    echo(table)
    echo(verdict.replace("**", ""))
    echo(f"wrote {root}/sweep.md, sweep.json" + (", pareto.png" if plotted else ""))
    return result
