"""Checkpoints (orbax) and compressed artifacts.

``checkpoint_manager`` makes an orbax ``CheckpointManager``; ``save`` / ``restore`` write and
read a ``jc.flax.TrainState`` (params, optimizer state, compressor state, step), an NNX
``nnx.state(...)`` or any pytree; ``disk_bytes`` and ``logical_bytes`` measure a checkpoint.
``save_artifact`` / ``load_artifact`` write and read one lossless, entropy-coded file of
compressed params (bitmask + values, codebooks, integer grids).
"""

from jaxcompress.io._artifact import (
    CODECS,
    ArtifactInfo,
    ArtifactLeaf,
    artifact_info,
    decode_artifact,
    encode_artifact,
    load_artifact,
    save_artifact,
)
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
    "CODECS",
    "ArtifactInfo",
    "ArtifactLeaf",
    "artifact_info",
    "checkpoint_manager",
    "decode_artifact",
    "disk_bytes",
    "encode_artifact",
    "latest_step",
    "load_artifact",
    "logical_bytes",
    "restore",
    "restore_extra",
    "save",
    "save_artifact",
    "step_directory",
]
