"""MNIST accuracy of quantization-aware training: float vs int8, int4, int2-LSQ, binary.

MLP 784-512-512-10 (``jc.workloads.MLP``), adam, batch 128, the same schedule for every
variant, trained from scratch with ``jc.flax.TrainState``; kernels are quantized, biases stay
float. Test accuracy is measured on the *exported* model: ``jc.quant.quantize`` to integer
``QArray``s, then the model runs on ``jc.quant.dequantize`` of them (equal to the training
forward); the w8a8 rows run the real int8 x int8 -> int32 Dense path (``w8a8`` also trains on
it).

Targets (drop vs float, percentage points): int8 <= 0.2, int4 <= 0.5, int2-LSQ <= 2.

Run: ``PYTHONPATH=. python benchmarks/quant_accuracy.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import optax

import jaxcompress as jc
from benchmarks import _harness, _models

FEATURES = (512, 512, 10)
BATCH = 128
TARGETS = {"int8": 0.2, "int4_group": 0.5, "int2_lsq": 2.0}


def variants():
    int4 = _models.int4_group()
    q8 = _models.kernels(jc.quant.qat(bits=8))
    # name -> (compressor, activation bits, residuals, int_matmul)
    return {
        "float": (jc.identity(), None, "original", False),
        "int8": (q8, None, "original", False),
        "int4_group": (int4, None, "original", False),
        "int2_lsq": (
            _models.kernels(jc.quant.qat(bits=2, learn_scale=True)),
            None,
            "original",
            False,
        ),
        "binary": (_models.kernels(jc.quant.qat(bits="binary")), None, "original", False),
        # w8a8 trained on the int8 x int8 -> int32 forward (kernels quantized in the layer)
        "w8a8": (jc.identity(), 8, "original", True),
        "w8a8_quantized_residuals": (jc.identity(), 8, "quantized", True),
        # the same grids with fake-quantized activations and float matmuls
        "w8a8_fake_quant": (q8, 8, "original", False),
    }


def train(name, comp, act_bits, ds, *, epochs, lr, residuals="original", int_matmul=False, seed=0):
    model = jc.workloads.MLP(FEATURES)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 784)))["params"]
    steps_per_epoch = len(ds.x_train) // BATCH
    sched = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(sched), compressor=comp
    )

    step = jax.jit(_models.quant_step(act_bits, residuals=residuals, int_matmul=int_matmul))

    t0 = time.perf_counter()
    for xb, yb in jc.workloads.batches(ds.x_train, ds.y_train, BATCH, seed=seed, epochs=epochs):
        state = step(state, xb, yb)
    jax.block_until_ready(state.params)
    train_s = time.perf_counter() - t0

    # Evaluate the exported model (integers), not the float params.
    if isinstance(comp, type(jc.identity())) and name == "float":
        eval_params = state.params
        qbytes = sum(x.nbytes for x in jax.tree.leaves(state.params))
    else:
        if int_matmul:
            # trained on qat(bits=8)'s weight grid inside the layer: export through it
            q8 = _models.kernels(jc.quant.qat(bits=8))
            qparams = jc.quant.quantize(state.params, q8.init(state.params), q8)
        else:
            qparams = jc.quant.quantize(state.params, state.compression, comp)
        qbytes = sum(
            (x.nbytes if jc.quant.is_qarray(x) else int(x.nbytes))
            for x in jax.tree.leaves(qparams, is_leaf=jc.quant.is_qarray)
        )
        # w8a8 runs the integer Dense path on the QArray kernels; the rest dequantize.
        eval_params = qparams if act_bits else jc.quant.dequantize(qparams)

    @jax.jit
    def predict(p, x):
        if not act_bits:
            return jnp.argmax(model.apply({"params": p}, x), -1)
        with jc.flax.quantize_activations(act_bits):
            return jnp.argmax(model.apply({"params": p}, x), -1)

    correct = 0
    for i in range(0, len(ds.x_test), 1000):
        pred = predict(eval_params, ds.x_test[i : i + 1000])
        correct += int(jnp.sum(pred == ds.y_test[i : i + 1000]))
    acc = 100.0 * correct / len(ds.x_test)
    return {"variant": name, "test_acc": acc, "weight_bytes": qbytes, "train_s": train_s}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args(argv)
    ds = jc.workloads.load_mnist()
    epochs = args.epochs or (1 if args.quick else 10)
    if args.quick:
        n = 512
        ds = ds._replace(x_train=ds.x_train[:n], y_train=ds.y_train[:n])
    rows = []
    quick_names = ("float", "int8", "int2_lsq", "w8a8")
    for name, (comp, act_bits, residuals, int_matmul) in variants().items():
        if args.quick and name not in quick_names:
            continue
        rows.append(
            train(
                name,
                comp,
                act_bits,
                ds,
                epochs=epochs,
                lr=args.lr,
                residuals=residuals,
                int_matmul=int_matmul,
            )
        )
        print(rows[-1], flush=True)
    quick_note = " on 512 examples, 4 variants (quick)" if args.quick else ""
    base = rows[0]["test_acc"]
    for r in rows:
        r["drop_pt"] = base - r["test_acc"]
        r["target_drop_pt"] = TARGETS.get(r["variant"], "")
        r["met"] = (r["drop_pt"] <= TARGETS[r["variant"]]) if r["variant"] in TARGETS else ""
    md = [
        "# Quantization accuracy on MNIST",
        "",
        f"MLP 784-512-512-10, adam (lr {args.lr}, cosine decay), batch {BATCH}, {epochs} "
        f"epoch(s) from scratch{quick_note}; test "
        "accuracy of the exported integer model. Kernels quantized, biases float. int4: per "
        "group of 128 (112 for the 784-input layer); int2-LSQ: learned step sizes per output "
        "channel; binary: sign(w) * mean|w| per output channel; w8a8: int8 weights and "
        "dynamic per-token int8 activations, trained on the int8 x int8 -> int32 forward "
        "(`quantize_activations(8, int_matmul=True)`, straight-through gradients; the kernel "
        "gradients from the original activations, the default; `w8a8_quantized_residuals`: "
        "from the dequantized int8 ones) and evaluated on the same integer path; "
        "`w8a8_fake_quant`: `qat(bits=8)` kernels and fake-quantized activations in training "
        "(float matmuls).",
        "",
        _harness.markdown_table(
            rows,
            ["variant", "test_acc", "drop_pt", "target_drop_pt", "met", "weight_bytes", "train_s"],
        ),
    ]
    data = {"rows": rows, "epochs": epochs, "quick": bool(args.quick), "targets": TARGETS}
    _harness.write_results("quant_accuracy" + ("_quick" if args.quick else ""), data, "\n".join(md))
    print("\n".join(md))
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
