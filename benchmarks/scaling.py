"""Scaling with model size: train-step overhead and update cost per parameter, 1M to 100M.

The model is a stack of ``LAYERS`` square float32 kernels applied linearly to a small batch
(``y = x @ W_1 @ ... @ W_L``, squared error, plain SGD), so a step's cost is dominated by
passes over the parameters and the compressor's share of it is plain to see. For each size,
timed interleaved in rounds (medians, ``benchmarks/_harness.py``):

(a) a whole jitted, donated train step: float vs ``qat`` int8 (scales recomputed every step,
    the default) vs magnitude pruning at 90% (masks applied and pruned weights zeroed; no mask
    search between mask updates); the ratio compressed / float is the training overhead;
(b) the compressor's ``update`` at an update step (jitted, params and state donated and chained
    as in training), in ns per parameter: int8 scale recompute,
    magnitude mask recompute (layer-wise and global, sort-free search), k-means refresh
    (every weight reassigned to its nearest of 16 centroids).

The cost per parameter must stay flat from 1M to 100M: the "max / min" row gives, per method,
the largest ns per parameter over the sizes divided by the smallest. The state bytes / param
bytes of each method (``jc.summary``) come with it.

    python benchmarks/scaling.py            # 1M, 10M, 100M parameters
    python benchmarks/scaling.py --quick    # 262K parameters only, a smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxcompress as jc  # noqa: E402
from benchmarks import _harness  # noqa: E402

LAYERS = 4
BATCH = 16
LR = 1e-3

# name -> factory of the Compressor used in the train step (None: the float step)
STEP_VARIANTS = {
    "float": None,
    "qat int8": lambda: jc.quant.qat(8),
    "magnitude 90%": lambda: jc.prune.magnitude(0.9),
}
# name -> factory of a Compressor whose every update is an update step
UPDATE_VARIANTS = {
    "qat int8 scale recompute": lambda: jc.quant.qat(8),
    "magnitude mask recompute (layer)": lambda: jc.prune.magnitude(
        0.9, schedule=jc.prune.constant(update_every=1)
    ),
    "magnitude mask recompute (global)": lambda: jc.prune.magnitude(
        0.9, schedule=jc.prune.constant(update_every=1), scope="global"
    ),
    "kmeans refresh (k=16)": lambda: jc.cluster.kmeans(16, init="linear", update_every=1),
}


def make_params(n: int, seed: int = 0) -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(seed), LAYERS)
    return {
        f"layer_{i}": jax.random.normal(k, (n, n), jnp.float32) / jnp.sqrt(jnp.float32(n))
        for i, k in enumerate(keys)
    }


def loss(params, x, t):
    y = x
    for i in range(LAYERS):
        y = y @ params[f"layer_{i}"]
    return jnp.mean(jnp.square(y - t))


def _sgd(params, grads):
    return jax.tree.map(lambda p, g: p - LR * g, params, grads)


@functools.partial(jax.jit, donate_argnums=0)
def float_step(params, x, t):
    return _sgd(params, jax.grad(loss)(params, x, t))


def compressed_step(comp: jc.Compressor):
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, x, t):
        grads = jax.grad(lambda p: loss(comp.apply(p, state), x, t))(params)
        return comp.update(_sgd(params, grads), state, grads)

    return step


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def measure(n: int, rounds: int) -> tuple[list[dict], dict[str, float]]:
    """Timings for one size: rows for the step and update tables, and state ratios."""
    params = make_params(n)
    count = LAYERS * n * n
    kx, kt = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (BATCH, n), jnp.float32)
    t = jax.random.normal(kt, (BATCH, n), jnp.float32)

    # (a) train steps, each on its own donated copy of the params (and state)
    steps, holders = {}, {}
    state_ratio = {}
    for name, factory in STEP_VARIANTS.items():
        if factory is None:
            holders[name] = [_copy(params)]

            def run(h=holders[name]):
                h[0] = _harness.block(float_step(h[0], x, t))

        else:
            comp = factory()
            state = jax.jit(comp.init)(params)
            state_ratio[name] = jc.summary(comp, params, state).state_ratio
            holders[name] = [_copy(params), state]
            step = compressed_step(comp)

            def run(h=holders[name], step=step):
                h[0], h[1] = _harness.block(step(h[0], h[1], x, t))

        steps[name] = run
    step_t = _harness.time_interleaved(steps, rounds=rounds, warmup=2)
    del holders, steps

    # (b) one update at an update step, donated and chained as in training: an update that
    # leaves the params as they are then costs no copy of them (without donation every call
    # would copy all the params, which at 100M costs more than the update itself)
    updates, holders = {}, {}
    for name, factory in UPDATE_VARIANTS.items():
        comp = factory()
        state = _harness.block(jax.jit(comp.init)(params))
        state_ratio.setdefault(name, jc.summary(comp, params, state).state_ratio)
        holders[name] = [_copy(params), state]
        update = jax.jit(comp.update, donate_argnums=(0, 1))

        def run(h=holders[name], update=update):
            h[0], h[1] = _harness.block(update(h[0], h[1]))

        updates[name] = run
    upd_t = _harness.time_interleaved(updates, rounds=rounds, warmup=2)
    del holders, updates

    base = step_t["float"]["median_s"]
    rows = [
        {
            "kind": kind,
            "variant": name,
            "params": count,
            "median ms": 1e3 * s["median_s"],
            "p10 ms": 1e3 * s["p10_s"],
            "p90 ms": 1e3 * s["p90_s"],
            "ns / param": 1e9 * s["median_s"] / count,
            "p10 ns / param": 1e9 * s["p10_s"] / count,
            "x float step": s["median_s"] / base,
        }
        for kind, timings in (("train step", step_t), ("update", upd_t))
        for name, s in timings.items()
    ]
    return rows, state_ratio


def flatness(rows: list[dict]) -> list[dict]:
    """Per variant: ns / param at each size and max / min over the sizes."""
    out = []
    for kind in ("train step", "update"):
        names = list(dict.fromkeys(r["variant"] for r in rows if r["kind"] == kind))
        for name in names:
            rs = [r for r in rows if r["kind"] == kind and r["variant"] == name]
            ns = [r["ns / param"] for r in rs]
            row = {"kind": kind, "variant": name}
            row.update({f"ns/param @ {_label(r['params'])}": r["ns / param"] for r in rs})
            row["max / min"] = max(ns) / min(ns)
            # the fastest rounds are the least disturbed by other jobs on a shared machine
            p10 = [r["p10 ns / param"] for r in rs]
            row["max / min (p10)"] = max(p10) / min(p10)
            if len(rs) > 1:  # growth between the two largest sizes (both beyond the caches)
                row["last / previous"] = ns[-1] / ns[-2]
            if kind == "train step":
                row["overhead (x float)"] = " / ".join(f"{r['x float step']:.3g}" for r in rs)
            out.append(row)
    return out


def _label(count: int) -> str:
    return f"{count / 1e6:.3g}M" if count >= 10**6 else f"{count / 1e3:.3g}K"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run (< 1 min)")
    args = ap.parse_args(argv)
    if args.quick:
        plan = [(256, 5)]  # 262K parameters: one size (compiles dominate a smoke run)
    else:
        # 4 x 512^2 = 1.05M, 4 x 1600^2 = 10.2M, 4 x 5000^2 = 100M parameters
        plan = [(512, 21), (1600, 11), (5000, 5)]
    rows, ratios = [], {}
    for n, rounds in plan:
        r, ratios = measure(n, rounds)
        rows += r
        for row in r:
            print(
                f"{row['params']:>10d} {row['kind']:<10} {row['variant']:<36} "
                f"{row['median ms']:10.3f} ms {row['ns / param']:8.3f} ns/param "
                f"{row['x float step']:7.3f} x float",
                flush=True,
            )
    flat = flatness(rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    sizes = ", ".join(_label(LAYERS * n * n) for n, _ in plan)
    md = [
        f"# Scaling: step overhead and update cost per parameter ({sizes} parameters)",
        "",
        f"Model: {LAYERS} square float32 kernels applied linearly to a batch of {BATCH}, "
        "squared error, plain SGD, jitted and donated. Variants interleaved in rounds, "
        f"medians ({', '.join(str(r) for _, r in plan)} rounds per size). Backend "
        f"{jax.default_backend()}, {os.cpu_count()} cores, load average {load:.1f} at the end "
        "(the machine is shared).",
        "",
        "## Cost per parameter: flatness",
        "",
        "`max / min`: the largest ns per parameter over the sizes divided by the smallest "
        "(1 = exactly linear in the parameter count); `(p10)`: the same from the 10th "
        "percentile of the rounds, less disturbed by other jobs; `last / previous`: ns per "
        "parameter at the largest size over the one before (the smallest size can sit in the "
        "CPU caches, the larger ones stream from memory). Train-step overhead: median step "
        "time compressed / float at each size.",
        "",
        _harness.markdown_table(flat),
        "",
        "## All timings",
        "",
        _harness.markdown_table(
            rows,
            [
                "kind",
                "variant",
                "params",
                "median ms",
                "p10 ms",
                "p90 ms",
                "ns / param",
                "p10 ns / param",
                "x float step",
            ],
        ),
        "",
        "## Compressor state bytes / param bytes (jc.summary)",
        "",
        _harness.markdown_table(
            [{"method": k, "state / params": v} for k, v in ratios.items()],
        ),
    ]
    data = {
        "layers": LAYERS,
        "batch": BATCH,
        "plan": [{"n": n, "rounds": r, "params": LAYERS * n * n} for n, r in plan],
        "rows": rows,
        "flatness": flat,
        "state_ratio": ratios,
        "load_average": load,
        "quick": args.quick,
    }
    _harness.write_results("scaling" + ("_quick" if args.quick else ""), data, "\n".join(md))
    print("\n".join(md))
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
