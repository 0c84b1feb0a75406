"""Checkpoints (orbax): save and restore train states and pytrees, with exact resume.

``checkpoint_manager`` makes an orbax ``CheckpointManager``; ``save`` / ``restore`` write and
read a ``jc.flax.TrainState`` (params, optimizer state, compressor state, step), an NNX
``nnx.state(...)`` or any pytree; ``disk_bytes`` and ``logical_bytes`` measure a checkpoint.
"""

from jaxcompress.io._checkpoint import (
    checkpoint_manager,
    disk_bytes,
    latest_step,
    logical_bytes,
    restore,
    restore_extra,
    save,
    step_directory,
)

__all__ = [
    "checkpoint_manager",
    "disk_bytes",
    "latest_step",
    "logical_bytes",
    "restore",
    "restore_extra",
    "save",
    "step_directory",
]
