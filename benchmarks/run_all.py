"""Runs every benchmark and writes the index table benchmarks/results/README.md.

Each benchmark is a script ``benchmarks/<name>.py`` with a ``main(argv)`` that interleaves its
variants, takes medians and writes ``benchmarks/results/<name>.json`` and ``.md``. They run
one after another, each in its own process (so one's memory and compile caches do not
affect another's timings).

    python benchmarks/run_all.py            # everything, full size
    python benchmarks/run_all.py --quick    # smoke run, well under a minute each
    python benchmarks/run_all.py memory prune_mask   # a selection
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run_all"
    )


def write_index() -> Path:
    """Builds results/README.md: one section per result, newest figures first in each."""
    parts = ["# Benchmark results", "", "Written by `python benchmarks/run_all.py`.", ""]
    rows = []
    # smoke-run outputs (``--quick``, also written by the tests) are not results; git ignores them
    for js in sorted(p for p in RESULTS.glob("*.json") if not p.stem.endswith("_quick")):
        try:
            env = json.loads(js.read_text()).get("environment", {})
        except json.JSONDecodeError:
            env = {}
        rows.append(
            f"| [{js.stem}]({js.stem}.md) | {env.get('date', '?')} | {env.get('backend', '?')} "
            f"| {env.get('cpu_count', '?')} | {env.get('jax', '?')} |"
        )
    parts += ["| benchmark | date | backend | cpus | jax |", "|---|---|---|---|---|", *rows, ""]
    for md in sorted(RESULTS.glob("*.md")):
        if md.name == "README.md" or md.stem.endswith("_quick"):
            continue
        text = md.read_text().strip()
        if text.startswith("# "):
            text = "#" + text  # one level down inside the index
        parts += [text, ""]
    out = RESULTS / "README.md"
    out.write_text("\n".join(parts) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the jaxcompress benchmarks.")
    ap.add_argument("names", nargs="*", help=f"a selection of: {', '.join(discover())}")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = ap.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(discover())}")
    failed = []
    for name in names:
        t0 = time.time()
        cmd = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {name}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    print(f"index: {write_index()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
