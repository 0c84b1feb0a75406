"""A LeNet-style convolutional network (Flax linen)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax


class LeNet(nn.Module):
    """LeNet-5 style CNN: ``Conv_0 .. Conv_{k-1}`` (5x5, ReLU, 2x2 max-pool), then
    ``Dense_0 .. Dense_{m}`` with logits from the last.

    Flat inputs (``[batch, h*w*c]``, as the digits and MNIST loaders give) are reshaped to
    square single-channel images; ``[batch, h, w, c]`` inputs are used as they are. Layer names
    are stable (``Conv_0/kernel``, ``Dense_2/kernel`` ...) so recipe regexes can match them.

    Attributes:
      num_classes: number of outputs.
      features: output channels of the convolutions (LeNet-5: 6, 16).
      hidden: widths of the dense layers before the logits (LeNet-5: 120, 84).
      kernel_size: side of the square convolution kernels.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = LeNet(num_classes=10)
      >>> params = model.init(jax.random.key(0), jnp.ones((1, 784)))["params"]
      >>> sorted(params)
      ['Conv_0', 'Conv_1', 'Dense_0', 'Dense_1', 'Dense_2']
      >>> model.apply({"params": params}, jnp.ones((2, 784))).shape
      (2, 10)

    References:
      LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition".
    """

    num_classes: int = 10
    features: Sequence[int] = (6, 16)
    hidden: Sequence[int] = (120, 84)
    kernel_size: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            side = math.isqrt(x.shape[1])
            if side * side != x.shape[1]:
                raise ValueError(
                    f"LeNet: flat inputs must be square images, got {x.shape[1]} features; "
                    "pass [batch, height, width, channels]"
                )
            x = x.reshape((x.shape[0], side, side, 1))
        elif x.ndim != 4:
            raise ValueError(
                f"LeNet: expected [batch, features] or [batch, h, w, c], got {x.shape}"
            )
        k = (self.kernel_size, self.kernel_size)
        for i, f in enumerate(self.features):
            x = nn.Conv(f, k, padding="SAME", name=f"Conv_{i}")(x)
            x = nn.relu(x)
            if min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)
