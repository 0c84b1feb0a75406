"""Shardings of a compressor state derived from the shardings of the params it belongs to.

A state's per-leaf trees (masks, scales, codebooks, scores ...) have the params' structure
(DESIGN §1), so each of their arrays belongs to one param leaf. An array of the same rank as
its param keeps the param's partitioning on every dimension it shares with the param (same
size, or a size the mesh axis still divides); size-1 dimensions (per-channel reductions kept
with ``keepdims``) are replicated. An array of one more dimension that splits a param axis into
groups (per-group scales ``(in // g, 1, out)``) keeps the partitioning of that axis on the
group dimension when the mesh axis divides the number of groups. Arrays of any other rank,
and everything else (step counts, schedules), are replicated.
"""

from __future__ import annotations

import math
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from jaxcompress._src.base import Compressor, Params


def _axis_size(mesh: Any, entry: Any) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[n] for n in names)


def _follow(mesh: Any, entry: Any, n: int, pn: int) -> Any:
    """A state dimension of size ``n`` against the param's ``pn``, partitioned by ``entry``."""
    if entry is None:
        return None
    if n == pn or (n > 1 and n % _axis_size(mesh, entry) == 0):
        return entry
    return None


def _split_axis_spec(
    mesh: Any, spec: list[Any], shape: tuple[int, ...], param_shape: tuple[int, ...]
) -> list[Any]:
    """Spec of a state array whose extra dimension splits one param axis into groups.

    Per-group scales view an axis of size ``n`` as ``(n // g, g)`` and reduce the groups
    (``(n // g, 1)``): the outer factor keeps the param axis's partitioning when the mesh axis
    divides the number of groups (each device then holds whole groups). Replicated when no
    axis, or more than one, explains the shape.
    """
    found = []
    for a, pn in enumerate(param_shape):
        n, inner = shape[a], shape[a + 1]
        rest = shape[:a] + shape[a + 2 :]
        others = param_shape[:a] + param_shape[a + 1 :]
        if n < 1 or pn % n or inner not in (1, pn // n):
            continue
        if any(d not in (1, pd) for d, pd in zip(rest, others)):
            continue
        found.append(
            [_follow(mesh, spec[i], shape[i], param_shape[i]) for i in range(a)]
            + [_follow(mesh, spec[a], n, pn), None]
            + [
                _follow(mesh, spec[i], shape[i + 1], param_shape[i])
                for i in range(a + 1, len(param_shape))
            ]
        )
    if len(found) == 1 or (found and all(f == found[0] for f in found)):
        return found[0]
    return []


def derive_sharding(
    param_sharding: jax.sharding.Sharding, param_shape: tuple[int, ...], shape: tuple[int, ...]
) -> jax.sharding.Sharding:
    """The sharding of a state array of ``shape`` that belongs to a param of ``param_shape``.

    Args:
      param_sharding: the param's sharding (a ``NamedSharding`` to derive from; any other
        sharding is reused only for arrays of the param's exact shape).
      param_shape: the param's shape.
      shape: the state array's shape.

    Returns:
      A sharding for the state array.

    Example:
      >>> import jax, numpy as np
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
      >>> s = derive_sharding(NamedSharding(mesh, P("data", "model")), (8, 4), (1, 4))
      >>> s.spec
      P(None, 'model')
    """
    if not isinstance(param_sharding, NamedSharding):
        if tuple(shape) == tuple(param_shape):
            return param_sharding
        return jax.sharding.SingleDeviceSharding(next(iter(param_sharding.device_set)))
    mesh = param_sharding.mesh
    spec = list(param_sharding.spec) + [None] * (len(param_shape) - len(param_sharding.spec))
    if len(shape) == len(param_shape):
        out = [_follow(mesh, e, n, pn) for e, n, pn in zip(spec, shape, param_shape)]
    elif len(shape) == len(param_shape) + 1:
        out = _split_axis_spec(mesh, spec, tuple(shape), tuple(param_shape))
    else:
        out = []
    # Trailing Nones dropped: the canonical form jit gives its outputs, so a state placed
    # with these shardings is not recompiled for when a step's outputs come back.
    while out and out[-1] is None:
        out.pop()
    return NamedSharding(mesh, PartitionSpec(*out))


def _abstract(params: Params) -> Any:
    def one(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(one, params)


def state_shardings(compressor: Compressor, params: Params) -> Any:
    """The shardings of ``compressor.init(params)``'s state, from the params' shardings.

    Use it as ``out_shardings`` of a jitted ``init`` (and of the train step's state) so masks,
    scales and codebooks live next to the params they belong to instead of on one device.

    Args:
      compressor: the Compressor.
      params: sharded params, or ``jax.ShapeDtypeStruct`` leaves carrying a ``sharding``.

    Returns:
      A tree of shardings with the structure of the state.

    Raises:
      ValueError: if a params leaf has no sharding (naming its path).

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, jaxcompress as jc
      >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      >>> mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
      >>> params = {"k": jax.device_put(jnp.ones((8, 4)), NamedSharding(mesh, P("data", "model")))}
      >>> comp = jc.prune.magnitude(0.5)
      >>> sh = jc.state_shardings(comp, params)
      >>> state = jax.jit(comp.init, out_shardings=sh)(params)
      >>> state.mask["k"].sharding.spec
      P('data', 'model')
    """
    from jaxcompress._src import paths as paths_lib

    abstract = _abstract(params)
    for path, leaf in paths_lib.leaves_with_paths(abstract):
        if leaf.sharding is None:
            raise ValueError(
                f"state_shardings: params leaf {path!r} has no sharding; pass arrays placed "
                "with jax.device_put(x, NamedSharding(...)) or ShapeDtypeStruct(..., sharding=...)"
            )
    p_leaves, treedef = jax.tree.flatten(abstract)
    state_shape = jax.eval_shape(compressor.init, abstract)
    mesh_source = next(
        (p.sharding for p in p_leaves if isinstance(p.sharding, NamedSharding)), None
    )

    def replicated(x):
        if mesh_source is not None:
            return NamedSharding(mesh_source.mesh, PartitionSpec())
        return p_leaves[0].sharding if p_leaves else None

    def per_leaf(node):
        flat = treedef.flatten_up_to(node)
        out = [
            None
            if sub is None
            else jax.tree.map(lambda x, p=p: derive_sharding(p.sharding, p.shape, x.shape), sub)
            for sub, p in zip(flat, p_leaves)
        ]
        return jax.tree.unflatten(treedef, out)

    def is_per_leaf(node) -> bool:
        if treedef.num_leaves == 0 or node is None or isinstance(node, jax.ShapeDtypeStruct):
            return False
        try:
            treedef.flatten_up_to(node)
        except (ValueError, TypeError):
            return False
        return True

    def walk(node):
        if node is None:
            return None
        if isinstance(node, jax.ShapeDtypeStruct):
            return replicated(node)
        if is_per_leaf(node):
            return per_leaf(node)
        children, sub_def = jax.tree_util.tree_flatten(
            node, is_leaf=lambda n: n is not node and (is_per_leaf(n) or n is None)
        )
        if len(children) == 1 and children[0] is node:  # an opaque leaf
            return replicated(node)
        return jax.tree_util.tree_unflatten(sub_def, [walk(c) for c in children])

    return walk(state_shape)
