"""Models used by the CLI, configs and benchmarks (Flax linen)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """A ReLU multi-layer perceptron: ``Dense_0 .. Dense_{n-1}``, logits from the last.

    Attributes:
      features: widths of the layers, the last one being the number of outputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = MLP((32, 10))
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 64)))["params"]
      >>> model.apply({"params": params}, jnp.ones((2, 64))).shape
      (2, 10)
    """

    features: Sequence[int] = (512, 256, 10)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i, f in enumerate(self.features):
            x = nn.Dense(f, name=f"Dense_{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x
