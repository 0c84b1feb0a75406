"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step;
``Compressed`` (NNX) wraps a module so it runs on its compressed params and works with
``nnx.Optimizer``.
"""

from jaxcompress.flax._nnx import Compressed, CompressionParam, CompressionState
from jaxcompress.flax._train_state import TrainState

__all__ = ["Compressed", "CompressionParam", "CompressionState", "TrainState"]
