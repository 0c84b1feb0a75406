"""Parameter paths: the '/'-joined key path of each leaf, and input validation by path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def path_str(path: tuple[Any, ...]) -> str:
    """Joins a key path with '/', e.g. ``params/Dense_0/kernel``.

    Example:
      >>> import jax
      >>> [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path({"a": {"b": 1}})[0]]
      ['a/b']
    """
    return jax.tree_util.keystr(path, simple=True, separator="/")


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """Returns ``[(path, leaf), ...]`` for every leaf of ``tree`` (``None`` leaves skipped).

    Example:
      >>> leaves_with_paths({"w": 1.0, "b": None})
      [('w', 1.0)]
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_str(p), leaf) for p, leaf in flat]


def map_with_path(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """``jax.tree.map`` whose function also receives the leaf's '/'-joined path first."""
    return jax.tree_util.tree_map_with_path(lambda p, *xs: fn(path_str(p), *xs), tree, *rest)


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)) or (
        hasattr(x, "shape") and hasattr(x, "dtype")
    )


def check_array_leaves(tree: Any, *, where: str = "params") -> None:
    """Raises a ValueError naming the path of any leaf that is not an array.

    Python scalars, strings and other objects in a parameter tree are almost always a
    mistake (a config value mixed into the params); they are rejected up front rather than
    failing deep inside XLA.

    Raises:
      ValueError: naming the path and the offending value.
    """
    for path, leaf in leaves_with_paths(tree):
        if not _is_array_like(leaf):
            raise ValueError(
                f"{where} leaf {path!r} is not an array (got {type(leaf).__name__}: {leaf!r}); "
                "compressors take pytrees of jax/numpy arrays"
            )


def check_float_leaves(tree: Any, *, method: str) -> None:
    """Raises a ValueError naming the path of any non-floating leaf routed to ``method``.

    Raises:
      ValueError: naming the path, the dtype and the method.
    """
    check_array_leaves(tree)
    for path, leaf in leaves_with_paths(tree):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                f"{method}: leaf {path!r} has dtype {leaf.dtype}, but the method needs floating "
                "point weights; route integer leaves to None in jc.rules"
            )
