"""Pruning: sort-free masks, magnitude pruning and (as they land) the rest of the family."""

from jaxcompress.prune._magnitude import MagnitudeState, magnitude
from jaxcompress.prune._threshold import topk_mask, topk_masks

__all__ = ["MagnitudeState", "magnitude", "topk_mask", "topk_masks"]
