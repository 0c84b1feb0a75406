"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step;
``Compressed`` (NNX) wraps a module so it runs on its compressed params and works with
``nnx.Optimizer``; ``quantize_activations`` / ``calibrate_activations`` (linen interception)
and ``quantized_dot_general`` / ``quantized_conv`` (NNX injection points, set on a whole
model by ``quantize_nnx_activations``, ranges from ``calibrate_nnx_activations``) quantize
activations; ``distiller`` / ``nnx_distiller`` build jitted distillation steps on top of the
TrainState (linen) or of ``nnx.Optimizer`` (NNX).
"""

from jaxcompress.flax._act_quant import (
    calibrate_activations,
    quantize_activations,
    quantized_conv,
    quantized_dot_general,
)
from jaxcompress.flax._distill import Distiller, DistillState, distiller
from jaxcompress.flax._distill_common import AttentionTransfer, Hint
from jaxcompress.flax._distill_nnx import NNXDistiller, NNXDistillState, nnx_distiller, param_dict
from jaxcompress.flax._nnx import Compressed, CompressionParam, CompressionState
from jaxcompress.flax._nnx_act_quant import calibrate_nnx_activations, quantize_nnx_activations
from jaxcompress.flax._train_state import TrainState

__all__ = [
    "AttentionTransfer",
    "Compressed",
    "CompressionParam",
    "CompressionState",
    "DistillState",
    "Distiller",
    "Hint",
    "NNXDistillState",
    "NNXDistiller",
    "TrainState",
    "calibrate_activations",
    "calibrate_nnx_activations",
    "distiller",
    "nnx_distiller",
    "param_dict",
    "quantize_activations",
    "quantize_nnx_activations",
    "quantized_conv",
    "quantized_dot_general",
]
