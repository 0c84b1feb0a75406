"""The benchmark model and train steps shared by the benchmark scripts.

MLP 784-512-512-10, batch 256, adam: the float step and the compressed step differ only by
``state.compress`` in the loss, exactly as a user's step would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcompress as jc
from jaxcompress import workloads

FEATURES = (512, 512, 10)
BATCH = 256


def kernels(comp: jc.Compressor) -> jc.Compressor:
    """``comp`` on every ``kernel`` of the MLP; biases stay float."""
    return jc.rules([(".*/kernel", comp), (".*", None)])


def int4_group() -> jc.Compressor:
    """int4 per-group kernels: groups of 128 (112 for the 784-input layer, 784 = 7 x 112)."""
    return jc.rules(
        [
            ("Dense_0/kernel", jc.quant.qat(bits=4, group_size=112)),
            (".*/kernel", jc.quant.qat(bits=4, group_size=128)),
            (".*", None),
        ]
    )


def make_state(
    compressor: jc.Compressor | None, *, features=FEATURES, in_dim: int = 784, seed: int = 0
) -> jc.flax.TrainState:
    """A TrainState of the benchmark MLP (``jc.identity()`` when ``compressor`` is None)."""
    model = workloads.MLP(tuple(features))
    params = model.init(jax.random.key(seed), jnp.zeros((1, in_dim)))["params"]
    return jc.flax.TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=optax.adam(1e-3),
        compressor=compressor if compressor is not None else jc.identity(),
    )


def float_step(state, x, y):
    """The plain train step: no compression in the loss, no compressor update."""

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss_fn)(state.params)
    updates, opt_state = state.tx.update(
        jc.Trainables(grads, jc.trainable(state.compression)),
        state.opt_state,
        state.trainables,
    )
    new = optax.apply_updates(state.trainables, updates)
    return state.replace(step=state.step + 1, params=new.params, opt_state=opt_state)


def compressed_step(state, x, y):
    """The compressed train step (DESIGN §2)."""

    def loss_fn(v):
        logits = state.apply_fn({"params": state.compress(v)}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))


def quant_step(
    act_bits: int | None, *, residuals: str = "original", int_matmul: bool = False
) -> Callable:
    """:func:`compressed_step`, with the forward under ``jc.flax.quantize_activations(act_bits)``.

    ``act_bits`` None (or 0): weights only, i.e. :func:`compressed_step` itself.
    ``residuals``, ``int_matmul``: see ``jc.flax.quantize_activations``.
    """
    if not act_bits:
        return compressed_step

    def step(state, x, y):
        def loss_fn(v):
            with jc.flax.quantize_activations(act_bits, residuals=residuals, int_matmul=int_matmul):
                logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))

    return step


def random_batch(seed: int = 0, in_dim: int = 784, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((batch, in_dim), np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    return x, y


def stepper(step_fn: Callable, state: Any, x, y) -> Callable[[], Any]:
    """A zero-argument callable that runs one jitted step (state carried across calls)."""
    jitted = jax.jit(step_fn, donate_argnums=0)
    box = [state]

    def run():
        box[0] = jitted(box[0], x, y)
        jax.block_until_ready(box[0].params)
        return box[0]

    return run
