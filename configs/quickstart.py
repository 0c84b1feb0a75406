"""Quickstart: an MLP on the embedded digits data, int8 QAT + 50% magnitude pruning of kernels.

    jaxcompress run configs/quickstart.py

Trains a float baseline, then fine-tunes it with every kernel pruned to 50% (by magnitude, at
the start) and fake-quantized to int8 (per output channel), and compares the two on the test
split. Under a minute on 2 CPU cores. Sweep it:

    jaxcompress sweep configs/quickstart.py --grid compress.bits=2,4,8 \
        --grid compress.sparsity=0.5,0.8
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "digits", "kwargs": {"seed": 0}}
    c.model = {"name": "MLP", "kwargs": {"features": (256, 128, 10)}}
    c.train = {
        "steps": 600,
        "batch_size": 64,
        "optimizer": "adam",
        "lr": 2e-3,
        "schedule": "cosine",
        "seed": 0,
        "log_every": 25,
    }
    c.eval = {"every": 100}
    c.baseline = {"enabled": True, "warm_start": True}
    c.compress = {
        # Named hyper-parameters: the specs below refer to them by name, so
        # --config.compress.bits=4 or --grid compress.bits=2,4,8 reaches the spec.
        "bits": 8,
        "sparsity": 0.5,
        # Ordered (regex, method spec) rules over parameter paths such as Dense_0/kernel;
        # the first match wins, None leaves a leaf alone.
        "rules": [
            (".*/kernel", "chain(prune.magnitude(sparsity), quant.qat(bits=bits))"),
            (".*/bias", None),
        ],
    }
    c.output = {"dir": "runs/quickstart"}
    return c
