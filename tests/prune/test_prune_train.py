"""Pruning inside a Flax TrainState with optax.adamw: pruned weights stay exactly zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc

MODEL = jc.workloads.MLP((32, 10))


def init_params():
    shapes = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.ones((1, 20)))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * 0.3, s.dtype), shapes)


CASES = {
    "magnitude_polynomial_global": lambda: jc.prune.magnitude(
        0.8, scope="global", schedule=jc.prune.polynomial(begin=2, end=8, update_every=2)
    ),
    "rigl": lambda: jc.prune.rigl(0.8, end=10, update_every=3, distribution="uniform"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pruned_weights_stay_zero_through_adamw(name):
    comp = jc.rules([(".*/kernel", CASES[name]()), (".*", None)])
    tx = optax.adamw(3e-2, weight_decay=0.1)
    state = jc.flax.TrainState.create(
        apply_fn=MODEL.apply, params=init_params(), tx=tx, compressor=comp
    )
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(64, 20)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=64), jnp.int32)

    @jax.jit
    def train_step(state):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for _ in range(12):
        state, loss = train_step(state)
        losses.append(float(loss))
        masks = jc.prune.masks(state.params, state.compression)
        for layer in ("Dense_0", "Dense_1"):
            w = np.asarray(state.params[layer]["kernel"])
            m = np.asarray(masks[layer]["kernel"])
            assert not np.any(w[~m]), f"pruned weights moved in {layer}"
        # what the model runs on is exactly the stored params
        view = state.compress(state.params)
        jax.tree.map(np.testing.assert_array_equal, view, state.params)
    # the optimizer state did carry momentum for the pruned weights: zero only by masking
    mu = state.opt_state[0].mu.params["Dense_0"]["kernel"]
    m = np.asarray(masks["Dense_0"]["kernel"])
    assert np.any(np.asarray(mu)[~m] != 0)
    final = sum(int(masks[k]["kernel"].sum()) for k in ("Dense_0", "Dense_1"))
    total = 20 * 32 + 32 * 10
    expected = {"magnitude_polynomial_global": 0.8, "rigl": 0.8}[name]
    assert abs(final - (1 - expected) * total) <= 2
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
