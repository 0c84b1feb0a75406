"""Run reports: report.json, report.md and the PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (the plots are skipped otherwise)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt_bytes(n: float | None) -> str:
    """``1234567`` -> ``'1.18 MiB'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)


def fmt_metric(m: Mapping[str, Any] | None, key: str) -> str:
    if not m or m.get(key) is None:
        return "-"
    v = m[key]
    return f"{100 * v:.2f}%" if key == "accuracy" else f"{v:.4f}"


def markdown_table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def metric_keys(task: str) -> list[str]:
    return ["accuracy", "loss", "perplexity"] if task == "language_model" else ["accuracy", "loss"]


def markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report of a run."""
    m = report["metrics"]
    s = report["summary"]
    size = report["size"]
    lines = [
        f"# jaxcompress run: {report['name']}",
        "",
        f"Recipe `{report['config_file']}`"
        + (f" with `{' '.join(report['overrides'])}`" if report["overrides"] else "")
        + f"; data **{report['data']['name']}** ({report['data']['train']:,} train / "
        f"{report['data']['val']:,} val / {report['data']['test']:,} test), model "
        f"**{report['model']['name']}** ({report['model']['num_params']:,} parameters), "
        f"task {report['task']}.",
        "",
        "## Test metrics",
        "",
    ]
    keys = metric_keys(report["task"])
    rows = []
    if m.get("float"):
        rows.append(["float", *(fmt_metric(m["float"], k) for k in keys)])
    rows.append(
        [
            "compressed" if m.get("float") else "model",
            *(fmt_metric(m["compressed"], k) for k in keys),
        ]
    )
    lines.append(markdown_table(rows, ["", *keys]))
    if m.get("accuracy_drop_pp") is not None:
        lines += ["", f"Accuracy drop: **{m['accuracy_drop_pp']:.2f} percentage points**."]
    lines += [
        "",
        "## Size",
        "",
        f"float32 {fmt_bytes(size['float32_bytes'])} -> compressed "
        f"{fmt_bytes(size['logical_bytes'])} logical (**{size['ratio']:.2f}x smaller**); "
        f"compressor state {fmt_bytes(s['state_bytes'])}. On disk: exported params "
        f"(artifact/params.jca, entropy-coded) {fmt_bytes(size['artifact_file_bytes'])} "
        f"(**{size['artifact_ratio']:.2f}x smaller** than float32), artifact folder "
        f"{fmt_bytes(size['artifact_disk_bytes'])}, checkpoint "
        f"{fmt_bytes(size['checkpoint_disk_bytes'])}.",
        "",
        "## Per layer",
        "",
        markdown_table(
            [
                [
                    f"`{r['path']}`",
                    "x".join(map(str, r["shape"])) or "scalar",
                    r["bits"],
                    f"{100 * r['sparsity']:.1f}%",
                    f"{r['logical_bytes']:,}",
                ]
                for r in s["leaves"]
            ],
            ["path", "shape", "bits", "sparsity", "bytes"],
        ),
        "",
        "## Training",
        "",
    ]
    trows = []
    for phase in ("baseline", "compressed"):
        t = report["timing"].get(phase)
        if t:
            sps = t.get("steps_per_second")
            trows.append(
                [
                    phase,
                    report["steps"][phase],
                    t["steps_run"],
                    f"{t['seconds']:.1f}",
                    f"{sps:.1f}" if sps else "-",
                ]
            )
    lines.append(markdown_table(trows, ["phase", "steps", "run here", "seconds", "steps/s"]))
    plots = report["files"].get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{pathlib.Path(p).stem}]({p})" for p in plots]
    env = report["environment"]
    lines += [
        "",
        f"jax {env['jax']} on {env['backend']} ({len(env['devices'])} device(s)); "
        f"jaxcompress {report['jaxcompress']}.",
    ]
    return "\n".join(lines) + "\n"


def write(directory: pathlib.Path, report: Mapping[str, Any]) -> None:
    """Writes report.json and report.md into the run folder."""
    (directory / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (directory / "report.md").write_text(markdown(report))


def plot_curves(path: pathlib.Path, history: Mapping[str, Any], task: str, offset: int) -> None:
    """Training loss and validation metric against step for both phases.

    ``offset`` shifts the compressed phase right (warm start: it continues the baseline).
    """
    plt = _pyplot()
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    val_key = "val_loss" if task == "language_model" else "val_accuracy"
    for phase, color in (("baseline", "tab:blue"), ("compressed", "tab:red")):
        h = history.get(phase)
        if not h:
            continue
        shift = offset if phase == "compressed" else 0
        ax_l.plot([s + shift for s in h["step"]], h["loss"], color=color, label=phase)
        if h["val_step"]:
            ys = h[val_key]
            if val_key == "val_accuracy":
                ys = [100 * v for v in ys]
            ax_v.plot([s + shift for s in h["val_step"]], ys, "o-", ms=3, color=color, label=phase)
    ys = [y for line in ax_l.lines for y in line.get_ydata()]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 10:  # log scale only when it spans a decade
        ax_l.set_yscale("log")
    if offset and history.get("baseline") and history.get("compressed"):
        for ax in (ax_l, ax_v):
            ax.axvline(offset, color="gray", ls="--", lw=0.8)
    ax_l.set(xlabel="step", ylabel="training loss", title="training loss")
    ax_v.set(
        xlabel="step",
        ylabel="validation loss" if val_key == "val_loss" else "validation accuracy (%)",
        title="validation",
    )
    for ax in (ax_l, ax_v):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_layers(path: pathlib.Path, summary: Mapping[str, Any]) -> None:
    """Per-layer bits and sparsity as horizontal bars."""
    plt = _pyplot()
    rows = summary["leaves"]
    names = [r["path"] for r in rows]
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig, (ax_b, ax_s) = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    ypos = list(range(len(rows)))[::-1]
    ax_b.barh(ypos, [r["bits"] for r in rows], color="tab:purple")
    ax_b.set(xlabel="bits per weight", title="bits")
    ax_b.set_yticks(ypos, names, fontsize=8)
    ax_s.barh(ypos, [100 * r["sparsity"] for r in rows], color="tab:orange")
    ax_s.set(xlabel="sparsity (%)", title="sparsity", xlim=(0, 100))
    for ax in (ax_b, ax_s):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both size (smaller) and accuracy (higher).

    Example:
      >>> pareto_front([(10, 0.9), (5, 0.8), (20, 0.85), (5, 0.7)])
      [0, 1]
    """
    front = []
    for i, (si, ai) in enumerate(points):
        dominated = any(
            (sj <= si and aj >= ai) and (sj < si or aj > ai)
            for j, (sj, aj) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def plot_pareto(
    path: pathlib.Path,
    rows: Sequence[Mapping[str, Any]],
    float_acc: float | None,
    max_drop: float,
    best: int | None,
) -> None:
    """Accuracy against logical size for a sweep, the Pareto front and the budget line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["logical_bytes"] for r in rows]
    ys = [100 * r["accuracy"] for r in rows]
    ax.scatter(xs, ys, color="tab:gray", zorder=2)
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(r["label"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted(pareto_front(list(zip(xs, ys, strict=True))), key=lambda i: xs[i])
    ax.plot(
        [xs[i] for i in front],
        [ys[i] for i in front],
        "-o",
        color="tab:red",
        label="Pareto front",
        zorder=3,
    )
    if float_acc is not None:
        ax.axhline(100 * float_acc, color="tab:blue", lw=1, label="float baseline")
        ax.axhline(
            100 * float_acc - max_drop,
            color="tab:blue",
            lw=1,
            ls="--",
            label=f"budget (-{max_drop:g} pp)",
        )
    if best is not None:
        ax.scatter(
            [xs[best]],
            [ys[best]],
            marker="*",
            s=250,
            color="gold",
            edgecolor="black",
            zorder=4,
            label="smallest within budget",
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="compressed size (logical bytes)",
        ylabel="test accuracy (%)",
        title="accuracy vs size",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
