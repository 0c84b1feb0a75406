"""Compress a Flax linen MLP while it trains, with checkpoints that resume exactly.

A standard linen train step changes in three lines: ``jc.flax.TrainState.create(...,
compressor=comp)``, the model runs on ``state.compress(v)``, and the gradient is taken w.r.t.
``state.trainables``; ``apply_gradients`` also runs ``comp.update``. With ``--ckpt DIR`` the
run saves its state (params, optimizer state, compressor state, step) every ``--save-every``
steps and, when started again, resumes from the latest checkpoint bit-identically.

Run: ``python examples/linen_train_step.py [--steps 300] [--ckpt /tmp/ckpt]``.
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
import optax

import jaxcompress as jc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ckpt", default=None, help="checkpoint directory (resumes if present)")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--prune-at", type=int, default=100, help="step of one-shot pruning")
    args = parser.parse_args(argv)

    data = jc.workloads.load_digits()
    model = jc.workloads.MLP((128, 10))
    params = model.init(jax.random.key(0), data.x_train[:1])["params"]
    comp = jc.rules(
        [
            (
                ".*/kernel",
                jc.chain(jc.prune.magnitude(0.5, at_step=args.prune_at), jc.quant.qat(8)),
            ),
            (".*/bias", None),
        ]
    )
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(3e-3), compressor=comp
    )

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    manager = None
    if args.ckpt:
        manager = jc.io.checkpoint_manager(args.ckpt, max_to_keep=2)
        if jc.io.latest_step(manager) is not None:
            state = jc.io.restore(manager, state)  # the fresh state is the template
            print(f"resumed at step {int(state.step)}")

    start = int(state.step)
    # batches() is deterministic, so skipping the steps already done gives the same data.
    batches = itertools.islice(
        jc.workloads.batches(data.x_train, data.y_train, args.batch_size, seed=0), start, None
    )
    for step in range(start, args.steps):
        state, loss = train_step(state, *next(batches))
        done = step + 1
        if step % 100 == 0 or done == args.steps:
            print(f"step {step:4d}  loss {float(loss):.4f}")
        if manager is not None and (done % args.save_every == 0 or done == args.steps):
            jc.io.save(manager, done, state)
    if manager is not None:
        manager.close()

    @jax.jit
    def evaluate(state, x, y):
        def accuracy(params):
            logits = state.apply_fn({"params": params}, x)
            return jnp.mean(jnp.argmax(logits, -1) == y)

        return accuracy(state.params), accuracy(state.finalized_params())

    float_acc, compressed_acc = evaluate(state, data.x_test, data.y_test)
    summary = jc.summary(comp, state.params, state.compression)
    print(summary)
    result = {
        "step": int(state.step),
        "float_accuracy": float(float_acc),
        "compressed_accuracy": float(compressed_acc),
        "ratio": summary.ratio,
        "state": state,
    }
    print(
        f"test accuracy: float {result['float_accuracy']:.3f}, "
        f"compressed {result['compressed_accuracy']:.3f}"
    )
    return result


if __name__ == "__main__":
    main()
