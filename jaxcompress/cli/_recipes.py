"""Building blocks that recipes (``configs/*.py``) share: the standard data/model/train blocks.

A recipe calls one of these for the sections every MNIST (or Shakespeare) recipe has in common
and then states only its own part (``compress``, ``baseline``, ``distill``)::

    from jaxcompress.cli import recipes

    def get_config():
        c = recipes.mnist("LeNet", steps=500, lr=5e-4, baseline_steps=2000)
        c.compress = {"bits": 8, "rules": [(r".*/kernel", "quant.qat(bits=bits)"), (".*", None)]}
        return c

The result is a plain ``ml_collections.ConfigDict`` merged onto the command's defaults like any
other recipe, so ``--config.KEY=VALUE`` overrides work the same.
"""

from __future__ import annotations

from typing import Any

import ml_collections

# The standard models, as (jc.workloads class name, attributes).
MODELS: dict[str, dict[str, Any]] = {
    # LeNet-5: two 5x5 convolutions (6, 16 channels), then 120-84-10 dense; 108k params.
    "LeNet": {"name": "LeNet", "kwargs": {"features": (6, 16), "hidden": (120, 84)}},
    # LeNet-300-100: the MLP of Han et al. 2015; 267k params.
    "LeNet-300-100": {"name": "MLP", "kwargs": {"features": (300, 100, 10)}},
    # A 1200-1200 MLP (Hinton et al. 2015's teacher); 2.4M params.
    "MLP-1200-1200": {"name": "MLP", "kwargs": {"features": (1200, 1200, 10)}},
}


def model_block(model: str | dict[str, Any]) -> dict[str, Any]:
    """The ``model`` section of a standard model name, or a ``{"name", "kwargs"}`` dict as is.

    Raises:
      ValueError: for an unknown standard model name (the known names are listed).

    Example:
      >>> model_block("LeNet-300-100")["kwargs"]["features"]
      (300, 100, 10)
    """
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"unknown standard model {model!r}; known: {', '.join(MODELS)}")
        block = MODELS[model]
        return {"name": block["name"], "kwargs": dict(block["kwargs"])}
    return {"name": model["name"], "kwargs": dict(model.get("kwargs", {}))}


def mnist(
    model: str | dict[str, Any] = "LeNet",
    *,
    steps: int = 2000,
    lr: float = 2e-3,
    baseline_steps: int | None = None,
    baseline_lr: float = 2e-3,
    warm_start: bool = True,
    batch_size: int = 128,
    eval_every: int = 500,
    seed: int = 0,
) -> ml_collections.ConfigDict:
    """The sections an MNIST recipe shares: data, model, train, eval, baseline, compress.

    Adam with a cosine learning-rate decay, batch 128, evaluation on 1000-example batches,
    training loss logged every 50 steps.

    Args:
      model: a name of :data:`MODELS` or a ``{"name": ..., "kwargs": {...}}`` model section.
      steps: steps of the (compressed) training phase.
      lr: its peak learning rate.
      baseline_steps: steps of a float baseline trained first; ``None``: no baseline.
      baseline_lr: the baseline's peak learning rate.
      warm_start: start the compressed phase from the baseline's weights.
      batch_size: examples per step.
      eval_every: steps between validation points.
      seed: parameter init and batch order.

    Returns:
      A ConfigDict with ``compress.rules`` empty (the recipe fills it in).

    Raises:
      ValueError: for an unknown standard model name.

    Example:
      >>> c = mnist("LeNet-300-100", steps=500, baseline_steps=3000)
      >>> c.data.name, c.model.name, c.baseline.steps, c.train.steps
      ('mnist', 'MLP', 3000, 500)
    """
    c = ml_collections.ConfigDict()
    c.data = {"name": "mnist", "kwargs": {}}
    c.model = model_block(model)
    c.train = {
        "steps": steps,
        "batch_size": batch_size,
        "optimizer": "adam",
        "lr": lr,
        "schedule": "cosine",
        "seed": seed,
        "log_every": 50,
    }
    c.eval = {"every": eval_every, "batch_size": 1000}
    if baseline_steps is None:
        c.baseline = {"enabled": False}
    else:
        c.baseline = {
            "enabled": True,
            "steps": baseline_steps,
            "lr": baseline_lr,
            "warm_start": warm_start,
        }
    c.compress = {"rules": []}
    return c


def shakespeare(
    *,
    steps: int,
    lr: float,
    baseline_steps: int | None = None,
    baseline_lr: float = 1e-3,
    num_layers: int = 4,
) -> ml_collections.ConfigDict:
    """The sections a character-level Shakespeare recipe shares.

    A pre-norm transformer (d_model 256, 4 heads, MLP ratio 4) on 128-character windows,
    AdamW (weight decay 0.01, b2 0.99) with warm-up and cosine decay, evaluation on 2048
    windows, a checkpoint every 500 steps.

    Args:
      steps: steps of the (compressed) training phase.
      lr: its peak learning rate.
      baseline_steps: steps of a float baseline trained first; ``None``: no baseline.
      baseline_lr: the baseline's peak learning rate.
      num_layers: transformer blocks.

    Returns:
      A ConfigDict with ``compress.rules`` empty.

    Example:
      >>> shakespeare(steps=3000, lr=1e-3).model.kwargs.d_model
      256
    """
    c = ml_collections.ConfigDict()
    c.data = {"name": "shakespeare", "kwargs": {"seq_len": 128, "max_chars": None}}
    c.model = {
        "name": "CharTransformer",
        "kwargs": {
            "d_model": 256,
            "num_heads": 4,
            "num_layers": num_layers,
            "mlp_ratio": 4,
            "max_len": 128,
        },
    }
    c.train = {
        "steps": steps,
        "batch_size": 64,
        "optimizer": "adamw",
        "optimizer_kwargs": {"weight_decay": 0.01, "b2": 0.99},
        "lr": lr,
        "schedule": "warmup_cosine",
        "warmup_steps": 200,
        "seed": 0,
        "log_every": 50,
    }
    c.eval = {"every": 500, "batch_size": 128, "max_examples": 2048}
    if baseline_steps is None:
        c.baseline = {"enabled": False}
    else:
        c.baseline = {"enabled": True, "steps": baseline_steps, "lr": baseline_lr}
    c.compress = {"rules": []}
    c.output = {"checkpoint_every": 500}
    return c
