"""The exported artifact of a run: the compressed params in one file, plus a JSON sidecar.

A folder with two files:

* ``params.jca``: the finalized (compressed-view) params written by
  :func:`jaxcompress.io.save_artifact`: per leaf the smallest exact encoding found from the
  values (a bitmask of the nonzeros for pruned kernels, integers on a per-channel grid for
  quantized ones, codebook indices for shared weights), every section entropy-coded. Lossless:
  loading it gives back exactly the params the run evaluated at export.
* ``artifact.json``: format and version, the model (``jc.workloads`` class name and its
  attributes), the data set and task, the per-leaf summary, the metrics measured at export,
  and ``storage``: how each leaf is stored and the file's size
  (:meth:`jaxcompress.io.ArtifactInfo.to_dict`).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from jaxcompress import io as jc_io

FORMAT = "jaxcompress.artifact"
VERSION = 2
META_FILE = "artifact.json"
PARAMS_FILE = "params.jca"


def save(directory: str | os.PathLike, params: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Writes ``params`` (the finalized, compressed-view params) and ``meta`` as an artifact.

    Args:
      directory: the artifact folder (created; existing artifact files are replaced).
      params: a nested dict of arrays (flax params).
      meta: JSON-compatible facts to keep (model, data, task, summary, metrics, config).

    Returns:
      The metadata written to ``artifact.json`` (``storage`` included).

    Raises:
      OSError: if the folder cannot be written.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> d = tempfile.mkdtemp()
      >>> meta = save(d, {"Dense_0": {"kernel": jnp.zeros((64, 8))}}, {"task": "x"})
      >>> meta["storage"]["leaves"][0]["layout"], meta["params_file"]
      ('sparse', 'params.jca')
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = jc_io.save_artifact(directory / PARAMS_FILE, params)
    full = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "params_file": PARAMS_FILE,
        "storage": info.to_dict(),
    }
    tmp = directory / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(full, indent=1) + "\n")
    os.replace(tmp, directory / META_FILE)
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
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{d / META_FILE} is not a jaxcompress artifact")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{d}: artifact version {meta.get('version')!r} is not supported "
            f"(this jaxcompress reads version {VERSION}; re-export with jaxcompress run)"
        )
    return meta


def params_file(path: str | os.PathLike) -> pathlib.Path:
    """The ``params.jca`` file of an artifact (or run) folder.

    Raises:
      FileNotFoundError: if there is no artifact.
      ValueError: if it is not a jaxcompress artifact of a known version.
    """
    d = find(path)
    return d / load_meta(d).get("params_file", PARAMS_FILE)


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reads an artifact back: ``(params, meta)``, params exactly as evaluated at export.

    Args:
      path: an artifact folder or a run folder.

    Returns:
      ``(params, meta)``: params as a nested dict of jax arrays, meta from ``artifact.json``.

    Raises:
      FileNotFoundError: if there is no artifact or its params file is missing.
      ValueError: for an unknown format or version, or a corrupt params file.

    Example:
      >>> params, meta = load("runs/quickstart")  # doctest: +SKIP
      >>> meta["model"]["name"], meta["storage"]["file_bytes"]  # doctest: +SKIP
      ('MLP', 31337)
    """
    d = find(path)
    meta = load_meta(d)
    f = d / meta.get("params_file", PARAMS_FILE)
    if not f.is_file():
        raise FileNotFoundError(f"artifact {d}: its params file {f.name} is missing")
    try:
        params = jc_io.load_artifact(f)
    except ValueError as e:
        raise ValueError(f"{f}: {e}") from None
    return params, meta
