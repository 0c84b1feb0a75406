"""Train-step adapters and checkpoints: what wrapping a step costs, what a checkpoint weighs.

Step time (median of interleaved rounds) of one jitted train step of an MLP, for:

* linen: ``flax.training.train_state.TrainState`` (baseline) vs ``jc.flax.TrainState`` with
  ``jc.identity()`` (the adapter alone) and with int8 QAT + 50% magnitude pruning;
* NNX under ``nnx.jit``: the bare model + ``nnx.Optimizer`` (baseline) vs
  ``jc.flax.Compressed(model, jc.identity())`` and with QAT + pruning;
* NNX, functional form (``nnx.split`` once, ``jax.jit`` of a step over the state): the same.

Targets: the adapter alone (identity compressor) costs at most 5% over the baseline step
(ratio <= 1.05) in the linen and the functional NNX forms, and compiles to a program doing the
same work (XLA cost analysis: equal flops and bytes accessed; timing on a shared machine is
noisy, the cost analysis is not). ``nnx.jit`` adds Python work per
call for every variable in the graph (the wrapper adds the compressor state's); that ratio is
reported, not targeted.

Checkpoints: ``jc.io.save`` / ``jc.io.restore`` time and size (logical bytes vs bytes on disk)
of a ``jc.flax.TrainState`` with QAT + pruning, before and after the pruning step.

Run: ``python benchmarks/adapters.py [--quick]``; the full run writes
``benchmarks/results/adapters.{json,md}`` (``--quick`` only prints).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training import train_state as flax_train_state

import jaxcompress as jc

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks import _harness  # noqa: E402


def qat_prune(at_step: int) -> jc.Compressor:
    return jc.rules(
        [
            (".*/kernel", jc.chain(jc.prune.magnitude(0.5, at_step=at_step), jc.quant.qat(8))),
            (".*/bias", None),
        ]
    )


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def compiled_cost(jitted, *args) -> dict:
    """XLA's cost analysis of the compiled step: a noise-free measure of the work it does."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def linen_variants(features, x, y, tx):
    model = jc.workloads.MLP(features)
    params = model.init(jax.random.key(0), x[:1])["params"]

    @jax.jit
    def plain_step(state, x, y):
        grads = jax.grad(lambda p: xent(state.apply_fn({"params": p}, x), y))(state.params)
        return state.apply_gradients(grads=grads)

    @jax.jit
    def jc_step(state, x, y):
        def loss(v):
            return xent(state.apply_fn({"params": state.compress(v)}, x), y)

        return state.apply_gradients(grads=jax.grad(loss)(state.trainables))

    states = {
        "linen plain": flax_train_state.TrainState.create(
            apply_fn=model.apply, params=params, tx=tx
        ),
        "linen jc identity": jc.flax.TrainState.create(
            apply_fn=model.apply, params=params, tx=tx, compressor=jc.identity()
        ),
        "linen jc qat8+prune50": jc.flax.TrainState.create(
            apply_fn=model.apply, params=params, tx=tx, compressor=qat_prune(1)
        ),
    }
    variants, costs = {}, {}
    for name, state in states.items():
        step = plain_step if name == "linen plain" else jc_step
        box = [state]

        def run(box=box, step=step):
            box[0] = step(box[0], x, y)
            _harness.block(box[0].params)

        variants[name] = run
        costs[name] = compiled_cost(step, state, x, y)
    return variants, costs


def nnx_variants(features, x, y, tx):
    def nnx_step(model, optimizer, x, y):
        grads = nnx.grad(lambda m: xent(m(x), y))(model)
        optimizer.update(model, grads)
        if isinstance(model, jc.flax.Compressed):
            model.update(grads)

    jit_step = nnx.jit(nnx_step)
    variants, costs = {}, {}
    for comp_name, comp in [
        ("plain", None),
        ("jc identity", jc.identity()),
        ("jc qat8+prune50", qat_prune(1)),
    ]:
        for form in ("nnx.jit", "functional"):
            model = jc.workloads.MLPNNX(x.shape[1], features, rngs=nnx.Rngs(0))
            if comp is not None:
                model = jc.flax.Compressed(model, comp)
            optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
            name = f"nnx {form} {comp_name}"
            if form == "nnx.jit":

                def run(model=model, optimizer=optimizer):
                    jit_step(model, optimizer, x, y)
                    _harness.block(nnx.state(model))

            else:
                graphdef, state = nnx.split((model, optimizer))

                @jax.jit
                def functional(state, x, y, graphdef=graphdef):
                    model, optimizer = nnx.merge(graphdef, state)
                    nnx_step(model, optimizer, x, y)
                    return nnx.state((model, optimizer))

                box = [state]

                def run(box=box, functional=functional):
                    box[0] = functional(box[0], x, y)
                    _harness.block(box[0])

                costs[name] = compiled_cost(functional, state, x, y)
            variants[name] = run
    return variants, costs


def checkpoint_rows(features, x, y, tx, repeats):
    model = jc.workloads.MLP(features)
    params = model.init(jax.random.key(0), x[:1])["params"]
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=tx, compressor=qat_prune(2)
    )

    @jax.jit
    def step(state, x, y):
        def loss(v):
            return xent(state.apply_fn({"params": state.compress(v)}, x), y)

        return state.apply_gradients(grads=jax.grad(loss)(state.trainables))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mngr = jc.io.checkpoint_manager(tmp, max_to_keep=None)
        for label, n_steps in (("dense (step 1)", 1), ("50% pruned (step 2)", 1)):
            for _ in range(n_steps):
                state = step(state, x, y)
            _harness.block(state)
            save_s, restore_s = [], []
            for r in range(repeats):
                k = int(state.step) * 1000 + r
                t0 = time.perf_counter()
                jc.io.save(mngr, k, state)
                save_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                restored = jc.io.restore(mngr, state, step=k)
                _harness.block(restored)
                restore_s.append(time.perf_counter() - t0)
            rows.append(
                {
                    "checkpoint": label,
                    "logical_bytes": jc.io.logical_bytes(state),
                    "disk_bytes": jc.io.disk_bytes(mngr, k),
                    "disk/logical": jc.io.disk_bytes(mngr, k) / jc.io.logical_bytes(state),
                    "save_ms": 1e3 * float(np.median(save_s)),
                    "restore_ms": 1e3 * float(np.median(restore_s)),
                }
            )
        mngr.close()
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few rounds")
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. h100)")
    args = parser.parse_args(argv)
    if args.quick:
        features, batch, in_dim, rounds, repeats = (64, 10), 32, 64, 5, 2
    else:
        features, batch, in_dim, rounds, repeats = (512, 256, 10), 128, 784, 60, 5
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, in_dim)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, features[-1], size=batch).astype(np.int32))
    tx = optax.adam(1e-3)

    linen_v, costs = linen_variants(features, x, y, tx)
    nnx_v, nnx_costs = nnx_variants(features, x, y, tx)
    costs.update(nnx_costs)
    linen = _harness.time_interleaved(linen_v, rounds=rounds)
    nnx_t = _harness.time_interleaved(nnx_v, rounds=rounds)
    linen_ratio = _harness.ratios(linen, "linen plain")
    ratios = {**linen_ratio}
    for form in ("nnx.jit", "functional"):
        base = f"nnx {form} plain"
        sub = {k: v for k, v in nnx_t.items() if k.startswith(f"nnx {form} ")}
        ratios.update(_harness.ratios(sub, base))
    timings = {**linen, **nnx_t}
    step_rows = [
        {
            "variant": name,
            "median_ms": 1e3 * t["median_s"],
            "p10_ms": 1e3 * t["p10_s"],
            "p90_ms": 1e3 * t["p90_s"],
            "ratio_vs_plain": ratios[name],
            "gflops": costs[name]["flops"] / 1e9 if name in costs else "",
            "MB_accessed": costs[name]["bytes"] / 1e6 if name in costs else "",
        }
        for name, t in timings.items()
    ]
    ckpt_rows = checkpoint_rows(features, x, y, tx, repeats)
    targets = {
        "linen identity ratio <= 1.05": ratios["linen jc identity"] <= 1.05,
        "functional NNX identity ratio <= 1.05": ratios["nnx functional jc identity"] <= 1.05,
        "linen identity compiles to the same flops and bytes as plain": costs["linen jc identity"]
        == costs["linen plain"],
        "functional NNX identity compiles to the same flops and bytes as plain": costs[
            "nnx functional jc identity"
        ]
        == costs["nnx functional plain"],
    }
    md = "\n\n".join(
        [
            "# Train-step adapters and checkpoints",
            f"MLP {features}, batch {batch}, input {in_dim}, adam; {rounds} interleaved "
            f"rounds, medians. Backend {jax.default_backend()}, "
            f"{len(jax.devices())} device(s); shared machine, see the JSON for the environment.",
            "## Step time (ratio: vs the plain step of the same form)",
            _harness.markdown_table(step_rows),
            "## Targets",
            "\n".join(f"- {k}: {'met' if v else 'NOT met'}" for k, v in targets.items()),
            "## Checkpoints (jc.flax.TrainState, int8 QAT + 50% pruning)",
            _harness.markdown_table(ckpt_rows),
        ]
    )
    data = {
        "config": {"features": list(features), "batch": batch, "in_dim": in_dim, "rounds": rounds},
        "steps": step_rows,
        "checkpoints": ckpt_rows,
        "targets": targets,
        "quick": args.quick,
    }
    print(md)
    if not args.quick:  # a smoke run does not overwrite the committed results
        name = f"adapters_{args.tag}" if args.tag else "adapters"
        print(f"\nwrote {_harness.write_results(name, data, md)}")
    return data


if __name__ == "__main__":
    main()
