"""Physically remove the dead units of channel-pruned Dense / Conv chains."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _get(tree: Any, path: str) -> Any:
    node = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"shrink: layer path {path!r} not found in the params (at {part!r})")
        node = node[part]
    if not isinstance(node, Mapping) or "kernel" not in node:
        raise ValueError(
            f"shrink: {path!r} is not a layer with a 'kernel' (got {type(node).__name__})"
        )
    return node


def _set(tree: Any, path: str, layer: dict) -> Any:
    parts = path.split("/")

    def go(node, i):
        new = dict(node)
        new[parts[i]] = layer if i == len(parts) - 1 else go(node[parts[i]], i + 1)
        return type(node)(new) if not isinstance(node, dict) else new

    return go(tree, 0)


def shrink(
    params: Any,
    layers: Sequence[str],
    *,
    activation: Callable[[Any], Any] = jax.nn.relu,
) -> tuple[Any, dict[str, int]]:
    """Removes the dead output units of a chain of Dense / Conv layers, exactly.

    ``layers`` lists the layers in the order data flows through them (``"Dense_0"``,
    ``"params/Conv_1"``...), each a dict with a ``kernel`` (``(in, out)`` or
    ``(h, w, in, out)``) and optionally a ``bias``; consecutive layers are joined by the
    elementwise ``activation`` (and a flatten, when a Dense follows a Conv: NHWC order). A unit
    ``j`` of a layer is dead when its kernel slice ``kernel[..., j]`` is all zero (channel
    pruning, :func:`channel`): its output is the constant ``activation(bias[j])``. The unit is
    removed with the matching input slice of the next layer, and the constant's contribution is
    folded into the next layer's bias: exactly for a Dense next layer; for a Conv next layer
    (zero padding makes the contribution position-dependent) only units whose constant is 0 are
    removed. The last layer's outputs are kept.

    Args:
      params: the params tree (pruned weights exactly zero, e.g. after ``update`` or
        ``jc.finalize``).
      layers: paths of the layers, in order ('/'-joined keys).
      activation: the elementwise activation between layers (``activation(0)`` need not be 0).

    Returns:
      ``(new_params, sizes)``: params with smaller kernels / biases (other leaves untouched)
      and ``{path: output units}`` for every listed layer: build the smaller model with these
      widths.

    Raises:
      ValueError: if a path is missing or not a layer, a layer list has fewer than one entry,
        or consecutive layers' shapes do not chain.

    Example:
      >>> import numpy as np, jaxcompress as jc
      >>> p = {"Dense_0": {"kernel": np.array([[1.0, 0.0, 2.0]]), "bias": np.zeros(3)},
      ...      "Dense_1": {"kernel": np.ones((3, 2)), "bias": np.zeros(2)}}
      >>> small, sizes = jc.prune.shrink(p, ["Dense_0", "Dense_1"])
      >>> sizes, small["Dense_1"]["kernel"].shape
      ({'Dense_0': 2, 'Dense_1': 2}, (2, 2))

    References:
      Li et al. 2017, "Pruning Filters for Efficient ConvNets"; He et al. 2017, "Channel
      Pruning for Accelerating Very Deep Neural Networks".
    """
    layers = list(layers)
    if not layers:
        raise ValueError("shrink: give at least one layer path")
    cur = {p: {k: np.asarray(v) for k, v in _get(params, p).items()} for p in layers}
    for a, b in zip(layers[:-1], layers[1:], strict=True):
        la, lb = cur[a], cur[b]
        ka, kb = la["kernel"], lb["kernel"]
        units = ka.shape[-1]
        fan_in = kb.shape[-2] if kb.ndim > 2 else kb.shape[0]
        if fan_in % units:
            raise ValueError(
                f"shrink: {a!r} has {units} outputs but {b!r} takes {fan_in} inputs; the layers "
                "do not chain"
            )
        if kb.ndim > 2 and fan_in != units:
            raise ValueError(f"shrink: conv {b!r} takes {fan_in} channels, {a!r} gives {units}")
        reps = fan_in // units  # > 1: a Dense after a flattened NHWC feature map
        dead = np.all(ka.reshape(-1, units) == 0, axis=0)
        bias_a = la.get("bias")
        const = np.asarray(activation(bias_a if bias_a is not None else np.zeros(units)))
        const = np.broadcast_to(const.astype(np.float64), (units,))
        if kb.ndim > 2:
            dead &= const == 0
        elif np.any(dead & (const != 0)) and "bias" not in lb:
            dead &= const == 0  # nowhere to fold the constant
        keep = ~dead
        if kb.ndim == 2 and np.any(dead & (const != 0)):
            rows = kb.reshape(reps, units, kb.shape[-1])
            fold = np.einsum("j,pjo->o", np.where(dead, const, 0.0), rows.astype(np.float64))
            lb["bias"] = (lb["bias"].astype(np.float64) + fold).astype(lb["bias"].dtype)
        la["kernel"] = ka[..., keep]
        if bias_a is not None:
            la["bias"] = bias_a[keep]
        if kb.ndim > 2:
            lb["kernel"] = kb[..., keep, :]
        else:
            rows = kb.reshape(reps, units, kb.shape[-1])[:, keep, :]
            lb["kernel"] = rows.reshape(reps * int(keep.sum()), kb.shape[-1])
    new = params
    for p in layers:
        new = _set(new, p, {**_get(new, p), **{k: jnp.asarray(v) for k, v in cur[p].items()}})
    sizes = {p: int(cur[p]["kernel"].shape[-1]) for p in layers}
    return new, sizes
