"""Step-time overhead of quantization-aware training vs the float step, and vs Qwix.

MLP 784-512-512-10, batch 256, adam, one jitted train step per variant (``jc.flax.TrainState``
for ours, a plain linen TrainState for Qwix), timed in interleaved rounds (medians).
Variants: float; int8 per-channel weights (live min-max scales, the default); the same with
stored scales refreshed by ``update`` (``live_scale=False``, clipped STE); int4 per-group
weights (group 128, 112 for the 784-input layer); w8a8, int8 per-channel weights + dynamic
per-token int8 activations, three ways: ``w8a8`` (``quantize_activations(8,
int_matmul=True)``: the forward on int8 x int8 -> int32 matmuls, the kernels quantized in
the layer, as Qwix's quantized training does), ``w8a8_qat_kernels`` (the same with
``qat(bits=8)`` kernels: quantized twice) and ``w8a8_fake_quant`` (``qat(bits=8)`` kernels,
fake-quantized activations, float matmuls); all with straight-through gradients and the
kernel gradients from the original activations. Qwix QAT (``QtProvider``) int8 weights and
w8a8 on the same model in the same run.
Every step donates its train state (``donate_argnums=0``, params copied per variant), as a
training loop does; ``--no-donate`` measures without.

Each session runs in a fresh process (``--processes``, default 6): within one process a
variant's timing carries a placement offset of a few percent (two variants that compile to
the same program differ by up to 3%), which only new processes average out. The figure is
the median over sessions of the per-round paired ratio to the float step.

Targets (ratios to float): int8 <= 1.03, int4 per-group <= 1.05, w8a8 <= 1.08, and not
slower than Qwix.

Where the weight-only overhead goes on XLA:CPU (profiled with ``jax.profiler``): per kernel,
one YNN absmax reduction, one loop fusion of four ops per weight (multiply by the reciprocal
scale, round, clamp, multiply by the scale) that writes the fake-quantized kernel the forward
and backward matmuls read, and two scale-sized fusions; XLA:CPU does not fuse the quantize
into the matmul. The per-group reduction (``[7, 112, 512]`` over the middle axis) runs at
about half the speed of a per-channel column reduction; reduce_window, select reducers,
two-stage and transposed forms measured no faster. Ours and Qwix compile to the same fusions
but for three scale fusions and a step counter (ours), so the pairs sit at parity within the
noise.

Run: ``PYTHONPATH=. python benchmarks/quant_overhead.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import jaxcompress as jc
from benchmarks import _harness, _models

BATCH = 256
FEATURES = (512, 512, 10)
TARGETS = {"int8": 1.03, "int4_group": 1.05, "w8a8": 1.08}
WARMUP = 3  # untimed calls per variant before the rounds
_LOAD_NOTE = "Shared 2-core machine, other jobs running (load average: see environment)."


def _jit(step, donate):
    return jax.jit(step, donate_argnums=(0,) if donate else ())


def ours_step(
    model, params, comp, act_bits, x, y, donate=True, residuals="original", int_matmul=False
):
    state = jc.flax.TrainState.create(
        apply_fn=model.apply,
        params=jax.tree.map(jnp.copy, params),  # own buffers: the step donates them
        tx=optax.adam(1e-3),
        compressor=comp,
    )

    step = _models.quant_step(act_bits, residuals=residuals, int_matmul=int_matmul)
    return state, _jit(step, donate)


def qwix_step(model, x, y, act_qtype, donate=True):
    import qwix

    rule = qwix.QtRule(module_path=".*", weight_qtype="int8", act_qtype=act_qtype)
    qmodel = qwix.quantize_model(model, qwix.QtProvider([rule]))
    variables = qmodel.init(jax.random.key(0), x)
    state = train_state.TrainState.create(
        apply_fn=qmodel.apply, params=variables["params"], tx=optax.adam(1e-3)
    )

    def step(state, x, y):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

    return state, _jit(step, donate)


def _variants(donate: bool, seed: int) -> dict:
    """Fresh states and jitted steps of every variant, built in an order shuffled by ``seed``."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((BATCH, 784), np.float32))
    y = jnp.asarray(rng.integers(0, 10, BATCH).astype(np.int32))
    model = jc.workloads.MLP(FEATURES)
    params = model.init(jax.random.key(0), x)["params"]
    int4_group = _models.int4_group()
    q8 = _models.kernels(jc.quant.qat(bits=8))
    builders = {
        "float": lambda: ours_step(model, params, jc.identity(), None, x, y, donate),
        "int8": lambda: ours_step(model, params, q8, None, x, y, donate),
        "int8_stored": lambda: ours_step(
            model,
            params,
            _models.kernels(jc.quant.qat(bits=8, live_scale=False)),
            None,
            x,
            y,
            donate,
        ),
        "int4_group": lambda: ours_step(model, params, int4_group, None, x, y, donate),
        "w8a8": lambda: ours_step(model, params, jc.identity(), 8, x, y, donate, int_matmul=True),
        "w8a8_qat_kernels": lambda: ours_step(model, params, q8, 8, x, y, donate, int_matmul=True),
        "w8a8_fake_quant": lambda: ours_step(model, params, q8, 8, x, y, donate),
    }
    if _qwix_version():
        builders["qwix_int8"] = lambda: qwix_step(model, x, y, None, donate)
        builders["qwix_w8a8"] = lambda: qwix_step(model, x, y, "int8", donate)
    names = list(builders)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    built = {n: builders[n]() for n in order}
    return {n: built[n] for n in names}, x, y


def _qwix_version() -> str | None:
    try:
        import qwix
    except ImportError:
        return None
    return qwix.__version__


def session(*, rounds: int, inner: int, donate: bool, seed: int) -> dict:
    """One timing session: every variant compiled and timed in interleaved rounds.

    Returns ``{"samples_s": {variant: per-round seconds}, "cpu_s": {variant: per-step process
    CPU seconds}}``.
    """
    setups, x, y = _variants(donate, seed)
    states = {k: s for k, (s, _) in setups.items()}
    cpu: dict[str, list[float]] = {k: [] for k in setups}

    def make(name):
        step = setups[name][1]

        def run():
            t0 = time.process_time()
            states[name] = step(states[name], x, y)
            jax.block_until_ready(states[name].params)
            cpu[name].append(time.process_time() - t0)

        return run

    t = _harness.time_interleaved(
        {k: make(k) for k in setups}, rounds=rounds, warmup=WARMUP, inner=inner
    )
    return {
        "samples_s": {k: v["samples_s"] for k, v in t.items()},
        "cpu_s": {k: v[WARMUP:] or v for k, v in cpu.items()},  # warm-up: one call each
    }


def _run_worker(args: argparse.Namespace, seed: int) -> dict:
    """One session in a fresh Python process (own compilation, code and buffer placement)."""
    cmd = [sys.executable, "-m", "benchmarks.quant_overhead", "--worker", str(seed)]
    cmd += ["--rounds", str(args.rounds), "--inner", str(args.inner)]
    cmd += ["--no-donate"] if args.no_donate else []
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {seed} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ci(values: list[float]) -> str:
    """The median's 90% distribution-free confidence interval over sessions, as text."""
    lo, hi = _harness.median_ci(values, 0.9)
    return f"{lo:.3f}-{hi:.3f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, one session (smoke test)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--inner", type=int, default=None, help="steps per timed call")
    ap.add_argument(
        "--processes", type=int, default=None, help="sessions, each in a fresh process (default 6)"
    )
    ap.add_argument("--tag", default="", help="suffix of the result files (another machine)")
    ap.add_argument("--no-donate", action="store_true", help="steps do not donate their state")
    ap.add_argument("--note", default="", help="sentence on the machine / load for the report")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (4 if args.quick else 60)
    args.inner = args.inner or (2 if args.quick else 5)
    donate = not args.no_donate
    if args.worker is not None:
        res = session(rounds=args.rounds, inner=args.inner, donate=donate, seed=args.worker)
        print(json.dumps(res))
        return res
    processes = args.processes or (1 if args.quick else 6)
    rounds, inner = args.rounds, args.inner
    qwix_version = _qwix_version()
    qwix_note = f"qwix {qwix_version}" if qwix_version else "qwix not installed"
    if processes == 1:
        runs = [session(rounds=rounds, inner=inner, donate=donate, seed=0)]
    else:
        runs = []
        for i in range(processes):
            runs.append(_run_worker(args, i))
            print(f"session {i + 1}/{processes} done", file=sys.stderr, flush=True)
    stats = [{n: _harness.summarize(v) for n, v in r["samples_s"].items()} for r in runs]
    # Per-session paired ratios; the reported figure is their median over sessions. Each
    # session is a fresh process: code placement, buffer addresses and the variants' build
    # order differ, which moves a variant by a few percent within one process even when
    # two variants compile to the same program.
    per_session = [_harness.paired_ratios(t, "float") for t in stats]
    names = list(stats[0])
    paired = {n: statistics.median(p[n] for p in per_session) for n in names}
    timings = {n: _harness.summarize([v for r in runs for v in r["samples_s"][n]]) for n in names}
    ratios = _harness.ratios(timings, "float")
    # CPU time of the process per step (all its threads): far less sensitive than wall time
    # to the other jobs sharing the machine; measured inside the same interleaved rounds.
    cpu_med = {n: statistics.median([v for r in runs for v in r["cpu_s"][n]]) for n in names}
    cpu_ratios = {k: v / cpu_med["float"] for k, v in cpu_med.items()}
    rows = []
    for name, t in timings.items():
        row = {
            "variant": name,
            "wall_median_ms": t["median_s"] * 1e3,
            "wall_p10_ms": t["p10_s"] * 1e3,
            "wall_p90_ms": t["p90_s"] * 1e3,
            "wall_ratio": ratios[name],
            "paired_ratio": paired[name],
            "paired_min": min(p[name] for p in per_session),
            "paired_max": max(p[name] for p in per_session),
            "paired_ci90": _ci([p[name] for p in per_session]),
            "cpu_median_ms": cpu_med[name] * 1e3,
            "cpu_ratio": cpu_ratios[name],
            "target": TARGETS.get(name, ""),
        }
        rows.append(row)
    vs_qwix = {}
    if "qwix_int8" in timings:
        for ours, theirs in (
            ("int8", "qwix_int8"),
            ("w8a8", "qwix_w8a8"),
            ("w8a8_qat_kernels", "qwix_w8a8"),
        ):
            per = [_harness.paired_ratios(t, theirs)[ours] for t in stats]
            vs_qwix[f"{ours} / {theirs}"] = {
                "paired": statistics.median(per),
                "paired_min": min(per),
                "paired_max": max(per),
                "paired_ci90": _ci(per),
                "sessions_faster": f"{sum(v < 1 for v in per)}/{len(per)}",
                "wall": timings[ours]["median_s"] / timings[theirs]["median_s"],
                "cpu": cpu_med[ours] / cpu_med[theirs],
            }
    md = [
        "# Quantization step-time overhead",
        "",
        f"MLP 784-512-512-10, batch {BATCH}, adam; jitted train step; {processes} session(s) "
        f"of {rounds} interleaved rounds of {inner} steps, "
        + (
            "each session a fresh process (its own compilation, fresh states, the variants "
            "built in a shuffled order); "
            if processes > 1
            else "in this process; "
        )
        + f"steps {'donate' if donate else 'do not donate'} "
        f"their state. Backend {jax.default_backend()}, {len(jax.devices())} device(s), "
        f"jax {jax.__version__}; {qwix_note}. {args.note or _LOAD_NOTE} The CPU-time columns "
        "(process CPU seconds per step, all threads, same rounds) are steadier on a shared "
        "machine. `paired_ratio`: in each session the median over rounds of the variant's "
        "time over the float step's in the same round (a slow spell hits both); the median "
        "over sessions (`paired_min` / `paired_max`: their range; `paired_ci90`: a 90% "
        "distribution-free confidence interval of that median, from the sessions' order "
        "statistics) is the figure the targets apply to.",
        "",
        _harness.markdown_table(rows),
        "",
    ]
    if vs_qwix:
        md += [
            "Ours vs Qwix QAT on the same model, same run (< 1 means ours is faster; `paired`: "
            "median over sessions of the per-round ratio, `paired_ci90`: its 90% confidence "
            "interval, `sessions_faster`: sessions in which ours was faster):",
            "",
            _harness.markdown_table([{"pair": k, **v} for k, v in vs_qwix.items()]),
        ]
    data = {
        "sessions": processes,
        "rounds": rounds,
        "inner": inner,
        "paired_per_session": per_session,
        # summary statistics only (no per-round samples); per-session paired ratios are above
        "timings": {
            n: {k: v for k, v in t.items() if k != "samples_s"} for n, t in timings.items()
        },
        "ratios": ratios,
        "paired_ratios": paired,
        "cpu_median_s": cpu_med,
        "cpu_ratios": cpu_ratios,
        "targets": TARGETS,
        "vs_qwix": vs_qwix,
    }
    data["quick"] = bool(args.quick)
    data["donate"] = donate
    data["note"] = args.note
    name = (
        "quant_overhead" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    )
    _harness.write_results(name, data, "\n".join(md))
    print("\n".join(md))
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
