"""Pruning: magnitude, random, saliency, movement; schedules; N:M, block and channel
structure; dynamic sparse training (RigL, SET); shrink; sparse export. Masks are exact and
sort-free."""

from jaxcompress.prune._criteria import magnitude, movement, random, saliency
from jaxcompress.prune._distribution import erk_sparsities
from jaxcompress.prune._dst import DSTState, rigl
from jaxcompress.prune._dst import set_ as set  # noqa: A001 (the method's published name)
from jaxcompress.prune._export import (
    SparseArray,
    densify,
    export,
    from_bcoo,
    mask_of,
    masks,
    nbytes,
    restore,
    sparsify,
    to_bcoo,
)
from jaxcompress.prune._pruner import PruneState
from jaxcompress.prune._schedule import (
    PruningSchedule,
    constant,
    iterative,
    one_shot,
    polynomial,
)
from jaxcompress.prune._shrink import shrink
from jaxcompress.prune._structure import (
    BlockStructure,
    ChannelStructure,
    NMStructure,
    block,
    channel,
    nm,
)
from jaxcompress.prune._threshold import ordered_key, select_top, topk_mask, topk_masks

__all__ = [
    "BlockStructure",
    "ChannelStructure",
    "DSTState",
    "NMStructure",
    "PruneState",
    "PruningSchedule",
    "SparseArray",
    "block",
    "channel",
    "constant",
    "densify",
    "erk_sparsities",
    "export",
    "from_bcoo",
    "iterative",
    "magnitude",
    "mask_of",
    "masks",
    "movement",
    "nbytes",
    "nm",
    "one_shot",
    "ordered_key",
    "polynomial",
    "random",
    "restore",
    "rigl",
    "saliency",
    "select_top",
    "set",
    "shrink",
    "sparsify",
    "to_bcoo",
    "topk_mask",
    "topk_masks",
]
