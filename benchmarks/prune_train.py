"""Train-step overhead of pruning: MLP 784-512-512-10, batch 256, masks updated every 100 steps.

Dense (``jc.identity()``) and pruned (90% magnitude pruning of the kernels, masks recomputed
every 100 steps; RigL at 90%, rewired every 100 steps) train steps with ``jc.flax.TrainState``
and adam, jitted with and without donating the state, timed interleaved in blocks of 100 steps
(so each pruned block contains exactly one mask recomputation), medians.
Target: pruned / dense <= 1.05.

Run: ``python -m benchmarks.prune_train [--quick]``.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcompress as jc
from benchmarks._harness import block, markdown_table, time_interleaved, write_results


def _batch(n: int = 256):
    try:
        ds = jc.workloads.load_mnist()
        x, y = ds.x_train[:n], ds.y_train[:n]
    except jc.workloads.DataNotFoundError:
        rng = np.random.default_rng(0)
        x, y = rng.uniform(size=(n, 784)).astype(np.float32), rng.integers(0, 10, n)
    return jnp.asarray(x), jnp.asarray(y, jnp.int32)


def _make(comp, x, donate):
    model = jc.workloads.MLP((512, 512, 10))
    params = jax.jit(model.init)(jax.random.key(0), x[:1])["params"]
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-3), compressor=comp
    )

    # donate: the usual production step, the state's buffers updated in place.
    @functools.partial(jax.jit, donate_argnums=0 if donate else ())
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
    methods = {
        "dense": jc.identity(),
        "magnitude 90% (masks every 100 steps)": jc.rules(
            [(".*/kernel", jc.prune.magnitude(0.9, schedule=jc.prune.constant(update_every=every)))]
            + [(".*", None)]
        ),
        "rigl 90% (rewire every 100 steps)": jc.rules(
            [(".*/kernel", jc.prune.rigl(0.9, end=10**9, update_every=every))] + [(".*", None)]
        ),
    }
    variants = {(m, donate): comp for donate in (True, False) for m, comp in methods.items()}
    states, steps = {}, {}
    for key, comp in variants.items():
        states[key], steps[key] = _make(comp, x, donate=key[1])
        states[key] = block(steps[key](states[key], x, y))  # compile

    def run(name):
        def go():
            s = states[name]
            for _ in range(block_steps):
                s = steps[name](s, x, y)
            states[name] = block(s)

        return go

    names = {key: f"{key[0]} [{'donated' if key[1] else 'not donated'}]" for key in variants}
    t = time_interleaved({names[k]: run(k) for k in variants}, rounds=rounds, warmup=1)
    counts = {names[k]: int(jax.device_get(states[k].step)) for k in variants}
    rows = []
    for key in variants:
        n, base = names[key], names[("dense", key[1])]
        rows.append(
            {
                "variant": n,
                "ms / step (median)": t[n]["median_s"] / block_steps * 1e3,
                "p10": t[n]["p10_s"] / block_steps * 1e3,
                "p90": t[n]["p90_s"] / block_steps * 1e3,
                "vs dense (median)": t[n]["median_s"] / t[base]["median_s"],
                "vs dense (p10)": t[n]["p10_s"] / t[base]["p10_s"],
            }
        )
    md = [
        "# Train-step overhead of pruning",
        "",
        f"MLP 784-512-512-10, batch 256, adam, jc.flax.TrainState, jitted with and without "
        f"donating the state (each compared with dense of the same kind); blocks of {block_steps} "
        "steps "
        f"(one mask update per block), {rounds} interleaved rounds, medians.",
        "",
        markdown_table(rows),
        "",
        "Target: pruned / dense <= 1.05 (median ratio; the p10 ratio is the same comparison on "
        "each variant's fastest rounds, less exposed to load spikes). The pruned step adds one "
        "elementwise pass (the masked weights the forward runs on); without donation XLA also "
        "copies the state buffers the mask-update conditional passes through. Machine: shared "
        "2-core CPU, other jobs running.",
    ]
    write_results(
        "prune_train" + ("_quick" if args.quick else ""),
        {"quick": args.quick, "rows": rows, "timings": t, "steps_run": counts},
        "\n".join(md),
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
