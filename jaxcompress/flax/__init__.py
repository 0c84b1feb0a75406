"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step;
``Compressed`` (NNX) wraps a module so it runs on its compressed params and works with
``nnx.Optimizer``; ``quantize_activations`` / ``calibrate_activations`` (linen interception)
and ``quantized_dot_general`` (NNX injection point) quantize activations.
"""

from jaxcompress.flax._act_quant import (
    calibrate_activations,
    quantize_activations,
    quantized_dot_general,
)
from jaxcompress.flax._nnx import Compressed, CompressionParam, CompressionState
from jaxcompress.flax._train_state import TrainState

__all__ = [
    "Compressed",
    "CompressionParam",
    "CompressionState",
    "TrainState",
    "calibrate_activations",
    "quantize_activations",
    "quantized_dot_general",
]
