"""Save and load exported (QArray) params with orbax.

orbax is imported inside the functions, so ``import jaxcompress.quant`` stays jax-only.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from jaxcompress._src import paths as paths_lib
from jaxcompress.quant._export import QArray, is_qarray

_META_KEYS = ("bits", "kind", "qmin", "shape", "grouped_shape", "dtype")


def _to_tree(x: Any) -> Any:
    if not is_qarray(x):
        return x
    d = {"values": x.values, "scale": x.scale}
    if x.zero_point is not None:
        d["zero_point"] = x.zero_point
    return d


def save(directory: str | os.PathLike, qparams: Any) -> None:
    """Saves a params tree with :class:`QArray` leaves (and float leaves) with orbax.

    Arrays go through orbax's standard handler (so they can be sharded and restored
    anywhere); the static QArray fields (bits, shapes, dtype) go in a JSON item next to them.
    The tree must be made of dicts (Flax params are).

    Args:
      directory: a new directory (absolute path or relative to the working directory).
      qparams: the tree, e.g. from :func:`~jaxcompress.quant.quantize`.

    Raises:
      ValueError: if the tree holds containers other than dicts, or ``directory`` exists.

    Example:
      >>> import tempfile, jax, jax.numpy as jnp, jaxcompress as jc
      >>> qp = jc.quant.ptq({"w": jax.random.normal(jax.random.key(0), (8, 4))}, bits=4)
      >>> d = tempfile.mkdtemp() + "/ckpt"
      >>> jc.quant.save(d, qp)
      >>> jc.quant.load(d)["w"].bits
      4
    """
    import orbax.checkpoint as ocp

    _check_dicts(qparams)
    meta = {}
    for p, leaf in jax.tree_util.tree_flatten_with_path(qparams, is_leaf=is_qarray)[0]:
        if is_qarray(leaf):
            meta[paths_lib.path_str(p)] = {k: getattr(leaf, k) for k in _META_KEYS}
    arrays = jax.tree.map(_to_tree, qparams, is_leaf=is_qarray)
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory):
        raise ValueError(f"save: {directory} already exists")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        ckpt.save(
            directory,
            ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), qmeta=ocp.args.JsonSave(meta)),
        )


def _check_dicts(tree: Any) -> None:
    if is_qarray(tree):
        return
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not isinstance(k, str):
                raise ValueError(f"save: dict keys must be strings, got {k!r}")
            _check_dicts(v)
        return
    if tree is None or hasattr(tree, "shape"):
        return
    raise ValueError(
        f"save: expected a tree of dicts, arrays and QArrays, got a {type(tree).__name__}"
    )


def load(directory: str | os.PathLike) -> Any:
    """Loads what :func:`save` wrote: the dict tree with :class:`QArray` leaves rebuilt.

    Args:
      directory: the directory given to :func:`save`.

    Returns:
      The tree, arrays as ``jax.Array`` on the default device.

    Example:
      See :func:`save`.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckpt:
        restored = ckpt.restore(
            directory,
            ocp.args.Composite(arrays=ocp.args.StandardRestore(), qmeta=ocp.args.JsonRestore()),
        )
    arrays, meta = restored["arrays"], restored["qmeta"] or {}

    def rebuild(node: Any, prefix: str) -> Any:
        if prefix in meta:
            m = meta[prefix]
            zp = node.get("zero_point")
            return QArray(
                values=jax.numpy.asarray(node["values"]),
                scale=jax.numpy.asarray(node["scale"]),
                zero_point=None if zp is None else jax.numpy.asarray(zp),
                bits=int(m["bits"]),
                kind=str(m["kind"]),
                qmin=int(m["qmin"]),
                shape=tuple(m["shape"]),
                grouped_shape=tuple(m["grouped_shape"]),
                dtype=str(m["dtype"]),
            )
        if isinstance(node, dict):
            return {k: rebuild(v, f"{prefix}/{k}" if prefix else k) for k, v in node.items()}
        return jax.numpy.asarray(node) if isinstance(node, np.ndarray) else node

    return rebuild(arrays, "")
