"""Compress a hand-written MLP (no Flax): call a Compressor's init / apply / update directly.

The model is a dict of arrays and a function; the train step runs the loss on
``comp.apply(params, cstate)`` (fake-quantized, masked weights with straight-through
gradients), takes an optax step on the float params, then ``comp.update`` (which prunes at its
step and keeps pruned weights at zero). Works the same for Equinox or haiku-style models:
anything whose parameters are a pytree.

Run: ``python examples/plain_pytree.py [--steps 300]`` (a few seconds on CPU).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import jaxcompress as jc


def init_mlp(key: jax.Array, sizes: tuple[int, ...]) -> dict:
    """``{"Dense_i": {"kernel": [in, out], "bias": [out]}}``: the paths linen would use."""
    params = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        params[f"Dense_{i}"] = {
            "kernel": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
            "bias": jnp.zeros(n_out),
        }
    return params


def mlp(params: dict, x: jax.Array) -> jax.Array:
    n = len(params)
    for i in range(n):
        layer = params[f"Dense_{i}"]
        x = x @ layer["kernel"] + layer["bias"][None, :]  # explicit broadcast over the batch
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


def accuracy(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp(params, x), -1) == y)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--bits", type=int, default=8)
    args = parser.parse_args(argv)

    data = jc.workloads.load_digits()
    params = init_mlp(jax.random.key(0), (64, 128, 10))
    # Kernels: prune (one-shot, a third of the way in), then quantize; biases untouched.
    comp = jc.rules(
        [
            (
                ".*/kernel",
                jc.chain(
                    jc.prune.magnitude(args.sparsity, at_step=args.steps // 3),
                    jc.quant.qat(bits=args.bits),
                ),
            ),
            (".*/bias", None),
        ]
    )
    cstate = comp.init(params)
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, cstate, x, y):
        def loss_fn(params):
            logits = mlp(comp.apply(params, cstate), x)  # the compressed forward view
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params, cstate = comp.update(params, cstate, grads)  # after the optimizer
        return params, opt_state, cstate, loss

    batches = jc.workloads.batches(data.x_train, data.y_train, args.batch_size, seed=0)
    for step in range(args.steps):
        x, y = next(batches)
        params, opt_state, cstate, loss = train_step(params, opt_state, cstate, x, y)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")

    @jax.jit
    def evaluate(params, cstate, x, y):
        compressed = jc.finalize(comp, params, cstate)  # the evaluation / export view
        return accuracy(params, x, y), accuracy(compressed, x, y)

    float_acc, compressed_acc = evaluate(params, cstate, data.x_test, data.y_test)
    result = {"float_accuracy": float(float_acc), "compressed_accuracy": float(compressed_acc)}
    summary = jc.summary(comp, params, cstate)
    print(summary)
    result["ratio"] = summary.ratio
    print(
        f"test accuracy: float {result['float_accuracy']:.3f}, "
        f"compressed {result['compressed_accuracy']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
