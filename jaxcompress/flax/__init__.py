"""Flax integration: the only package that imports flax.

``TrainState`` (linen) carries a Compressor and its state through the train step.
"""

from jaxcompress.flax._train_state import TrainState

__all__ = ["TrainState"]
