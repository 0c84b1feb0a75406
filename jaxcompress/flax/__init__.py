"""Flax glue: linen TrainState, NNX adapter. The only package that imports flax."""
