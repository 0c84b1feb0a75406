"""Export: quantized leaves as integer ``QArray``s (bit-packed below 8 bits), and back.

``quantize`` reads the quantization parameters of every :class:`QATState` in a (possibly
nested, ``jc.chain`` / ``jc.rules``) compression state, and turns each leaf it owns into a
:class:`QArray`. It quantizes the *forward view* (what the model ran on in training), so the
integers are exactly the training forward's levels: re-quantizing an on-grid value with the
same scale returns the same integer, and pruned entries (exact zeros) stay zero.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._src import bits as bits_lib
from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor, Params, State, states_of_type
from jaxcompress._src.summary import finalize
from jaxcompress.quant import _fake_quant, _grid
from jaxcompress.quant._qat import (
    _LSQ_EPS,
    QATState,
    forward_scale,
    live_scale_of,
    recording_live_scales,
)


@dataclasses.dataclass(frozen=True)
class QArray:
    """A quantized tensor: integer codes, scale and zero point; no float weights.

    A registered pytree (``values``, ``scale``, ``zero_point`` are children; the rest is
    static), so it passes through ``jit``, shards, and saves with :func:`save`.

    ``values`` holds, for 8 bits, the integer levels themselves (``int8``; ``uint8`` for an
    asymmetric grid) in the original shape; below 8 bits, the codes ``q - qmin`` (sign grid:
    ``(q + 1) / 2``) packed ``bits`` bits each, little-endian, into a flat ``uint8`` array of
    ``ceil(size * bits / 8)`` bytes (int4: 2 per byte, int2: 4, int1: 8; 3, 5, 6, 7 bits are
    packed tightly too).

    Attributes:
      values: the stored integers (see above).
      scale: float32 scale, shaped like the grouped view with size-1 reduced axes.
      zero_point: float32 integer zero point like ``scale``, or None (symmetric grids).
      bits: bits per stored value.
      kind: ``"grid"``, ``"sign"`` or ``"ternary"``.
      qmin: the smallest integer level (codes are offsets from it).
      shape: the original shape.
      grouped_shape: the view ``scale`` broadcasts against (per-group: the group axis split).
      dtype: the original dtype's name (``dequantize`` returns it).
    """

    values: jax.Array
    scale: jax.Array
    zero_point: jax.Array | None
    bits: int = dataclasses.field(metadata={"static": True})
    kind: str = dataclasses.field(metadata={"static": True})
    qmin: int = dataclasses.field(metadata={"static": True})
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    grouped_shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    dtype: str = dataclasses.field(metadata={"static": True})

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def packed(self) -> bool:
        return self.bits < 8

    @property
    def nbytes(self) -> int:
        """Bytes of the stored integers (not counting scales)."""
        return int(self.values.size * self.values.dtype.itemsize)

    def levels(self) -> jax.Array:
        """The integer levels ``q`` (before the zero point) as int32, in the original shape."""
        if not self.packed:
            return self.values.astype(jnp.int32)
        codes = unpack(self.values, self.bits, self.size).astype(jnp.int32)
        q = 2 * codes - 1 if self.kind == "sign" else codes + self.qmin
        return q.reshape(self.shape)

    def dequantize(self) -> jax.Array:
        """The float tensor (see :func:`dequantize`)."""
        return dequantize(self)


jax.tree_util.register_dataclass(
    QArray,
    data_fields=["values", "scale", "zero_point"],
    meta_fields=["bits", "kind", "qmin", "shape", "grouped_shape", "dtype"],
)


def is_qarray(x: Any) -> bool:
    """True for a :class:`QArray` (use as ``is_leaf`` in tree maps).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=4)
      >>> params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
      >>> q = jc.quant.quantize(params, comp.init(params))
      >>> jax.tree.map(jc.quant.is_qarray, q, is_leaf=jc.quant.is_qarray)
      {'b': True, 'w': True}
    """
    return isinstance(x, QArray)


def pack(codes: jax.Array, bits: int) -> jax.Array:
    """Packs non-negative integer codes (< 2**bits) ``bits`` bits each into flat uint8 bytes.

    Little-endian within and across bytes; the last byte is zero-padded.

    Args:
      codes: integer array of any shape (flattened in C order).
      bits: 1..8.

    Returns:
      uint8 array of ``ceil(codes.size * bits / 8)`` bytes.

    Example:
      >>> import jax.numpy as jnp
      >>> pack(jnp.array([1, 2, 3, 0]), 2).tolist()
      [57]
    """
    _grid.check_bits(bits)
    return bits_lib.pack(jnp.ravel(jnp.asarray(codes)), bits)


def unpack(packed: jax.Array, bits: int, size: int) -> jax.Array:
    """Inverse of :func:`pack`: the first ``size`` codes as a flat uint8 array.

    Example:
      >>> import jax.numpy as jnp
      >>> unpack(jnp.array([57], jnp.uint8), 2, 4).tolist()
      [1, 2, 3, 0]
    """
    _grid.check_bits(bits)
    return bits_lib.unpack(jnp.ravel(jnp.asarray(packed)), bits, size, dtype=jnp.uint8)


def dequantize(q: Any) -> Any:
    """Float tensors back from :class:`QArray` leaves (other leaves are returned as they are).

    ``(q - zero_point) * scale``, computed in float32 and cast to the original dtype: equal to
    the fake-quantized training forward of the exported leaf.

    Args:
      q: a :class:`QArray` or a pytree containing them.

    Returns:
      The same structure with float arrays in place of each QArray.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=4)
      >>> params = {"w": jnp.array([[0.5, -1.0], [0.25, 2.0]])}
      >>> state = comp.init(params)
      >>> qp = jc.quant.quantize(params, state, comp)
      >>> bool((jc.quant.dequantize(qp)["w"] == comp.apply(params, state)["w"]).all())
      True

    References:
      Jacob et al. 2018 (affine quantization ``r = S (q - Z)``).
    """

    def one(x):
        if not is_qarray(x):
            return x
        qv = x.levels().astype(jnp.float32)
        lay = _grid.Layout(x.shape, x.grouped_shape, ())
        qv = lay.to_grouped(qv)
        out = _fake_quant.grid_dequant(qv, x.scale, x.zero_point)
        return lay.from_grouped(out).astype(x.dtype)

    return jax.tree.map(one, q, is_leaf=is_qarray)


def quantize_leaf(
    view: jax.Array,
    *,
    spec: Any,
    bits: int,
    scale: jax.Array,
    zero_point: jax.Array | None,
    threshold: jax.Array | None,
    path: str = "x",
    check_grid: bool = False,
) -> QArray:
    """One leaf's :class:`QArray` from its forward view and quantization parameters.

    With a live spec and no ``scale``, the scale is read back from the view (exact for
    float32 leaves, see ``_fake_quant.symmetric_scale``). ``check_grid`` (the view is known
    to be the forward's output) raises if an integer-grid view is not on its grid: a method
    chained after ``qat`` rewrote the values, and exporting them would change the model.
    """
    lay = spec.layout(view.shape, path)
    xg = lay.to_grouped(jnp.asarray(view).astype(jnp.float32))
    if spec.live and scale is None:
        scale = live_scale_of(spec, xg, lay)
    scale = jnp.asarray(scale, jnp.float32)
    if spec.learn_scale:
        scale = jnp.maximum(scale, _LSQ_EPS)
    zp = None if zero_point is None else jnp.asarray(zero_point, jnp.float32)
    if spec.kind == "sign":
        q, qmin = _fake_quant.sign_levels(xg), -1
    elif spec.kind == "ternary":
        q, qmin = _fake_quant.ternary_levels(xg, threshold), -1
    else:
        qmin, qmax = _grid.qrange(bits, symmetric=spec.symmetric, narrow_range=spec.narrow_range)
        q = jnp.clip(_fake_quant.grid_levels(xg, scale, zp), qmin, qmax)
        if check_grid and not isinstance(xg, jax.core.Tracer):
            back = _fake_quant.grid_dequant(q, scale, zp).astype(view.dtype).astype(jnp.float32)
            if not bool(jnp.all(back == xg)):  # finite: check_finite ran first
                raise ValueError(
                    f"quantize: leaf {path!r} is not on the grid its qat trained with (a "
                    "method after qat in the chain rewrote the values); put qat last"
                )
    q = lay.from_grouped(q)
    if bits == 8 and spec.kind == "grid":
        values = q.astype(jnp.int8 if spec.symmetric else jnp.uint8)
    else:
        codes = (q + 1) / 2 if spec.kind == "sign" else q - qmin
        values = pack(codes.astype(jnp.int32), bits)
    return QArray(
        values=values,
        scale=scale,
        zero_point=zp,
        bits=bits,
        kind=spec.kind,
        qmin=qmin,
        shape=tuple(view.shape),
        grouped_shape=lay.grouped_shape,
        dtype=str(np.dtype(view.dtype)),
    )


def quantize(params: Params, state: State, compressor: Compressor | None = None) -> Params:
    """Exports every leaf quantized by a :func:`qat` state as a :class:`QArray`.

    The integers are computed from the *forward view*, with the scales and zero points held
    in the state (the numbers the training forward used). Live min-max scales (see
    :func:`~jaxcompress.quant.qat`) are taken from the forward itself when ``compressor`` is
    given, else recomputed from ``params``: bit for bit the forward's from the stored params
    of a lone ``qat`` or from a float32 view (for a bf16 view the levels are exact and the
    scale within ``2**-8``; pass the compressor). Pass either the finalized view
    (``jc.finalize(comp, params, state)``) or the stored params together with ``compressor``
    (the view is then computed). For a lone ``qat`` the stored params give the same result,
    since re-quantizing an on-grid value returns it. Works for ``qat`` nested anywhere in
    ``jc.chain`` / ``jc.rules``: in ``chain(prune.magnitude(...), qat(...))`` pruned entries
    export as zeros (binary grids have no zero level: they export as ``+scale``). Leaves no
    QAT state owns (biases routed to None) are returned as they are. When two QAT states own a
    leaf, the later one in the state (the outer one in a chain) wins.

    Bit widths are read from the state; with a bit-width schedule they must be concrete (call
    outside ``jit``). With static bit widths, ``quantize`` also works under ``jit``.

    Args:
      params: the forward view, or the stored params if ``compressor`` is given.
      state: the compression state.
      compressor: the Compressor, to compute the view from stored params.

    Returns:
      The params tree with :class:`QArray` leaves; no float copy of those weights is kept.

    Raises:
      ValueError: if the state holds no QAT state, a leaf to export is non-finite, or (with
        ``compressor``) an integer-grid leaf of the view is off its grid because a method
        chained after ``qat`` rewrote it (naming the path).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=4)
      >>> params = {"w": jax.random.normal(jax.random.key(0), (64, 32))}
      >>> qp = jc.quant.quantize(params, comp.init(params), comp)
      >>> qp["w"].values.dtype, qp["w"].nbytes
      (dtype('uint8'), 1024)

    References:
      Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference".
    """
    live: dict[str, jax.Array] = {}
    if compressor is not None:
        with recording_live_scales() as live:
            view = finalize(compressor, params, state)
    else:
        view = params
    qstates = states_of_type(state, QATState)
    if not qstates:
        raise ValueError("quantize: the state holds no jc.quant.qat state; nothing to export")
    paths_lib.check_array_leaves(view)
    flat, treedef = jax.tree_util.tree_flatten_with_path(view)
    out = [leaf for _, leaf in flat]
    n = len(flat)

    def up_to(t):
        return [None] * n if t is None else treedef.flatten_up_to(t)

    for st in qstates:
        cols = [up_to(t) for t in (st.bits, forward_scale(st), st.zero_point, st.threshold)]
        for j, ((p, leaf), b, s, z, t) in enumerate(zip(flat, *cols, strict=True)):
            if b is None:
                continue
            path = paths_lib.path_str(p)
            if st.spec.bits is not None:
                nbits = st.spec.bits
            else:
                if isinstance(b, jax.core.Tracer):
                    raise ValueError(
                        f"quantize: leaf {path!r} has a scheduled bit width, which must be "
                        "concrete; call quantize outside jit"
                    )
                nbits = int(np.asarray(b))
            _fake_quant.check_finite(leaf, path=f"quantize: leaf {path!r}")
            out[j] = quantize_leaf(
                leaf,
                spec=st.spec,
                bits=nbits,
                zero_point=z,
                threshold=t,
                path=path,
                check_grid=compressor is not None,
                scale=live.get(path) if st.spec.live else s,
            )
    return jax.tree_util.tree_unflatten(treedef, out)
