"""NNX activation quantization in one call: calibrate static ranges, install the layer hooks.

``nnx.Linear`` / ``nnx.LinearGeneral`` take a ``dot_general`` and ``nnx.Conv`` a
``conv_general_dilated``: :func:`quantize_nnx_activations` sets them, on every such layer of a
model, to :func:`~jaxcompress.flax.quantized_dot_general` /
:func:`~jaxcompress.flax.quantized_conv` (with the layer's own static range when ``ranges``
is given), and :func:`calibrate_nnx_activations` records those ranges from a few batches,
the NNX counterparts of ``quantize_activations`` / ``calibrate_activations`` for linen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from jaxcompress.flax import _act_quant

_DEFAULT_TYPES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv)
_DEFAULT_OPS = {"dot_general": lax.dot_general, "conv_general_dilated": lax.conv_general_dilated}
_MARK = "_jaxcompress_activation_hook"


def _hook(layer: nnx.Module) -> str:
    return "conv_general_dilated" if isinstance(layer, nnx.Conv) else "dot_general"


def _check_types(types: Sequence[type], where: str) -> tuple[type, ...]:
    types = tuple(types)
    if not types or not all(isinstance(t, type) and issubclass(t, nnx.Module) for t in types):
        raise ValueError(f"{where}: types must be NNX Module types, got {types!r}")
    for t in types:
        if not any(issubclass(t, d) for d in _DEFAULT_TYPES):
            raise ValueError(
                f"{where}: {t.__name__} has no dot_general / conv_general_dilated hook; "
                "supported: nnx.Linear, nnx.LinearGeneral, nnx.Conv (and subclasses)"
            )
    return types


def _layers(
    model: nnx.Module, types: tuple[type, ...], exclude: str | None, where: str
) -> Iterator[tuple[str, nnx.Module]]:
    skip = re.compile(exclude) if exclude is not None else None
    found = False
    for path, layer in nnx.iter_modules(model):
        if not isinstance(layer, types):
            continue
        name = "/".join(str(p) for p in path)
        if skip is not None and skip.fullmatch(name):
            continue
        found = True
        yield name, layer
    if not found:
        raise ValueError(f"{where}: no layer of types {[t.__name__ for t in types]} in the model")


def _check_own_hook(name: str, layer: nnx.Module, where: str) -> None:
    """A ValueError if the layer's hook is the user's own (neither the lax op nor ours)."""
    hook = _hook(layer)
    fn = getattr(layer, hook)
    if fn is not _DEFAULT_OPS[hook] and not getattr(fn, _MARK, False):
        raise ValueError(
            f"{where}: layer {name!r} has its own {hook} ({fn!r}); leave it out with exclude="
        )


def quantize_nnx_activations(
    model: nnx.Module,
    bits: int | None = 8,
    *,
    per_token: bool = True,
    ranges: Mapping[str, jax.typing.ArrayLike] | None = None,
    int_matmul: bool = False,
    ste: str = "clipped",
    residuals: str = "original",
    types: Sequence[type] = _DEFAULT_TYPES,
    exclude: str | None = None,
) -> list[str]:
    """Quantizes the input activations of an NNX model's Linear / Conv layers (in place).

    Sets the ``dot_general`` of every ``nnx.Linear`` / ``nnx.LinearGeneral`` to
    :func:`~jaxcompress.flax.quantized_dot_general` and the ``conv_general_dilated`` of every
    ``nnx.Conv`` to :func:`~jaxcompress.flax.quantized_conv`: dynamic per-token scales, or,
    with ``ranges`` (e.g. from :func:`calibrate_nnx_activations`), each layer's static
    calibrated range. The hooks are static parts of the module (the graphdef): they trace
    into ``nnx.jit`` / ``jax.jit`` like any layer setting. Weights are quantized separately,
    by a Compressor on the ``nnx.split`` params (``jc.quant.qat``). ``bits=None`` restores
    the plain ``lax`` ops where this function set a hook (a float model again). Calling it
    again replaces the hooks it set; a layer with a hook of the user's own raises (leave it
    out with ``exclude``), and ``bits=None`` leaves such a hook alone.

    Args:
      model: an NNX module (changed in place).
      bits: activation bit width 2..8, or None to remove the quantization.
      per_token: dynamic scales per token (else one per tensor).
      ranges: ``{layer path: absmax}`` static ranges; every hooked layer needs one.
      int_matmul: Linear layers run the int8 x int8 -> int32 forward
        (:func:`jaxcompress.quant.int8_matmul`); convolutions stay fake-quantized.
      ste: ``"clipped"`` or ``"identity"``.
      residuals: ``"original"`` or ``"quantized"`` (the activations of the kernel gradient).
      types: the layer types to hook (subclasses of Linear, LinearGeneral, Conv).
      exclude: a regex of layer paths (``re.fullmatch``, e.g. ``"head"``) left in float.

    Returns:
      The paths of the layers hooked (with ``bits=None``: restored), in the model's order.

    Raises:
      ValueError: for bad arguments, no matching layer, a layer with its own hook, a layer
        missing from ``ranges`` (the message lists the calibrated paths) or a range that is
        not a finite positive scalar.

    Example:
      >>> import jax.numpy as jnp, flax.nnx as nnx, jaxcompress as jc
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      ...         self.head = nnx.Linear(4, 2, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.head(self.conv(x).mean(axis=(1, 2)))
      >>> net = Net(nnx.Rngs(0))
      >>> jc.flax.quantize_nnx_activations(net, 8)
      ['conv', 'head']
      >>> net(jnp.ones((2, 5, 5, 1))).shape
      (2, 2)

    References:
      Jacob et al. 2018; Dettmers et al. 2022 (per-token scales).
    """
    where = "quantize_nnx_activations"
    types = _check_types(types, where)
    if bits is not None:
        _act_quant.check_hook_args(bits, ste, residuals, where)
    layers = list(_layers(model, types, exclude, where))
    if bits is None:
        # restore the hooks this function set; a hook of the user's own stays
        ours = [(n, m) for n, m in layers if getattr(getattr(m, _hook(m)), _MARK, False)]
        for _, layer in ours:
            setattr(layer, _hook(layer), _DEFAULT_OPS[_hook(layer)])
        return [name for name, _ in ours]
    for name, layer in layers:
        _check_own_hook(name, layer, where)
    if ranges is not None:
        missing = [name for name, _ in layers if name not in ranges]
        if missing:
            raise ValueError(
                f"{where}: no static range for layer(s) {missing}; calibrated layers: "
                f"{', '.join(sorted(ranges)) or '(none)'}"
            )
        for name, _ in layers:
            a = np.asarray(jax.device_get(ranges[name]), np.float32)
            if a.ndim or not (np.isfinite(a) and a > 0):
                raise ValueError(
                    f"{where}: the range of layer {name!r} must be a finite positive scalar, "
                    f"got {ranges[name]!r}"
                )
    for name, layer in layers:
        hook = _hook(layer)
        absmax = None if ranges is None else jnp.asarray(ranges[name], jnp.float32)
        kw = dict(per_token=per_token, absmax=absmax, ste=ste, residuals=residuals)
        if hook == "conv_general_dilated":
            fn = _act_quant.quantized_conv(bits, **kw)
        else:
            fn = _act_quant.quantized_dot_general(bits, int_matmul=int_matmul, **kw)
        setattr(fn, _MARK, True)
        setattr(layer, hook, fn)
    return [name for name, _ in layers]


def calibrate_nnx_activations(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    ema_decay: float = 0.9,
    types: Sequence[type] = _DEFAULT_TYPES,
    exclude: str | None = None,
) -> dict[str, jax.Array]:
    """Static input ranges of an NNX model's Linear / Conv layers from a few batches.

    Runs the model (jitted once, on a copy: the model and its state are left as they are) on
    each batch, recording ``max|x|`` (or the ``percentile`` of ``|x|``) of every hooked
    layer's input, and combines the batches as ``jc.flax.calibrate_activations`` does:
    ``minmax`` the maximum, ``percentile`` the mean of the per-batch percentiles, ``ema`` an
    exponential moving average. Non-finite entries count as 0.

    Args:
      model: an NNX module (float or already quantized: inputs are recorded before their
        quantization).
      batches: an iterable of inputs (an array, or a tuple of positional inputs) per batch.
      method: ``"minmax"``, ``"percentile"`` or ``"ema"``.
      percentile: for ``"percentile"``, in ``(0, 100]``.
      ema_decay: for ``"ema"``, in ``[0, 1)``.
      types, exclude: the layers to record, as in :func:`quantize_nnx_activations`.

    Returns:
      ``{layer path: float32 absmax}`` for :func:`quantize_nnx_activations`'s ``ranges``.

    Raises:
      ValueError: for a bad method / percentile / decay, no batch, or no matching layer (in
        the model or called by its forward).

    Example:
      >>> import jax, flax.nnx as nnx, jaxcompress as jc
      >>> net = nnx.Sequential(nnx.Linear(6, 8, rngs=nnx.Rngs(0)), nnx.relu,
      ...                      nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
      >>> x = jax.random.normal(jax.random.key(0), (16, 6))
      >>> ranges = jc.flax.calibrate_nnx_activations(net, [x[:8], x[8:]])
      >>> sorted(ranges)
      ['layers/0', 'layers/2']
      >>> jc.flax.quantize_nnx_activations(net, 8, ranges=ranges)
      ['layers/0', 'layers/2']

    References:
      Nagel et al. 2021, "A White Paper on Neural Network Quantization" (range setting).
    """
    where = "calibrate_nnx_activations"
    _act_quant.check_calibration(method, percentile, ema_decay, where)
    types = _check_types(types, where)
    names = [name for name, _ in _layers(model, types, exclude, where)]
    graphdef, state = nnx.split(model)

    def run(state, *inputs):
        copy = nnx.merge(graphdef, state)
        found: dict[str, jax.Array] = {}
        for name, layer in _layers(copy, types, exclude, where):
            hook = _hook(layer)
            inner = getattr(layer, hook)

            def record(lhs, *args, _name=name, _inner=inner, **kwargs):
                s = _act_quant.range_stat(lhs, method, percentile)
                found[_name] = jnp.maximum(found[_name], s) if _name in found else s
                return _inner(lhs, *args, **kwargs)

            setattr(layer, hook, record)
        copy(*inputs)
        return found

    run = jax.jit(run)
    out = _act_quant.combine_batches(
        (run(state, *(b if isinstance(b, tuple) else (b,))) for b in batches),
        method,
        ema_decay,
        where,
    )
    if not out:
        raise ValueError(f"{where}: no layer of types {[t.__name__ for t in types]} was called")
    return {name: out[name] for name in names if name in out}
