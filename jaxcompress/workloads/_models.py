"""Models used by the CLI, configs and benchmarks (Flax linen, and NNX twins)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
from flax import nnx


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


class MLPNNX(nnx.Module):
    """The NNX twin of :class:`MLP`: ReLU layers ``Dense_0 .. Dense_{n-1}``, logits from the last.

    Layer and parameter names match the linen model (``Dense_0/kernel``, ``Dense_0/bias``;
    default initialisers: LeCun-normal kernels, zero biases), so ``nnx.to_pure_dict`` of its
    params has the paths of the linen ``variables["params"]`` and one ``jc.rules`` recipe serves
    both.

    Args:
      in_features: input width (inputs are flattened to ``[batch, in_features]``).
      features: widths of the layers, the last one being the number of outputs.
      rngs: ``nnx.Rngs`` for parameter initialisation.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = MLPNNX(64, (32, 10), rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 64))).shape
      (2, 10)
    """

    def __init__(
        self, in_features: int, features: Sequence[int] = (512, 256, 10), *, rngs: nnx.Rngs
    ):
        if not features:
            raise ValueError("MLPNNX: features must name at least one layer width")
        self.num_layers = len(features)
        widths = (in_features, *features)
        for i in range(self.num_layers):
            setattr(self, f"Dense_{i}", nnx.Linear(widths[i], widths[i + 1], rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for i in range(self.num_layers):
            x = getattr(self, f"Dense_{i}")(x)
            if i < self.num_layers - 1:
                x = nnx.relu(x)
        return x
