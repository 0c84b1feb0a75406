"""A test-only Compressor with a ``trainable`` field: one learned multiplier per leaf.

It exercises the trainable-compression convention (DESIGN §1) in the train-step adapters and
checkpoints without depending on a real method (LSQ, k-means) being present. ``update`` also
records the sum of the gradients it receives, so tests can check that grads reach it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import jaxcompress as jc


class LearnedScaleState(NamedTuple):
    count: jax.Array  # int32[]: number of update calls
    trainable: Any  # per-leaf float32[] learned multiplier (None for leaves not owned)
    grad_sum: jax.Array  # float32[]: sum of all gradient entries seen by the last update


def learned_scale(init_scale: float = 1.0) -> jc.Compressor:
    """``apply``: ``w * s`` with one trainable scalar ``s`` per leaf."""

    def init(params):
        return LearnedScaleState(
            count=jnp.zeros([], jnp.int32),
            trainable=jax.tree.map(lambda _: jnp.full([], init_scale, jnp.float32), params),
            grad_sum=jnp.zeros([], jnp.float32),
        )

    def apply(params, state):
        return jax.tree.map(lambda w, s: w * s.astype(w.dtype), params, state.trainable)

    def update(params, state, grads=None):
        if grads is None:
            gsum = jnp.zeros([], jnp.float32)
        else:
            gsum = sum(
                (jnp.sum(g.astype(jnp.float32)) for g in jax.tree.leaves(grads)),
                jnp.zeros([], jnp.float32),
            )
        return params, state._replace(count=state.count + 1, grad_sum=gsum)

    return jc.Compressor(init, apply, update)
