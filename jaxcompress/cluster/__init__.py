"""Weight sharing: k-means clustering with trained centroids, export and Deep Compression."""

from jaxcompress.cluster._deep_compression import deep_compression
from jaxcompress.cluster._export import ClusteredArray, decode, export
from jaxcompress.cluster._kmeans import KMeansState, index_bits, kmeans
from jaxcompress.cluster._packing import pack_bits, pack_mask, unpack_bits, unpack_mask

__all__ = [
    "ClusteredArray",
    "KMeansState",
    "decode",
    "deep_compression",
    "export",
    "index_bits",
    "kmeans",
    "pack_bits",
    "pack_mask",
    "unpack_bits",
    "unpack_mask",
]
