"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step;
``distiller`` / ``nnx_distiller`` build jitted distillation steps on top of it (linen) or of
``nnx.Optimizer`` (NNX).
"""

from jaxcompress.flax._distill import Distiller, DistillState, distiller
from jaxcompress.flax._distill_common import AttentionTransfer, Hint
from jaxcompress.flax._distill_nnx import NNXDistiller, NNXDistillState, nnx_distiller, param_dict
from jaxcompress.flax._train_state import TrainState

__all__ = [
    "AttentionTransfer",
    "DistillState",
    "Distiller",
    "Hint",
    "NNXDistillState",
    "NNXDistiller",
    "TrainState",
    "distiller",
    "nnx_distiller",
    "param_dict",
]
