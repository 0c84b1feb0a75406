"""Per-leaf report of what a compressor does to a model: bits, sparsity, logical bytes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from jaxcompress._src import paths as paths_lib
from jaxcompress._src import table
from jaxcompress._src.base import Compressor, Params, State, state_fields


@dataclasses.dataclass(frozen=True)
class LeafSummary:
    """One row of :func:`summary`."""

    path: str  # '/'-joined key path
    shape: tuple[int, ...]  # leaf shape
    dtype: str  # stored dtype
    bits: int  # bits per stored value after compression (stored dtype width if untouched)
    sparsity: float  # fraction of entries removed by a mask, in [0, 1]
    float32_bytes: int  # size of the leaf as float32
    logical_bytes: int  # bytes of the compressed form: kept values at `bits`, + a bitmask if sparse


@dataclasses.dataclass(frozen=True)
class Summary(table.ByteTotals):
    """Result of :func:`summary`; ``str()`` gives a table."""

    leaves: tuple[LeafSummary, ...]  # one row per parameter leaf
    state_bytes: int  # bytes held by the compressor state (masks, scales, codebooks ...)
    param_bytes: int = 0  # bytes of the stored params as they are (float32, bfloat16 ...)

    @property
    def ratio(self) -> float:
        """Compression ratio: float32 bytes / compressed logical bytes."""
        return self.logical_ratio

    @property
    def state_ratio(self) -> float:
        """Compressor state bytes / stored param bytes (memory the compression adds)."""
        return self.state_bytes / max(self.param_bytes, 1)

    @property
    def num_params(self) -> int:
        return sum(math.prod(r.shape) for r in self.leaves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaves": [dataclasses.asdict(r) for r in self.leaves],
            "float32_bytes": self.float32_bytes,
            "logical_bytes": self.logical_bytes,
            "ratio": self.ratio,
            "state_bytes": self.state_bytes,
            "param_bytes": self.param_bytes,
            "state_ratio": self.state_ratio,
            "num_params": self.num_params,
        }

    def __str__(self) -> str:
        head = ("path", "shape", "dtype", "bits", "sparsity", "bytes")
        rows = [
            (
                r.path,
                "x".join(map(str, r.shape)) or "scalar",
                r.dtype,
                str(r.bits),
                f"{r.sparsity:.1%}",
                f"{r.logical_bytes:,}",
            )
            for r in self.leaves
        ]
        total = ("total", f"{self.num_params:,} params", "", "", "", f"{self.logical_bytes:,}")
        footer = (
            f"float32 {self.float32_bytes:,} B -> {self.logical_bytes:,} B "
            f"({self.ratio:.2f}x smaller); compressor state {self.state_bytes:,} B "
            f"({self.state_ratio:.1%} of the stored params)"
        )
        return table.format_table(head, rows, total=total, footer=[footer])


def _per_leaf(params: Params, trees: list[Any], combine, default):
    """Combines per-leaf convention trees (``None`` where not owned) into one value per leaf."""
    leaves, treedef = jax.tree.flatten(params)
    out = [default(x) for x in leaves]
    for t in trees:
        try:
            flat = treedef.flatten_up_to(t)
        except (ValueError, TypeError):
            continue  # a per-leaf tree of another structure (e.g. a sub-model): not ours to read
        for j, v in enumerate(flat):
            if v is not None:
                out[j] = combine(out[j], v)
    return out


def summary(compressor: Compressor, params: Params, state: State) -> Summary:
    """Reports per leaf: path, shape, bits, sparsity and logical bytes; totals and ratio.

    Bits come from the ``bits`` fields of the (nested) state, sparsity from its ``mask``
    fields (DESIGN §1 conventions). Logical bytes are ``ceil(kept * bits / 8)`` plus a one-bit
    mask per entry when the leaf is sparse: the size of the bitmask + values export.
    Per-channel scales and codebooks are counted in ``state_bytes``, not per leaf.

    Args:
      compressor: the Compressor (kept for symmetry with :func:`finalize`; its state carries
        the information).
      params: the stored float params.
      state: ``compressor.init``/``update`` state.

    Returns:
      A :class:`Summary`; ``print()`` it for a table.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=8)
      >>> params = {"w": jnp.ones((64, 32))}
      >>> s = jc.summary(comp, params, comp.init(params))
      >>> s.leaves[0].bits, round(s.ratio, 1)
      (8, 4.0)
    """
    del compressor
    paths_lib.check_array_leaves(params)
    params = jax.device_get(params)
    state_np = jax.device_get(state)
    bits = _per_leaf(
        params,
        state_fields(state_np, "bits"),
        lambda a, b: min(a, int(np.asarray(b))),
        lambda x: np.dtype(x.dtype).itemsize * 8,
    )
    kept = _per_leaf(
        params,
        state_fields(state_np, "mask"),
        lambda a, m: np.logical_and(a, np.broadcast_to(np.asarray(m, bool), a.shape)),
        lambda x: np.ones(np.shape(x), bool),
    )
    rows = []
    for (path, x), b, k in zip(paths_lib.leaves_with_paths(params), bits, kept):
        size = int(np.size(x))
        nnz = int(np.count_nonzero(k))
        sparse = nnz < size
        logical = math.ceil(nnz * b / 8) + (math.ceil(size / 8) if sparse else 0)
        rows.append(
            LeafSummary(
                path=path,
                shape=tuple(np.shape(x)),
                dtype=str(np.dtype(x.dtype)),
                bits=int(b),
                sparsity=(1 - nnz / size) if size else 0.0,
                float32_bytes=size * 4,
                logical_bytes=logical,
            )
        )
    state_bytes = sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(state_np))
    param_bytes = sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(params))
    return Summary(tuple(rows), state_bytes, param_bytes)


def finalize(compressor: Compressor, params: Params, state: State) -> Params:
    """The compressed forward view for evaluation and export, without gradient tricks.

    Equal in value to ``compressor.apply(params, state)``, with every leaf behind
    ``lax.stop_gradient`` so no straight-through path remains.

    Args:
      compressor: the Compressor.
      params: stored float params.
      state: its state.

    Returns:
      A params tree of the same structure, shapes and dtypes.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.prune.magnitude(0.5)
      >>> params = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]])}
      >>> jc.finalize(comp, params, comp.init(params))["w"].tolist()
      [[0.0, -3.0], [0.0, 2.0]]
    """
    return jax.tree.map(jax.lax.stop_gradient, compressor.apply(params, state))
