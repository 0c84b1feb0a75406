"""Checkpoints (orbax) and compressed artifacts."""

from jaxcompress.io._artifact import (
    ArtifactInfo,
    ArtifactLeaf,
    artifact_info,
    decode_artifact,
    encode_artifact,
    load_artifact,
    save_artifact,
)

__all__ = [
    "ArtifactInfo",
    "ArtifactLeaf",
    "artifact_info",
    "decode_artifact",
    "encode_artifact",
    "load_artifact",
    "save_artifact",
]
