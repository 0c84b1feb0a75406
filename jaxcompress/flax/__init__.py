"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step;
``quantize_activations`` / ``calibrate_activations`` (linen interception) and
``quantized_dot_general`` (NNX injection point) quantize activations.
"""

from jaxcompress.flax._act_quant import (
    calibrate_activations,
    quantize_activations,
    quantized_dot_general,
)
from jaxcompress.flax._train_state import TrainState

__all__ = [
    "TrainState",
    "calibrate_activations",
    "quantize_activations",
    "quantized_dot_general",
]
