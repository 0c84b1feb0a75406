"""A compressed model in one file: bitmasks, shared-value indices, codebooks, entropy-coded.

The encoder reads the *values* of the compressed params (``jc.finalize``'s view, or any
params tree), not the compressor that made them, and finds per leaf the smallest exact
representation:

* **layout**: dense, or ``sparse``: a one-bit-per-entry bitmask of the nonzeros plus the
  nonzero values only (pruned weights cost one bit);
* **values** of the stored entries: ``raw`` (the dtype's bytes), ``codebook`` (a table of the
  distinct values, per tensor or per output channel, and one ``ceil(log2 k)``-bit index per
  entry: weight sharing), or ``grid`` (one float32 scale per output channel and
  ``bits``-bit signed integers: symmetric quantization).

Every choice is verified: the decoder's output is compared bit for bit with the input and a
leaf that does not round-trip exactly falls back to ``raw``. Loading therefore gives exactly
the params that were saved (negative zeros come back as ``+0.0``), and the model exactly the
same outputs.

Each section is then entropy-coded with a standard-library codec (``lzma`` by default, or
``zlib``). Indices and integers are fed to the coder either packed at ``ceil(log2 k)`` bits or
one symbol per byte (two above 8 bits), whichever codes smaller: on large leaves the byte
layout wins, since the coder then spends about the symbols' entropy on them (Han et al. use
Huffman codes for the same job); a section the codec does not shrink is stored as it is.
``logical_bytes`` counts indices packed at ``ceil(log2 k)`` bits, i.e. the size before entropy
coding; ``file_bytes`` is the size on disk.

File: ``MAGIC`` (8 bytes), the header length (uint32, little-endian), the compressed JSON
header (leaf paths, shapes, dtypes, codecs, section sizes), then the compressed sections.
"""

from __future__ import annotations

import dataclasses
import json
import lzma
import math
import os
import pathlib
import struct
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._src import bits as bits_lib
from jaxcompress._src import paths as paths_lib
from jaxcompress._src import table

MAGIC = b"JXCART\x00\x01"
CODECS = ("lzma", "zlib", "none")
_MAX_CODEBOOK = 1 << 16


# ------------------------------------------------------------------------------------------
# Entropy coding of one section.

# LZMA2 on raw streams: no literal context for symbol streams (indices, masks: close to
# order-0 entropy coding), 4-byte position context for float values.
_LZMA_FILTERS = {
    "symbols": {"lc": 0, "lp": 0, "pb": 0},
    "values": {"lc": 0, "lp": 2, "pb": 2},
    "header": {"lc": 3, "lp": 0, "pb": 0},
}


def _compress(data: bytes, codec: str, kind: str) -> bytes:
    if codec == "none" or not data:
        return data
    if codec == "zlib":
        return zlib.compress(data, 9)
    filt = {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, **_LZMA_FILTERS[kind]}
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[filt])


def _decompress(data: bytes, codec: str, kind: str, size: int) -> bytes:
    if codec == "none" or kind == "stored" or size == 0:
        out = data
    elif codec == "zlib":
        out = zlib.decompress(data)
    else:
        if kind not in _LZMA_FILTERS:
            raise ValueError(f"corrupt artifact: unknown section kind {kind!r}")
        filt = {"id": lzma.FILTER_LZMA2, **_LZMA_FILTERS[kind]}
        out = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=[filt])
    if len(out) != size:
        raise ValueError(
            f"corrupt artifact: a section decodes to {len(out)} bytes, expected {size}"
        )
    return out


# ------------------------------------------------------------------------------------------
# Symbols: indices and integers, one per byte (two above 8 bits), and bit packing for the
# logical size.


def _symbol_dtype(bits: int) -> np.dtype:
    return np.dtype("<u1") if bits <= 8 else np.dtype("<u2")


def _index_bits(k: int) -> int:
    return max(1, (k - 1).bit_length())


def _as_uint(x: np.ndarray) -> np.ndarray:
    """The bit pattern of each value (exact comparison, -0.0 and NaNs included)."""
    return x.view(np.dtype(f"<u{x.dtype.itemsize}"))


# ------------------------------------------------------------------------------------------
# Value codecs on the stored entries (row-major order) of a leaf.


@dataclasses.dataclass
class _Values:
    kind: str  # "raw" | "codebook" | "grid"
    bits: int  # bits per index / integer (0 for raw)
    k: int  # codebook entries per codebook (0 otherwise)
    per_channel: bool  # one codebook / scale per entry of the last axis
    sections: list[tuple[str, str, bytes]]  # (name, entropy kind, data)
    logical: int  # bytes before entropy coding, indices packed


def _raw(vals: np.ndarray) -> _Values:
    data = np.ascontiguousarray(vals).tobytes()
    return _Values("raw", 0, 0, False, [("values", "values", data)], len(data))


def _codebook(vals: np.ndarray, chan: np.ndarray | None, channels: int) -> _Values | None:
    """Distinct values per tensor (``chan`` None) or per channel, as a table + indices."""
    n = vals.size
    u = _as_uint(vals).astype(np.uint64)
    key = u if chan is None else (chan.astype(np.uint64) << np.uint64(32)) | u
    uniq, inverse = np.unique(key, return_inverse=True)
    ch_of = (
        np.zeros(uniq.size, np.int64) if chan is None else (uniq >> np.uint64(32)).astype(np.int64)
    )
    first = np.searchsorted(ch_of, ch_of, side="left")
    rank = np.arange(uniq.size) - first
    k = int(rank.max()) + 1 if uniq.size else 1
    if k > _MAX_CODEBOOK:
        return None
    books = channels if chan is not None else 1
    table = np.zeros((books, k), vals.dtype)
    table_u = _as_uint(table)
    table_u[ch_of, rank] = (uniq & np.uint64((1 << (8 * vals.dtype.itemsize)) - 1)).astype(
        table_u.dtype
    )
    idx = rank[inverse.reshape(-1)] if n else np.zeros(0, np.int64)
    bits = _index_bits(k)
    sym = idx.astype(_symbol_dtype(bits))
    logical = table.nbytes + bits_lib.packed_size(n, bits)
    sections = [("codebook", "values", table.tobytes()), ("indices", "symbols", sym.tobytes())]
    return _Values("codebook", bits, k, chan is not None, sections, logical)


def _grid(vals: np.ndarray, chan: np.ndarray, channels: int) -> _Values | None:
    """``vals == dtype(float32(q) * scale[channel])`` with ``|q| <= 2**(b-1) - 1``, b in 2..8.

    The scale of a channel is recovered as ``max|v| / qmax``, nudged by up to two float32
    ulps until every value of the channel is reproduced exactly (the quantizer's own scale
    is ``max|w| / qmax`` and its largest value ``qmax * scale``, rounded once).
    """
    if vals.size == 0 or not _is_float(vals.dtype):
        return None
    v32 = vals.astype(np.float32)
    if not np.all(np.isfinite(v32)):
        return None
    amax = np.zeros(channels, np.float32)
    np.maximum.at(amax, chan, np.abs(v32))
    for b in range(2, 9):
        qmax = 2 ** (b - 1) - 1
        base = np.where(amax > 0, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
        if not np.allclose(v32 / base[chan], np.round(v32 / base[chan]), atol=1e-3, rtol=0):
            continue
        scale = base.copy()
        solved = np.zeros(channels, bool)
        for step in (0, -1, 1, -2, 2):
            cand = base
            for _ in range(abs(step)):
                cand = np.nextafter(cand, np.float32(np.sign(step) * np.inf)).astype(np.float32)
            q = np.round(v32 / cand[chan])
            rec = (q.astype(np.float32) * cand[chan]).astype(vals.dtype)
            good = (_as_uint(rec) == _as_uint(vals)) & (np.abs(q) <= qmax)
            ok = np.ones(channels, bool)
            np.logical_and.at(ok, chan, good)
            take = ok & ~solved
            scale[take] = cand[take]
            solved |= ok
            if solved.all():
                break
        if not solved.all():
            continue
        q = np.round(v32 / scale[chan]).astype(np.int64)
        sym = (q + qmax).astype(_symbol_dtype(b))
        logical = scale.nbytes + bits_lib.packed_size(vals.size, b)
        sections = [("scale", "values", scale.tobytes()), ("ints", "symbols", sym.tobytes())]
        return _Values("grid", b, 0, True, sections, logical)
    return None


def _decode_values(
    spec: dict[str, Any], sec: dict[str, bytes], dtype: np.dtype, chan: np.ndarray, n: int
) -> np.ndarray:
    kind = spec["values"]
    if kind == "raw":
        return np.frombuffer(sec["values"], dtype).copy()
    bits = spec["bits"]
    if kind == "codebook":
        k = spec["k"]
        table = np.frombuffer(sec["codebook"], dtype).reshape(-1, k)
        idx = np.frombuffer(sec["indices"], _symbol_dtype(bits)).astype(np.int64)
        rows = chan if spec["per_channel"] else np.zeros(n, np.int64)
        return table[rows, idx]
    if kind == "grid":
        scale = np.frombuffer(sec["scale"], np.float32)
        qmax = 2 ** (bits - 1) - 1
        q = np.frombuffer(sec["ints"], _symbol_dtype(bits)).astype(np.int64) - qmax
        return (q.astype(np.float32) * scale[chan]).astype(dtype)
    raise ValueError(f"corrupt artifact: unknown value codec {kind!r}")


# ------------------------------------------------------------------------------------------
# One leaf.


def _stored_channels(flat_pos: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    channels = shape[-1] if len(shape) >= 2 else 1
    return (flat_pos % channels).astype(np.int64), channels


def _encode_leaf(x: np.ndarray) -> tuple[dict[str, Any], list[tuple[str, str, bytes]], int]:
    """(header entry, sections, logical bytes) of the smallest exact encoding of ``x``."""
    shape, size = tuple(x.shape), x.size
    flat = np.ascontiguousarray(x).reshape(-1)
    if _is_float(x.dtype):
        flat = np.where(flat == 0, np.zeros((), x.dtype), flat)  # -0.0 is stored as 0.0
    candidates = []
    layouts = [("dense", None)]
    if x.dtype.itemsize in (1, 2, 4, 8) and (_is_float(x.dtype) or x.dtype.kind in "iub"):
        keep = _as_uint(flat) != 0
        if keep.sum() < size:
            layouts.append(("sparse", keep))
    for layout, keep in layouts:
        pos = np.arange(size) if keep is None else np.flatnonzero(keep)
        vals = flat[pos]
        chan, channels = _stored_channels(pos, shape)
        mask_sec = []
        mask_bytes = 0
        if keep is not None:
            packed = bits_lib.pack_mask(keep).tobytes()
            mask_sec, mask_bytes = [("mask", "symbols", packed)], len(packed)
        opts = [_raw(vals)]
        if _is_float(x.dtype) and x.dtype.itemsize <= 4:
            opts.append(_codebook(vals, None, 1))
            if len(shape) >= 2:
                opts.append(_codebook(vals, chan, channels))
                opts.append(_grid(vals, chan, channels))
        for v in opts:
            if v is None:
                continue
            candidates.append((mask_bytes + v.logical, layout, keep, v, mask_sec))
    candidates.sort(key=lambda c: c[0])
    for logical, layout, keep, v, mask_sec in candidates:
        spec = {
            "shape": list(shape),
            "dtype": _dtype_name(x.dtype),
            "layout": layout,
            "nnz": int(size if keep is None else keep.sum()),
            "values": v.kind,
            "bits": v.bits,
            "k": v.k,
            "per_channel": v.per_channel,
        }
        sections = mask_sec + v.sections
        decoded = _decode_leaf(spec, {name: data for name, _, data in sections})
        if _as_uint(decoded.reshape(-1)).tobytes() == _as_uint(flat).tobytes():
            return spec, sections, logical
    raise AssertionError("the raw encoding always round-trips")  # pragma: no cover


def _decode_leaf(spec: dict[str, Any], sec: dict[str, bytes]) -> np.ndarray:
    shape = tuple(spec["shape"])
    dtype = _dtype(spec["dtype"])
    size = math.prod(shape)
    if spec["layout"] == "sparse":
        keep = bits_lib.unpack_mask(np.frombuffer(sec["mask"], np.uint8), (size,))
        pos = np.flatnonzero(keep)
    else:
        pos = np.arange(size)
    if pos.size != spec["nnz"]:
        raise ValueError("corrupt artifact: bitmask and stored count disagree")
    chan, _ = _stored_channels(pos, shape)
    vals = _decode_values(spec, sec, dtype, chan, pos.size)
    out = np.zeros(size, dtype)
    out[pos] = vals
    return out.reshape(shape)


def _is_float(dtype: Any) -> bool:
    """Floating point, the ml_dtypes ones (bfloat16, float8) included."""
    return bool(jnp.issubdtype(dtype, jnp.floating))


def _dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


def _dtype(name: str) -> np.dtype:
    return np.dtype(jnp.dtype(name))


# ------------------------------------------------------------------------------------------
# Public API.


@dataclasses.dataclass(frozen=True)
class ArtifactLeaf:
    """How one leaf is stored."""

    path: str  # '/'-joined key path
    shape: tuple[int, ...]  # leaf shape
    dtype: str  # dtype name
    layout: str  # "dense" or "sparse" (bitmask + nonzeros)
    nnz: int  # stored entries (nonzeros if sparse)
    values: str  # "raw", "codebook" or "grid"
    bits: int  # bits per index / integer (0 for raw)
    codebook_size: int  # entries per codebook (codebook only)
    per_channel: bool  # codebooks / scales per output channel
    float32_bytes: int  # the leaf as float32
    logical_bytes: int  # bitmask + values (indices packed at `bits`) + codebook / scales
    file_bytes: int  # its sections after entropy coding


@dataclasses.dataclass(frozen=True)
class ArtifactInfo(table.ByteTotals):
    """What an artifact holds; ``str()`` gives a table.

    ``logical_ratio`` is float32 bytes / logical bytes (before entropy coding).
    """

    leaves: tuple[ArtifactLeaf, ...]  # one per leaf, in tree order
    codec: str  # entropy codec
    file_bytes: int  # the whole file (header included)

    @property
    def ratio(self) -> float:
        """float32 bytes / file bytes."""
        return self.float32_bytes / max(self.file_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaves": [dataclasses.asdict(r) for r in self.leaves],
            "codec": self.codec,
            "float32_bytes": self.float32_bytes,
            "logical_bytes": self.logical_bytes,
            "file_bytes": self.file_bytes,
            "ratio": self.ratio,
            "logical_ratio": self.logical_ratio,
        }

    def __str__(self) -> str:
        head = ("path", "shape", "layout", "values", "bits", "nnz", "logical", "file")
        rows = []
        for r in self.leaves:
            vals = r.values + ("/ch" if r.per_channel else "")
            if r.values == "codebook":
                vals += f" k={r.codebook_size}"
            rows.append(
                (
                    r.path,
                    "x".join(map(str, r.shape)) or "scalar",
                    r.layout,
                    vals,
                    str(r.bits or ""),
                    f"{r.nnz:,}",
                    f"{r.logical_bytes:,}",
                    f"{r.file_bytes:,}",
                )
            )
        footer = (
            f"float32 {self.float32_bytes:,} B -> logical {self.logical_bytes:,} B "
            f"({self.logical_ratio:.1f}x) -> {self.codec} file {self.file_bytes:,} B "
            f"({self.ratio:.1f}x smaller)"
        )
        return table.format_table(head, rows, left=range(4), footer=[footer])


def _keys(path: tuple[Any, ...]) -> list[str]:
    return [paths_lib.path_str((k,)) for k in path]


def encode_artifact(params: Any, *, codec: str = "lzma") -> bytes:
    """Encodes a params tree as artifact bytes (see :func:`save_artifact`).

    Args:
      params: a pytree of arrays, usually ``jc.finalize(compressor, params, state)``.
      codec: entropy codec of the sections: ``"lzma"``, ``"zlib"`` or ``"none"``.

    Returns:
      The artifact file's bytes.

    Raises:
      ValueError: for an unknown codec or a leaf that is not an array (naming its path).

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> data = jc.io.encode_artifact({"w": jnp.array([[0.0, 0.5], [0.5, 0.0]])})
      >>> jc.io.decode_artifact(data)["w"].tolist()
      [[0.0, 0.5], [0.5, 0.0]]
    """
    if codec not in CODECS:
        raise ValueError(f"encode_artifact: codec must be one of {CODECS}, got {codec!r}")
    paths_lib.check_array_leaves(params)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    entries, blobs = [], []
    for path, leaf in flat:
        x = np.asarray(jax.device_get(leaf))
        spec, sections, logical = _encode_leaf(x)
        spec["keys"] = _keys(path)
        spec["logical_bytes"] = logical
        spec["sections"] = []
        for name, kind, data in sections:
            layouts = [("bytes", data)]
            if name in ("indices", "ints"):
                # Symbols compress best one per byte, tiny sections packed at `bits` bits.
                sym = np.frombuffer(data, _symbol_dtype(spec["bits"]))
                layouts.append(("packed", bits_lib.pack(sym, spec["bits"]).tobytes()))
            best = None
            for layout, raw in layouts:
                comp, used = _compress(raw, codec, kind), kind
                if len(comp) >= len(raw):  # tiny or incompressible: stored as is
                    comp, used = raw, "stored"
                if best is None or len(comp) < len(best[3]):
                    best = (layout, used, raw, comp)
            layout, used, raw, comp = best
            spec["sections"].append([name, used, layout, len(raw), len(comp)])
            blobs.append(comp)
        entries.append(spec)
    header = json.dumps(
        {"format": "jaxcompress-artifact", "version": 1, "codec": codec, "leaves": entries},
        separators=(",", ":"),
    ).encode()
    head = _compress(header, codec, "header")
    prefix = struct.pack("<BII", CODECS.index(codec), len(head), len(header))
    return b"".join([MAGIC, prefix, head, *blobs])


def _parse(data: bytes) -> tuple[dict[str, Any], int]:
    """(header, offset of the first section)."""
    fixed = len(MAGIC) + struct.calcsize("<BII")
    if len(data) < fixed or data[: len(MAGIC)] != MAGIC:
        raise ValueError("not a jaxcompress artifact (bad magic bytes)")
    codec_id, comp_len, raw_len = struct.unpack_from("<BII", data, len(MAGIC))
    if codec_id >= len(CODECS) or fixed + comp_len > len(data):
        raise ValueError("corrupt artifact: bad header prefix")
    codec = CODECS[codec_id]
    try:
        header = json.loads(_decompress(data[fixed : fixed + comp_len], codec, "header", raw_len))
    except (lzma.LZMAError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt artifact: unreadable header ({e})") from None
    if header.get("format") != "jaxcompress-artifact" or header.get("codec") != codec:
        raise ValueError("corrupt artifact: unreadable header")
    if header.get("version") != 1:
        raise ValueError(f"unsupported artifact version {header.get('version')!r}")
    return header, fixed + comp_len


def _info(header: dict[str, Any], file_bytes: int) -> ArtifactInfo:
    rows = []
    for e in header["leaves"]:
        shape = tuple(e["shape"])
        rows.append(
            ArtifactLeaf(
                path="/".join(e["keys"]),
                shape=shape,
                dtype=e["dtype"],
                layout=e["layout"],
                nnz=e["nnz"],
                values=e["values"],
                bits=e["bits"],
                codebook_size=e["k"],
                per_channel=e["per_channel"],
                float32_bytes=4 * math.prod(shape),
                logical_bytes=e["logical_bytes"],
                file_bytes=sum(s[4] for s in e["sections"]),
            )
        )
    return ArtifactInfo(tuple(rows), header["codec"], file_bytes)


def _unflatten(entries: list[dict[str, Any]], arrays: list[jax.Array], like: Any) -> Any:
    if like is not None:
        flat, treedef = jax.tree_util.tree_flatten_with_path(like)
        want = ["/".join(_keys(p)) for p, _ in flat]
        have = ["/".join(e["keys"]) for e in entries]
        if want != have:
            raise ValueError(
                f"decode_artifact: `like` has leaf paths {want} but the artifact holds {have}"
            )
        return jax.tree.unflatten(treedef, arrays)
    out: dict[str, Any] = {}
    for e, a in zip(entries, arrays, strict=True):
        node = out
        for k in e["keys"][:-1]:
            node = node.setdefault(k, {})
        node[e["keys"][-1] if e["keys"] else ""] = a
    return out


def decode_artifact(data: bytes, *, like: Any = None) -> Any:
    """Decodes artifact bytes back to the params that were encoded, exactly.

    Args:
      data: bytes from :func:`encode_artifact` (or a file written by :func:`save_artifact`).
      like: optional tree with the same leaf paths (e.g. the model's params, or abstract
        shapes) whose structure the result takes; without it the result is nested dicts keyed
        by the path components (the structure of Flax params).

    Returns:
      The params tree (``jax.Array`` leaves with the saved shapes and dtypes).

    Raises:
      ValueError: if ``data`` is not an artifact, is corrupt, or ``like`` has other paths.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> w = {"Dense_0": {"kernel": jnp.zeros((3, 2))}}
      >>> jc.io.decode_artifact(jc.io.encode_artifact(w))["Dense_0"]["kernel"].shape
      (3, 2)
    """
    header, off = _parse(data)
    codec = header["codec"]
    arrays = []
    for e in header["leaves"]:
        sec = {}
        for name, kind, layout, raw_len, comp_len in e["sections"]:
            if off + comp_len > len(data):
                raise ValueError("corrupt artifact: truncated")
            try:
                raw = _decompress(data[off : off + comp_len], codec, kind, raw_len)
            except (lzma.LZMAError, zlib.error) as err:
                raise ValueError(f"corrupt artifact: section {name!r}: {err}") from None
            if layout == "packed":
                sym = bits_lib.unpack(
                    np.frombuffer(raw, np.uint8),
                    e["bits"],
                    e["nnz"],
                    dtype=_symbol_dtype(e["bits"]),
                )
                raw = sym.tobytes()
            sec[name] = raw
            off += comp_len
        arrays.append(jnp.asarray(_decode_leaf(e, sec)))
    return _unflatten(header["leaves"], arrays, like)


def save_artifact(path: str | os.PathLike, params: Any, *, codec: str = "lzma") -> ArtifactInfo:
    """Writes params to one compressed file: the Deep Compression encoding stage.

    Pruned zeros become a bitmask, shared weights packed indices into a codebook, quantized
    weights integers with per-channel scales, and every section is entropy-coded (see the
    module docstring). The encoding is lossless: :func:`load_artifact` gives back exactly
    ``params``, so a model run on it gives exactly the same outputs.

    Args:
      path: the file to write (its parent directory must exist).
      params: a pytree of arrays, usually ``jc.finalize(compressor, params, state)`` (or
        ``state.finalized_params()`` of a ``jc.flax.TrainState``).
      codec: ``"lzma"`` (default, smallest), ``"zlib"`` (faster) or ``"none"``.

    Returns:
      :class:`ArtifactInfo`: per leaf the encoding, logical and on-disk bytes.

    Raises:
      ValueError: for an unknown codec or a non-array leaf.
      OSError: if the file cannot be written.

    Example:
      >>> import tempfile, os, jax.numpy as jnp, jaxcompress as jc
      >>> f = os.path.join(tempfile.mkdtemp(), "model.jca")
      >>> info = jc.io.save_artifact(f, {"w": jnp.zeros((64, 64))})
      >>> info.leaves[0].layout, info.file_bytes < 1000, jc.io.load_artifact(f)["w"].shape
      ('sparse', True, (64, 64))

    References:
      Han, Mao & Dally 2016, "Deep Compression: Compressing Deep Neural Networks with Pruning,
      Trained Quantization and Huffman Coding".
    """
    data = encode_artifact(params, codec=codec)
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    header, _ = _parse(data)
    return _info(header, len(data))


def load_artifact(path: str | os.PathLike, *, like: Any = None) -> Any:
    """Reads an artifact written by :func:`save_artifact` back to params (exactly).

    Args:
      path: the artifact file.
      like: optional tree whose structure the result takes (see :func:`decode_artifact`).

    Returns:
      The params tree.

    Raises:
      ValueError: if the file is not an artifact or is corrupt.
      OSError: if it cannot be read.

    Example:
      >>> import tempfile, os, jax.numpy as jnp, jaxcompress as jc
      >>> f = os.path.join(tempfile.mkdtemp(), "model.jca")
      >>> _ = jc.io.save_artifact(f, {"b": jnp.arange(3.0)})
      >>> jc.io.load_artifact(f)["b"].tolist()
      [0.0, 1.0, 2.0]
    """
    return decode_artifact(pathlib.Path(path).read_bytes(), like=like)


def artifact_info(source: str | os.PathLike | bytes) -> ArtifactInfo:
    """How each leaf of an artifact is stored, and the sizes (reads the header only).

    Args:
      source: an artifact file path, or its bytes.

    Returns:
      :class:`ArtifactInfo`; ``print()`` it for a table.

    Raises:
      ValueError: if it is not an artifact.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> info = jc.io.artifact_info(jc.io.encode_artifact({"w": jnp.ones((8, 8))}))
      >>> info.leaves[0].values, info.leaves[0].bits
      ('codebook', 1)
    """
    data = source if isinstance(source, (bytes, bytearray)) else pathlib.Path(source).read_bytes()
    header, _ = _parse(bytes(data))
    return _info(header, len(data))
