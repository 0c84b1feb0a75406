"""Checkpoints (orbax) and compressed artifacts."""

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

__all__ = [
    "CODECS",
    "ArtifactInfo",
    "ArtifactLeaf",
    "artifact_info",
    "decode_artifact",
    "encode_artifact",
    "load_artifact",
    "save_artifact",
]
