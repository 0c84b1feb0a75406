"""The `jaxcompress` command: its training loop against a bare loop, and the quickstart.

1. Loop overhead. The command's phase loop (batch by step, loss history, progress bar,
   checkpoint cadence) against the loop a user would write by hand, ``for x, y in
   jc.workloads.batches(...): state, loss = train_step(state, x, y)``, with the same jitted
   step of the quickstart (MLP on digits, int8 QAT + 50% magnitude pruning). Both run in
   interleaved rounds; the figure is the median time per step of the steady state (compile
   and the final checkpoint excluded). Target: the command's loop at most 1.10x the bare loop.
2. The quickstart as a user runs it (``jaxcompress run configs/quickstart.py``, a fresh
   process, start-up included): wall time, float and compressed test accuracy. Target: under
   60 s on 2 CPU cores.

Run: ``python -m benchmarks.cli`` (``--quick`` for a smoke run of well under a minute).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax

import jaxcompress as jc
from benchmarks import _harness
from jaxcompress.cli import _config, _run, _train
from jaxcompress.cli._progress import Progress

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.py"


def loop_overhead(steps: int, rounds: int) -> dict:
    cfg = _config.load(str(QUICKSTART))
    L = _run.build(cfg)
    tx = _train.make_optimizer(cfg.train, steps)
    state0 = _run._new_state(L.model, L.params, tx, L.compressor)
    step_fn = _train.make_train_step()
    ds = L.ds
    bs, seed = int(cfg.train.batch_size), int(cfg.train.seed)
    src = _train.BatchSource(ds.x_train, ds.y_train, bs, seed)
    # compile once, outside the timing
    jax.block_until_ready(step_fn(state0, *src(0)))

    def bare():
        state = state0
        it = jc.workloads.batches(ds.x_train, ds.y_train, bs, seed=seed)
        x, y = next(it)
        state, loss = step_fn(state, x, y)
        jax.block_until_ready(loss)
        t0 = time.perf_counter()
        for _ in range(steps - 1):
            x, y = next(it)
            state, loss = step_fn(state, x, y)
        jax.block_until_ready(state)
        return (time.perf_counter() - t0) / (steps - 1)

    def command(tmp):
        res = _train.run_phase(
            "compressed",
            pathlib.Path(tmp),
            state0,
            steps,
            step_fn,
            src,
            evaluate_val=None,
            eval_every=0,
            log_every=int(cfg.train.log_every),
            checkpoint_every=0,
            max_to_keep=1,
            progress=Progress(enabled=False),
            run_dir=tmp,
        )
        return 1.0 / res.steps_per_second

    samples = {"bare": [], "command": []}
    for r in range(rounds + 1):
        order = ["bare", "command"] if r % 2 == 0 else ["command", "bare"]
        for name in order:
            if name == "bare":
                t = bare()
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    t = command(tmp)
            if r > 0:  # round 0 warms up
                samples[name].append(t)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "steps_per_round": steps,
        "rounds": rounds,
        "median_s_per_step": med,
        "p10_p90_s_per_step": {
            k: [statistics.quantiles(v, n=10)[0], statistics.quantiles(v, n=10)[-1]]
            for k, v in samples.items()
        },
        "ratio_command_vs_bare": med["command"] / med["bare"],
    }


def quickstart(steps: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "run"
        cmd = [sys.executable, "-m", "jaxcompress.cli", "run", str(QUICKSTART), "--out", str(out)]
        if steps is not None:
            cmd.append(f"--config.train.steps={steps}")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    return {
        "steps": rep["steps"],
        "wall_s": wall,
        "float_accuracy": m["float"]["accuracy"],
        "compressed_accuracy": m["compressed"]["accuracy"],
        "accuracy_drop_pp": m["accuracy_drop_pp"],
        "ratio_smaller": rep["size"]["ratio"],
        "phase_seconds": {
            k: v["seconds"] for k, v in rep["timing"].items() if k != "total_seconds"
        },
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run of well under a minute")
    args = p.parse_args(argv)
    steps, rounds = (50, 2) if args.quick else (400, 15)
    loop = loop_overhead(steps, rounds)
    qs = quickstart(20 if args.quick else None)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    data = {
        "quick": args.quick,
        "load_average": load,
        "loop": loop,
        "quickstart": qs,
        "targets": {"ratio_command_vs_bare": 1.10, "quickstart_wall_s": 60.0},
    }
    rows = [
        {"what": "bare loop, s/step", "value": loop["median_s_per_step"]["bare"], "target": ""},
        {
            "what": "command loop, s/step",
            "value": loop["median_s_per_step"]["command"],
            "target": "",
        },
        {"what": "command / bare", "value": loop["ratio_command_vs_bare"], "target": "<= 1.10"},
        {"what": "quickstart wall, s", "value": qs["wall_s"], "target": "< 60"},
        {"what": "quickstart float accuracy", "value": qs["float_accuracy"], "target": ""},
        {
            "what": "quickstart compressed accuracy",
            "value": qs["compressed_accuracy"],
            "target": "",
        },
    ]
    md = "\n".join(
        [
            "# jaxcompress command: loop overhead and quickstart",
            "",
            f"{'Quick run' if args.quick else 'Full run'}; {steps} steps per round, {rounds} "
            f"interleaved rounds (medians); load average {' '.join(load)} on "
            f"{_harness.environment()['cpu_count']} cores (shared machine).",
            "",
            _harness.markdown_table(rows, ["what", "value", "target"]),
            "",
            f"Quickstart: {qs['steps']['baseline']} float + {qs['steps']['compressed']} compressed "
            f"steps, {qs['ratio_smaller']:.2f}x smaller, drop {qs['accuracy_drop_pp']:.2f} pp.",
        ]
    )
    _harness.write_results("cli_quick" if args.quick else "cli", data, md)
    print(md)


if __name__ == "__main__":
    main()
