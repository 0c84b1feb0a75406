"""The exported artifact: the compressed model as stored, with what is needed to run it.

A folder with two files:

* ``artifact.json``: format and version, the model (``jc.workloads`` class name and its
  attributes), the data set and task, the per-leaf summary, the metrics measured at export, and
  one entry per parameter leaf naming its **codec** and the arrays that hold it;
* ``params.npz``: those arrays.

Codecs turn one leaf into named arrays and back. Today: ``dense`` (the array as is) and
``sparse`` (a packed bitmask of the non-zero entries plus their values; lossless, chosen when it
is smaller, e.g. for pruned kernels). Integer export slots in as one more codec (a ``qarray``
whose arrays are the integer values, packed below 8 bits, and the per-channel scales, from
``jc.quant.quantize``) chosen by :func:`choose_codec` for leaves whose summary says
``bits < 16``; :func:`load` decodes every codec back to the float params the model runs on.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._src import paths as paths_lib

FORMAT = "jaxcompress.artifact"
VERSION = 1
META_FILE = "artifact.json"
ARRAYS_FILE = "params.npz"


class Codec(NamedTuple):
    """How one leaf is stored."""

    encode: Callable[[np.ndarray], dict[str, np.ndarray]]  # leaf -> named arrays
    decode: Callable[[Mapping[str, np.ndarray], tuple[int, ...], np.dtype], np.ndarray]


def _dense_encode(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"values": x}


def _dense_decode(parts, shape, dtype):
    return parts["values"].reshape(shape)


def _sparse_encode(x: np.ndarray) -> dict[str, np.ndarray]:
    nz = x != 0
    return {"bitmask": np.packbits(nz.reshape(-1)), "values": x[nz]}


def _sparse_decode(parts, shape, dtype):
    size = math.prod(shape)
    mask = np.unpackbits(parts["bitmask"], count=size).astype(bool).reshape(shape)
    out = np.zeros(shape, dtype)
    out[mask] = parts["values"]
    return out


CODECS: dict[str, Codec] = {
    "dense": Codec(_dense_encode, _dense_decode),
    "sparse": Codec(_sparse_encode, _sparse_decode),
}


def choose_codec(x: np.ndarray) -> str:
    """``sparse`` when a bitmask plus the non-zero values is smaller than the dense leaf."""
    size = x.size
    if size == 0:
        return "dense"
    nnz = int(np.count_nonzero(x))
    sparse_bytes = math.ceil(size / 8) + nnz * x.dtype.itemsize
    return "sparse" if sparse_bytes < size * x.dtype.itemsize else "dense"


def _storable(a: np.ndarray) -> np.ndarray:
    # npz holds only numpy's own dtypes: store bfloat16 & co. as unsigned ints of their width.
    if a.dtype.kind == "V" or type(a.dtype).__module__.startswith("ml_dtypes"):
        return a.view(np.dtype(f"uint{8 * a.dtype.itemsize}"))
    return a


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, v in flat.items():
        node = out
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def save(directory: str | os.PathLike, params: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Writes ``params`` (the finalized, compressed-view params) and ``meta`` as an artifact.

    Args:
      directory: the artifact folder (created; existing artifact files are replaced).
      params: a nested dict of arrays (flax params).
      meta: JSON-compatible facts to keep (model, data, task, summary, metrics, config).

    Returns:
      The metadata written to ``artifact.json``.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    leaves = []
    for i, (path, x) in enumerate(paths_lib.leaves_with_paths(jax.device_get(params))):
        x = np.asarray(x)
        codec = choose_codec(x)
        parts = CODECS[codec].encode(x)
        names = {}
        for part, a in parts.items():
            key = f"leaf{i}_{part}"
            arrays[key] = _storable(np.asarray(a))
            names[part] = key
        leaves.append(
            {
                "path": path,
                "codec": codec,
                "shape": list(x.shape),
                "dtype": str(x.dtype),
                "arrays": names,
            }
        )
    full = {"format": FORMAT, "version": VERSION, **meta, "leaves": leaves}
    tmp = directory / (ARRAYS_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, directory / ARRAYS_FILE)
    (directory / META_FILE).write_text(json.dumps(full, indent=1) + "\n")
    return full


def find(path: str | os.PathLike) -> pathlib.Path:
    """The artifact folder for ``path``: the folder itself, or ``<run folder>/artifact``.

    Raises:
      FileNotFoundError: if neither holds an ``artifact.json``.
    """
    p = pathlib.Path(path)
    for cand in (p, p / "artifact"):
        if (cand / META_FILE).is_file():
            return cand
    raise FileNotFoundError(
        f"no jaxcompress artifact at {path} (expected {META_FILE} there or in {p / 'artifact'})"
    )


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Reads ``artifact.json`` of an artifact (or run) folder.

    Raises:
      FileNotFoundError: if there is no artifact.
      ValueError: if the file is not a jaxcompress artifact of a known version.
    """
    d = find(path)
    try:
        meta = json.loads((d / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{d / META_FILE} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d / META_FILE} is not a jaxcompress artifact")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{d}: artifact version {meta.get('version')!r} is not supported "
            f"(this jaxcompress reads version {VERSION})"
        )
    return meta


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads an artifact back: ``(params, meta)`` with params as a nested dict of jax arrays.

    Raises:
      FileNotFoundError: if there is no artifact.
      ValueError: for an unknown format, version or codec, or missing arrays.

    Example:
      >>> params, meta = load("runs/quickstart")  # doctest: +SKIP
      >>> meta["model"]["name"], meta["summary"]["ratio"]  # doctest: +SKIP
      ('MLP', 6.14...)
    """
    d = find(path)
    meta = load_meta(d)
    flat = {}
    with np.load(d / ARRAYS_FILE, allow_pickle=False) as f:
        for leaf in meta["leaves"]:
            codec = CODECS.get(leaf["codec"])
            if codec is None:
                raise ValueError(
                    f"{d}: leaf {leaf['path']!r} uses codec {leaf['codec']!r}, which "
                    f"this jaxcompress cannot read (known: {', '.join(CODECS)})"
                )
            dtype = jnp.dtype(leaf["dtype"])
            parts = {}
            for part, key in leaf["arrays"].items():
                if key not in f:
                    raise ValueError(f"{d}: array {key!r} of leaf {leaf['path']!r} is missing")
                a = f[key]
                if part == "values" and a.dtype != dtype:
                    a = a.view(dtype)
                parts[part] = a
            flat[leaf["path"]] = jnp.asarray(codec.decode(parts, tuple(leaf["shape"]), dtype))
    return _nest(flat), meta
