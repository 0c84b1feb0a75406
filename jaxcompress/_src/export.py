"""The host-side export skeleton shared by methods whose compressed form is per leaf.

``jc.cluster.export`` and ``jc.lowrank.export`` both take the forward view of every leaf,
find which leaves their method's states own (anywhere in a nested ``chain`` / ``rules``
state), and replace those leaves by an exported form; the other leaves stay the view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor, Params, State
from jaxcompress._src.summary import finalize


def export_owned(
    compressor: Compressor,
    params: Params,
    state: State,
    *,
    owned: Callable[[Any, list[jax.Array]], list[Any]],
    export_leaf: Callable[[str, jax.Array, Any], Any],
) -> Any:
    """The forward view of ``params`` with the owned leaves exported.

    Args:
      compressor: the Compressor.
      params: the stored float params (every leaf an array).
      state: the compressor state.
      owned: ``owned(treedef, view_leaves) -> [info or None per leaf]``: what the method's
        states hold for each leaf of the view's ``treedef``, ``None`` where they own nothing.
      export_leaf: ``export_leaf(path, view_leaf, info) -> exported`` for an owned leaf.

    Returns:
      A tree shaped like ``params``.

    Raises:
      ValueError: if a leaf of ``params`` is not an array (naming its path), or what
        ``export_leaf`` raises.
    """
    paths_lib.check_array_leaves(params)
    view = finalize(compressor, params, state)
    leaves, treedef = jax.tree.flatten(view)
    info = owned(treedef, leaves)
    out = [
        v if own is None else export_leaf(path, v, own)
        for (path, v), own in zip(paths_lib.leaves_with_paths(view), info, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)
