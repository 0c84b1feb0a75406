"""MNIST accuracy under pruning: polynomial (Zhu-Gupta) magnitude pruning at 50/80/90/95%,
N:M 2:4 and RigL at 90%, against the dense MLP 784-512-512-10.

Every variant trains the same model from the same init on the same batches (adam with cosine
learning-rate decay, batch 128) with ``jc.flax.TrainState``; test accuracy of the finalized
(pruned) params. Target: 90% sparsity within 0.5 point of dense.

Run: ``python -m benchmarks.prune_accuracy [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jaxcompress as jc
from benchmarks import _models
from benchmarks._harness import markdown_table, write_results

BATCH = 128


def variants(total: int, per_epoch: int, quick: bool) -> dict:
    every = 10 if quick else 100
    begin = per_epoch  # prune after one dense epoch
    end = begin + every * max(1, round(0.5 * (total - begin) / every))  # then fine-tune
    poly = jc.prune.polynomial(begin=begin, end=end, update_every=every)
    out = {"dense": jc.identity()}
    for s in (0.5, 0.8, 0.9, 0.95):
        out[f"magnitude {s:.0%} polynomial"] = _models.kernels(
            jc.prune.magnitude(s, schedule=poly, scope="global")
        )
    out["N:M 2:4 magnitude"] = _models.kernels(
        jc.prune.magnitude(
            structure=jc.prune.nm(2, 4), schedule=jc.prune.constant(end=end, update_every=every)
        )
    )
    out["RigL 90% (ERK)"] = _models.kernels(
        jc.prune.rigl(0.9, end=int(0.75 * total), update_every=every, drop_fraction=0.3)
    )
    if quick:
        out = {k: out[k] for k in ("dense", "magnitude 90% polynomial", "RigL 90% (ERK)")}
    return out


def train(comp, ds, epochs: int, seed: int = 0) -> dict:
    model = jc.workloads.MLP((512, 512, 10))
    x_tr, y_tr = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    per_epoch = len(ds.x_train) // BATCH
    total = per_epoch * epochs
    params = jax.jit(model.init)(jax.random.key(seed), x_tr[:1])["params"]
    tx = optax.adam(optax.cosine_decay_schedule(1e-3, total))
    state = jc.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx, compressor=comp)

    def step(state, idx):
        x, y = x_tr[idx], y_tr[idx]

        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def epoch(state, key):
        perm = jax.random.permutation(key, len(ds.x_train))[: per_epoch * BATCH]
        return lax.scan(step, state, perm.reshape(per_epoch, BATCH))

    @jax.jit
    def accuracy(params, x, y):
        logits = model.apply({"params": params}, x)
        return jnp.mean(jnp.argmax(logits, -1) == y)

    t0 = time.perf_counter()
    losses = []
    for e in range(epochs):
        state, loss = epoch(state, jax.random.key(1000 + e))
        losses.append(float(loss.mean()))
    train_s = time.perf_counter() - t0
    final = state.finalized_params()
    summ = jc.summary(state.compressor, final, state.compression)
    kernels = [r for r in summ.leaves if r.path.endswith("kernel")]
    kept = sum(round((1 - r.sparsity) * np.prod(r.shape)) for r in kernels)
    size = sum(int(np.prod(r.shape)) for r in kernels)
    return {
        "test accuracy %": 100
        * float(accuracy(final, jnp.asarray(ds.x_test), jnp.asarray(ds.y_test))),
        "val accuracy %": 100
        * float(accuracy(final, jnp.asarray(ds.x_val), jnp.asarray(ds.y_val))),
        "kernel sparsity %": 100 * (1 - kept / size),
        "final train loss": losses[-1],
        "size vs float32": summ.ratio,
        "train s": train_s,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 short epochs, 3 variants")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 10)
    ds = jc.workloads.load_mnist()
    if args.quick:
        ds = ds._replace(x_train=ds.x_train[:6400], y_train=ds.y_train[:6400])
    per_epoch = len(ds.x_train) // BATCH
    rows = []
    for name, comp in variants(per_epoch * epochs, per_epoch, args.quick).items():
        r = train(comp, ds, epochs)
        rows.append({"variant": name, **r})
        print(name, {k: round(v, 3) for k, v in r.items()}, flush=True)
    dense = rows[0]["test accuracy %"]
    for r in rows:
        r["vs dense (pt)"] = r["test accuracy %"] - dense
    cols = ["variant", "test accuracy %", "vs dense (pt)", "val accuracy %", "kernel sparsity %"]
    cols += ["size vs float32", "final train loss", "train s"]
    target = next((r for r in rows if r["variant"].startswith("magnitude 90%")), None)
    md = [
        "# MNIST accuracy under pruning",
        "",
        f"MLP 784-512-512-10, {epochs} epochs of {per_epoch} steps (batch {BATCH}), adam 1e-3 with "
        "cosine decay, jc.flax.TrainState; all kernels pruned (global scope for magnitude), "
        "biases dense. Polynomial schedule: dense for one epoch, Zhu-Gupta (power 3) to the "
        "target over half of the remaining steps, masks every 100 steps (10 with --quick), then "
        "fine-tuning. N:M 2:4 masks follow the weights every 100 steps over the same span. "
        "RigL: ERK, rewiring every 100 steps until 75% of training, drop fraction 0.3 (cosine).",
        "",
        markdown_table(rows, cols),
        "",
    ]
    if target is not None:
        md.append(
            f"Target: 90% within 0.5 pt of dense: {target['vs dense (pt)']:+.2f} pt "
            f"({'met' if target['vs dense (pt)'] >= -0.5 else 'not met'})."
        )
    data = {"quick": args.quick, "epochs": epochs, "rows": rows}
    write_results("prune_accuracy" + ("_quick" if args.quick else ""), data, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
