"""Low-rank factorization of kernels by truncated SVD: training at rank r, export, Dense."""

from jaxcompress.lowrank._factorize import (
    Factors,
    dense,
    energy_rank,
    factorize,
    max_saving_rank,
    reconstruct,
    saves_bytes,
)
from jaxcompress.lowrank._svd import (
    LowRankLeaf,
    LowRankReport,
    LowRankState,
    export,
    report,
    svd,
)

__all__ = [
    "Factors",
    "LowRankLeaf",
    "LowRankReport",
    "LowRankState",
    "dense",
    "energy_rank",
    "export",
    "factorize",
    "max_saving_rank",
    "reconstruct",
    "report",
    "saves_bytes",
    "svd",
]
