"""Deep Compression on the MNIST MLP (784-512-256-10): prune -> share -> entropy-coded file.

Trains a float baseline, then fine-tunes copies of it with ``jc.cluster.deep_compression``
(magnitude pruning at step 0, k-means weight sharing later, centroids trained by the
TrainState's optimizer) or with pruning + 5-bit quantization, writes each result as one
artifact file (``jc.io.save_artifact``), loads it back and evaluates the loaded params.

Reported per variant: test accuracy (float and compressed, the drop in points), logical bytes
(bitmask + packed indices + codebooks + float32 biases) and bytes on disk (lzma and zlib),
their ratios to float32, and whether the loaded file gives exactly the same logits. Target
(Han et al. 2016): >= 40x smaller than float32 on disk with <= 1 point accuracy drop.

Also timed, interleaved: one train step of the plain model vs the same step with the Deep
Compression compressor (prune + shared-weight gather), and artifact encode / decode.

Run: ``PYTHONPATH=. python benchmarks/deep_compression.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcompress as jc
from benchmarks import _harness

FEATURES = (512, 256, 10)
# Per-layer sparsity as in Han et al.'s LeNet-300-100 (the input layer prunes hardest).
LAYER_SPARSITY = [("Dense_0/kernel", 0.95), ("Dense_1/kernel", 0.9), ("Dense_2/kernel", 0.7)]


def _batches(x, y, batch, seed):
    it = jc.workloads.batches(x, y, batch, seed=seed)
    for xb, yb in it:
        yield jnp.asarray(xb), jnp.asarray(yb)


def _make_step():
    @jax.jit
    def train_step(state, xb, yb):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))

    return train_step


def _accuracy(model, params, x, y, batch=2000):
    apply = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb), -1))
    hits = 0
    for i in range(0, len(x), batch):
        hits += int(
            jnp.sum(apply(params, jnp.asarray(x[i : i + batch])) == jnp.asarray(y[i : i + batch]))
        )
    return hits / len(x)


def _train(model, params, comp, x, y, steps, lr, seed):
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    state = jc.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx, compressor=comp)
    step = _make_step()
    for i, (xb, yb) in enumerate(_batches(x, y, 128, seed)):
        if i == steps:
            break
        state = step(state, xb, yb)
    return state


def _variant(name, model, float_params, comp, ds, steps, lr, float_acc, workdir, seed, codecs):
    t0 = time.perf_counter()
    state = _train(model, float_params, comp, ds.x_train, ds.y_train, steps, lr, seed)
    train_s = time.perf_counter() - t0
    final = state.finalized_params()
    summ = jc.summary(comp, state.params, state.compression)
    row = {"variant": name, "fine_tune_steps": steps, "train_s": round(train_s, 1)}
    xt = jnp.asarray(ds.x_test[:2000])
    ref_logits = np.asarray(model.apply({"params": final}, xt))
    for codec in codecs:
        path = os.path.join(workdir, f"{name}.{codec}.jca")
        t0 = time.perf_counter()
        info = jc.io.save_artifact(path, final, codec=codec)
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = jc.io.load_artifact(path)
        dec_s = time.perf_counter() - t0
        same = bool(np.array_equal(np.asarray(model.apply({"params": loaded}, xt)), ref_logits))
        row[f"{codec}_bytes"] = os.path.getsize(path)
        row[f"{codec}_ratio"] = info.ratio
        row[f"{codec}_encode_s"] = round(enc_s, 2)
        row[f"{codec}_decode_s"] = round(dec_s, 3)
        row[f"{codec}_same_logits"] = same
        if codec == "lzma":
            lzma_info, lzma_loaded = info, loaded
    acc = _accuracy(model, lzma_loaded, ds.x_test, ds.y_test)
    row.update(
        {
            "test_acc": acc,
            "drop_pts": 100 * (float_acc - acc),
            "logical_bytes": lzma_info.logical_bytes,
            "logical_ratio": lzma_info.logical_ratio,
            "summary_bytes": summ.logical_bytes,
            "float32_bytes": lzma_info.float32_bytes,
        }
    )
    return row, lzma_info, summ


def _timing(model, params, comp, ds, rounds):
    """One train step, plain vs Deep Compression compressor, interleaved (medians)."""
    step = _make_step()
    tx = optax.adam(1e-3)
    plain = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=tx, compressor=jc.identity()
    )
    dc = jc.flax.TrainState.create(apply_fn=model.apply, params=params, tx=tx, compressor=comp)
    xb, yb = jnp.asarray(ds.x_train[:128]), jnp.asarray(ds.y_train[:128])
    states = {"plain": plain, "deep_compression": dc}

    def run(name):
        def fn():
            states[name] = _harness.block(step(states[name], xb, yb))

        return fn

    t = _harness.time_interleaved({n: run(n) for n in states}, rounds=rounds, warmup=3, inner=5)
    return t, _harness.ratios(t, "plain")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    args = parser.parse_args(argv)
    quick = args.quick

    ds = jc.workloads.load_mnist()
    if quick:
        ds = ds._replace(x_train=ds.x_train[:6400], y_train=ds.y_train[:6400])
    float_steps = 100 if quick else 4000
    prune_steps = 30 if quick else 1500  # retrain the pruned network, then share
    share_steps = 30 if quick else 1500  # fine-tune the centroids
    model = jc.workloads.MLP(FEATURES)
    params = model.init(jax.random.key(0), jnp.ones((1, 784)))["params"]

    t0 = time.perf_counter()
    base = _train(model, params, jc.identity(), ds.x_train, ds.y_train, float_steps, 1e-3, 0)
    float_s = time.perf_counter() - t0
    float_params = base.params
    float_acc = _accuracy(model, float_params, ds.x_test, ds.y_test)
    float_bytes = sum(int(x.size) * 4 for x in jax.tree.leaves(float_params))

    steps = prune_steps + share_steps
    codecs = ("lzma",) if quick else ("lzma", "zlib")
    variants = {
        "prune_only": jc.rules([(rx, jc.prune.magnitude(s)) for rx, s in LAYER_SPARSITY]),
        "prune90_share32": jc.cluster.deep_compression(
            0.9, num_clusters=32, prune_at=0, share_at=prune_steps
        ),
        "prune_layers_share32": jc.cluster.deep_compression(
            LAYER_SPARSITY, num_clusters=32, prune_at=0, share_at=prune_steps
        ),
        "prune_layers_share16": jc.cluster.deep_compression(
            LAYER_SPARSITY, num_clusters=16, prune_at=0, share_at=prune_steps
        ),
        "prune_layers_quant5": jc.cluster.deep_compression(
            LAYER_SPARSITY, num_clusters=None, bits=5
        ),
    }
    if quick:  # the target variant only
        variants = {"prune_layers_share32": variants["prune_layers_share32"]}
    rows, tables = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for i, (name, comp) in enumerate(variants.items()):
            row, info, summ = _variant(
                name, model, float_params, comp, ds, steps, 3e-4, float_acc, workdir, 1 + i, codecs
            )
            rows.append(row)
            tables[name] = str(info)
            print(
                f"{name}: acc {row['test_acc']:.4f} (drop {row['drop_pts']:.2f} pts), "
                f"lzma {row['lzma_bytes']:,} B ({row['lzma_ratio']:.1f}x), "
                f"logical {row['logical_bytes']:,} B ({row['logical_ratio']:.1f}x)",
                flush=True,
            )

    main_row = next(r for r in rows if r["variant"] == "prune_layers_share32")
    target = {
        "ratio_on_disk_min": 40.0,
        "drop_pts_max": 1.0,
        "met": bool(main_row["lzma_ratio"] >= 40 and main_row["drop_pts"] <= 1.0),
    }
    timing, ratio = _timing(
        model, float_params, variants["prune_layers_share32"], ds, rounds=3 if quick else 30
    )
    load = os.getloadavg()

    md = [
        "# Deep Compression on the MNIST MLP (784-512-256-10)",
        "",
        f"Float32 baseline: test accuracy {float_acc:.4f} after {float_steps} Adam steps "
        f"({float_s:.0f} s); {float_bytes:,} B of params. Each variant fine-tunes the baseline "
        f"for {steps} steps (pruned at step 0, shared at step {prune_steps}), is saved as one "
        "artifact file, loaded back and evaluated from the file.",
        "",
        f"Target: >= 40x smaller on disk with <= 1 pt drop (variant `prune_layers_share32`): "
        f"**{'met' if target['met'] else 'NOT met'}** "
        f"({main_row['lzma_ratio']:.1f}x, {main_row['drop_pts']:.2f} pts).",
        "",
        _harness.markdown_table(
            rows,
            [
                "variant",
                "test_acc",
                "drop_pts",
                "logical_bytes",
                "logical_ratio",
                "lzma_bytes",
                "lzma_ratio",
                *(["zlib_bytes", "zlib_ratio"] if "zlib" in codecs else []),
                "lzma_same_logits",
                "lzma_encode_s",
                "lzma_decode_s",
            ],
        ),
        "",
        "Per-leaf encoding of the target variant (lzma):",
        "",
        "```",
        tables["prune_layers_share32"],
        "```",
        "",
        f"Train step, plain vs Deep Compression compressor (batch 128, medians of interleaved "
        f"rounds; load average {load[0]:.1f} on {os.cpu_count()} cores):",
        "",
        _harness.markdown_table(
            [
                {"variant": n, "median_ms": 1e3 * t["median_s"], "ratio": ratio[n]}
                for n, t in timing.items()
            ]
        ),
    ]
    if quick:
        md.insert(
            2, "**Quick smoke run (`--quick`): small data and few steps; not the figures.**\n"
        )
    name = "deep_compression_quick" if quick else "deep_compression"
    path = _harness.write_results(
        name,
        {
            "quick": quick,
            "float_acc": float_acc,
            "float_bytes": float_bytes,
            "float_steps": float_steps,
            "fine_tune_steps": steps,
            "prune_steps": prune_steps,
            "layer_sparsity": LAYER_SPARSITY,
            "rows": rows,
            "target": target,
            "train_step_timing": timing,
            "train_step_ratio": ratio,
            "loadavg": load,
            "artifact_tables": tables,
        },
        "\n".join(md),
    )
    print("\n".join(md))
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
