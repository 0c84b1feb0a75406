"""The Deep Compression recipe: magnitude pruning, then weight sharing (or quantization)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from jaxcompress._src.base import Compressor
from jaxcompress._src.combine import chain, rules
from jaxcompress.cluster._kmeans import kmeans
from jaxcompress.prune import magnitude
from jaxcompress.quant import qat


def deep_compression(
    sparsity: float | Sequence[tuple[str, float]] = 0.9,
    *,
    num_clusters: int | None = 32,
    bits: int | None = None,
    include: str = r".*kernel",
    prune_at: int = 0,
    share_at: int | None = None,
    init: str = "linear",
    per_channel: bool = False,
    update_every: int | None = None,
    seed: int = 0,
) -> Compressor:
    """Deep Compression's first two stages as one Compressor: prune, then share or quantize.

    Each kernel is magnitude-pruned (layer-wise, one-shot at update ``prune_at``), then its
    surviving weights are shared among ``num_clusters`` trained centroids (k-means with
    sparsity preserved, clustered at ``share_at``), or fake-quantized to ``bits`` bits. Train
    with ``jc.flax.TrainState`` (centroids train with the params); the third stage, entropy
    coding, is the artifact: ``jc.io.save_artifact(path, jc.finalize(comp, params, state))``
    stores packed indices, packed bitmasks and codebooks, entropy-coded, in one file.

    Typical schedule on a trained model: ``prune_at=0`` and ``share_at=n`` (retrain the pruned
    network for ``n`` steps, then cluster and fine-tune the centroids), as in the paper.

    Args:
      sparsity: fraction of each kernel to prune, for every leaf whose path matches
        ``include``; or ``[(regex, sparsity), ...]`` per layer (first match wins, as in
        ``jc.rules``; Han et al. prune the first layer of an MLP hardest).
      num_clusters: shared values per kernel (32 = 5-bit indices); ``None`` with ``bits``.
      bits: instead of sharing: symmetric per-channel quantization (``jc.quant.qat``).
      include: regex of the leaves to compress when ``sparsity`` is a number.
      prune_at: the update count at which to prune (0: at ``init``).
      share_at: the update count at which to cluster (default ``prune_at``); k-means only.
      init: k-means initialization (``"linear"``, the paper's best, ``"density"``,
        ``"kmeans++"``).
      per_channel: one codebook per output channel instead of per kernel.
      update_every: reassign weights to the nearest centroid every this many updates
        (``None``: assignments fixed once clustered, as in the paper).
      seed: k-means++ seed.

    Returns:
      A Compressor (``jc.rules`` of ``jc.chain(magnitude, kmeans | qat)`` per rule). Leaves
      that match no rule (biases) are left alone.

    Raises:
      ValueError: if both or neither of ``num_clusters`` / ``bits`` are given, ``share_at``
        is given with ``bits`` or is before ``prune_at``, a regex does not compile, or a
        hyper-parameter is out of range (raised by the methods, naming the value).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.cluster.deep_compression(0.9, num_clusters=16)
      >>> params = {"Dense_0": {"kernel": jax.random.normal(jax.random.key(0), (64, 32)),
      ...                       "bias": jnp.zeros(32)}}
      >>> state = comp.init(params)
      >>> s = jc.summary(comp, params, state)
      >>> s.leaves[1].bits, round(s.leaves[1].sparsity, 2)
      (4, 0.9)

    References:
      Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks with Pruning,
      Trained Quantization and Huffman Coding".
    """
    if (num_clusters is None) == (bits is None):
        raise ValueError("deep_compression: give exactly one of num_clusters= or bits=")
    if bits is not None and share_at is not None:
        raise ValueError("deep_compression: share_at applies to weight sharing, not to bits=")
    if share_at is None:
        share_at = prune_at
    if isinstance(share_at, bool) or not isinstance(share_at, int) or share_at < prune_at:
        raise ValueError(
            f"deep_compression: share_at must be an integer >= prune_at={prune_at}, "
            f"got {share_at!r}"
        )
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        per_rule = [(include, float(sparsity))]
    else:
        per_rule = list(sparsity)
        for i, r in enumerate(per_rule):
            if not (isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str)):
                raise ValueError(
                    f"deep_compression: sparsity rule {i} must be a (regex, sparsity) pair, "
                    f"got {r!r}"
                )
    for rx, _ in per_rule:
        try:
            re.compile(rx)
        except re.error as e:
            raise ValueError(f"deep_compression: regex {rx!r} does not compile: {e}") from None

    def stage2() -> Compressor:
        if bits is not None:
            return qat(bits)
        return kmeans(
            num_clusters,
            init=init,
            per_channel=per_channel,
            preserve_sparsity=True,
            update_every=update_every,
            at_step=share_at,
            seed=seed,
        )

    return rules([(rx, chain(magnitude(s, at_step=prune_at), stage2())) for rx, s in per_rule])
