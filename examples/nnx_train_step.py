"""Compress a Flax NNX MLP while it trains, with ``nnx.Optimizer``.

A standard NNX train step changes in two lines: wrap the model,
``cmodel = jc.flax.Compressed(model, comp)`` (build the optimizer on the wrapper, so trainable
compression variables such as LSQ step sizes are trained too), and call
``cmodel.update(grads)`` after ``optimizer.update``. ``cmodel(x)`` runs the model on its
compressed params; ``cmodel.finalized_model()`` is the compressed model for evaluation.

Run: ``python examples/nnx_train_step.py [--steps 300]``.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import optax
from flax import nnx

import jaxcompress as jc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prune-at", type=int, default=100, help="step of one-shot pruning")
    args = parser.parse_args(argv)

    data = jc.workloads.load_digits()
    model = jc.workloads.MLPNNX(64, (128, 10), rngs=nnx.Rngs(0))
    # The same recipe as for the linen MLP: NNX params have the same Dense_i/kernel paths.
    comp = jc.rules(
        [
            (
                ".*/kernel",
                jc.chain(jc.prune.magnitude(0.5, at_step=args.prune_at), jc.quant.qat(8)),
            ),
            (".*/bias", None),
        ]
    )
    cmodel = jc.flax.Compressed(model, comp)
    optimizer = nnx.Optimizer(cmodel, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(cmodel, optimizer, x, y):
        def loss_fn(cmodel):
            logits = cmodel(x)  # the model on its compressed params
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(cmodel)
        optimizer.update(cmodel, grads)
        cmodel.update(grads)  # masks, scales, schedules; re-zeroes pruned weights
        return loss

    batches = jc.workloads.batches(data.x_train, data.y_train, args.batch_size, seed=0)
    for step in range(args.steps):
        loss = train_step(cmodel, optimizer, *next(batches))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")

    @nnx.jit
    def evaluate(cmodel, x, y):
        def accuracy(model):
            return jnp.mean(jnp.argmax(model(x), -1) == y)

        return accuracy(cmodel.model), accuracy(cmodel.finalized_model())

    float_acc, compressed_acc = evaluate(cmodel, data.x_test, data.y_test)
    summary = cmodel.summary()
    print(summary)
    result = {
        "float_accuracy": float(float_acc),
        "compressed_accuracy": float(compressed_acc),
        "ratio": summary.ratio,
        "cmodel": cmodel,
    }
    print(
        f"test accuracy: float {result['float_accuracy']:.3f}, "
        f"compressed {result['compressed_accuracy']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
