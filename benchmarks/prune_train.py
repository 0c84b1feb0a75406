"""Train-step overhead of pruning: MLP 784-512-512-10, batch 256, masks updated every 100 steps.

Dense (``jc.identity()``) and pruned (90% magnitude pruning of the kernels, masks recomputed
every 100 steps) train steps with ``jc.flax.TrainState`` and adam, timed interleaved in blocks
of 100 steps (so each pruned block contains exactly one mask recomputation), medians.
Target: pruned / dense <= 1.05.

Run: ``python -m benchmarks.prune_train [--quick]``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcompress as jc
from benchmarks._harness import block, markdown_table, ratios, time_interleaved, write_results


def _batch(n: int = 256):
    try:
        ds = jc.workloads.load_mnist()
        x, y = ds.x_train[:n], ds.y_train[:n]
    except jc.workloads.DataNotFoundError:
        rng = np.random.default_rng(0)
        x, y = rng.uniform(size=(n, 784)).astype(np.float32), rng.integers(0, 10, n)
    return jnp.asarray(x), jnp.asarray(y, jnp.int32)


def _make(comp, x):
    model = jc.workloads.MLP((512, 512, 10))
    params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-3), compressor=comp
    )

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))

    return state, train_step


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = ap.parse_args(argv)
    block_steps, rounds = (100, 3) if args.quick else (100, 31)
    x, y = _batch()
    every = 100
    variants = {
        "dense": jc.identity(),
        "magnitude 90% (masks every 100 steps)": jc.rules(
            [(".*/kernel", jc.prune.magnitude(0.9, schedule=jc.prune.constant(update_every=every)))]
            + [(".*", None)]
        ),
        "rigl 90% (rewire every 100 steps)": jc.rules(
            [(".*/kernel", jc.prune.rigl(0.9, end=10**9, update_every=every))] + [(".*", None)]
        ),
    }
    states, steps = {}, {}
    for name, comp in variants.items():
        states[name], steps[name] = _make(comp, x)
        states[name] = block(steps[name](states[name], x, y))  # compile

    def run(name):
        def go():
            s = states[name]
            for _ in range(block_steps):
                s = steps[name](s, x, y)
            states[name] = block(s)

        return go

    t = time_interleaved({n: run(n) for n in variants}, rounds=rounds, warmup=1)
    r = ratios(t, "dense")
    counts = {n: int(jax.device_get(states[n].step)) for n in variants}
    rows = [
        {
            "variant": n,
            "ms / step (median)": t[n]["median_s"] / block_steps * 1e3,
            "p10": t[n]["p10_s"] / block_steps * 1e3,
            "p90": t[n]["p90_s"] / block_steps * 1e3,
            "vs dense (median)": r[n],
            "vs dense (p10)": t[n]["p10_s"] / t["dense"]["p10_s"],
        }
        for n in variants
    ]
    md = [
        "# Train-step overhead of pruning",
        "",
        f"MLP 784-512-512-10, batch 256, adam, jc.flax.TrainState; blocks of {block_steps} steps "
        f"(one mask update per block), {rounds} interleaved rounds, medians.",
        "",
        markdown_table(rows),
        "",
        "Target: pruned / dense <= 1.05 (median ratio; the p10 ratio is the same comparison on "
        "each variant's fastest rounds, less exposed to load spikes). Machine: shared 2-core "
        "CPU, other jobs running.",
    ]
    write_results(
        "prune_train" + ("_quick" if args.quick else ""),
        {"quick": args.quick, "rows": rows, "timings": t, "steps_run": counts},
        "\n".join(md),
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
