"""Activation quantization for Flax: linen method interception and the NNX dot / conv hooks.

Weights are quantized by a Compressor on the params pytree (``jc.quant.qat``); activations
are quantized where they enter a layer:

* linen: :func:`quantize_activations` is a context manager around ``model.apply`` that
  intercepts the ``__call__`` of the chosen module types (``nn.intercept_methods``) and
  fake-quantizes their input (dynamic per-token scales, or static calibrated ranges from
  :func:`calibrate_activations`). With ``int_matmul=True`` the ``Dense`` runs a real
  int8 x int8 -> int32 ``lax.dot_general`` in the forward, with straight-through gradients
  (w8a8 training on integers); an exported :class:`jaxcompress.quant.QArray` kernel always
  runs on integers (inference).
* NNX: :func:`quantized_dot_general` returns a function with ``lax.dot_general``'s signature
  for the ``dot_general=`` argument of ``nnx.Linear`` / ``nnx.Einsum`` / ``nnx.LinearGeneral``;
  :func:`quantized_conv` one with ``lax.conv_general_dilated``'s for the
  ``conv_general_dilated=`` argument of ``nnx.Conv``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress.quant import _calibration, _fake_quant, _intmm, _intmm_ste
from jaxcompress.quant._act_conv import fake_quant_lhs_conv
from jaxcompress.quant._export import QArray

_DEFAULT_MODULES = (nn.Dense,)


def _module_path(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path)


def _check_act_bits(bits: Any, where: str) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"{where}: bits must be an integer in 2..8, got {bits!r}")


def check_hook_args(bits: Any, ste: str, residuals: str, where: str) -> None:
    """ValueError naming ``where`` for bad activation ``bits``, ``ste`` or ``residuals``."""
    _check_act_bits(bits, where)
    _intmm.check_ste_residuals(ste, residuals, where)


def _int_dense(
    module: nn.Dense, x: jax.Array, kernel: Any, *, bits, per_token, absmax, ste, residuals
):
    """A linen Dense on integers: an exported QArray kernel (inference), or a float kernel
    quantized to int8 per output channel in the forward (:func:`jc.quant.int8_matmul`, with
    straight-through gradients)."""
    bias = module.get_variable("params", "bias") if module.use_bias else None
    if isinstance(kernel, QArray):
        y = _intmm.qdot(x, kernel, act_bits=bits, per_token=per_token, act_absmax=absmax)
        dtype = module.dtype or x.dtype
    else:
        x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
        y = _intmm_ste.int8_matmul(
            x,
            kernel,
            (((x.ndim - 1,), (0,)), ((), ())),
            bits=bits,
            per_token=per_token,
            absmax=absmax,
            ste=ste,
            residuals=residuals,
            precision=module.precision,
        )
        dtype = y.dtype
    if bias is not None:
        y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y.astype(dtype)


def _plain_dense(module: nn.Dense, kernel: Any) -> bool:
    """A Dense whose matmul the interceptor may compute itself (params present, no hook)."""
    return (
        kernel is not None
        and getattr(module, "dot_general", None) is None
        and getattr(module, "dot_general_cls", None) is None
    )


def _fq_dense(module: nn.Dense, x: jax.Array, kernel: jax.Array, *, bits, per_token, absmax, ste):
    """``nn.Dense.__call__`` with its input fake-quantized (original-operand backward)."""
    bias = module.get_variable("params", "bias") if module.use_bias else None
    x, kernel, bias = module.promote_dtype(x, kernel, bias, dtype=module.dtype)
    y = _intmm.fake_quant_lhs_dot(
        x,
        kernel,
        (((x.ndim - 1,), (0,)), ((), ())),
        bits=bits,
        per_token=per_token,
        absmax=absmax,
        ste=ste,
        precision=module.precision,
    )
    if bias is not None:
        y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    return y


@contextlib.contextmanager
def quantize_activations(
    bits: int = 8,
    *,
    per_token: bool = True,
    ranges: Mapping[str, jax.typing.ArrayLike] | None = None,
    int_matmul: bool = False,
    modules: Sequence[type[nn.Module]] = _DEFAULT_MODULES,
    exclude: str | None = None,
    ste: str = "clipped",
    residuals: str = "original",
) -> Iterator[None]:
    """Quantizes the input activations of linen layers inside ``model.apply`` (context manager).

    Use around the forward, inside or outside ``jit`` (interception happens at trace time)::

      with jc.flax.quantize_activations(8):
          logits = model.apply({"params": state.compress(v)}, x)   # w8a8 fake quant (QAT)

    The input of every intercepted layer is fake-quantized on a symmetric grid with a
    straight-through gradient: *dynamic* (one scale per token, ``max|x|`` over the features,
    every call) unless ``ranges`` gives a *static* calibrated range per layer path
    (:func:`calibrate_activations`). The backward of a ``Dense`` forms the kernel gradient
    from the original activations (``residuals="original"``, the default, as Qwix's and AQT's
    QAT do; the fake-quantized activations are not kept for the backward, the faster choice)
    or from the fake-quantized ones (``"quantized"``: plain autodiff of the fake-quantized
    forward, what other module types and ``Dense`` layers with their own ``dot_general``
    always get); see :func:`jaxcompress.quant.fake_quant_lhs_dot`.

    Integer matmuls: with ``int_matmul=True`` a plain ``Dense`` (no ``dot_general`` of its
    own) computes its forward as ``int8 x int8 -> int32`` with ``lax.dot_general`` and
    rescales once (:func:`jaxcompress.quant.int8_matmul`): the activations as above, the
    kernel quantized to int8 per output channel on the grid of ``jc.quant.qat(bits=8)``. The
    gradients are straight-through (``d x = g W^T``, ``d W = x^T g``), so this trains: it is
    w8a8 QAT with the forward on integers, faster than fake quantization where the CPU or
    accelerator has int8 matrix units. The weights need no compressor for it (a ``qat(bits=8)``
    view keeps its levels exactly but is quantized twice, which is slower); export with a
    ``qat(bits=8)`` compressor gives the integers the model trained with. A ``Dense`` whose
    kernel is an exported :class:`~jaxcompress.quant.QArray` (``jc.quant.quantize``) always
    runs on integers (inference: no gradient).

    Args:
      bits: activation bit width, 2..8.
      per_token: dynamic scales per token (else one per tensor).
      ranges: ``{layer path: absmax}`` static ranges, e.g. from
        :func:`calibrate_activations`; every intercepted layer needs one.
      int_matmul: run plain ``Dense`` layers' forward as real integer matmuls (float
        kernels quantized to int8 per output channel on the fly; straight-through
        gradients).
      modules: the module types whose input is quantized (the input is the first positional
        argument of ``__call__``); ``Dense`` by default.
      exclude: a regex of layer paths (``re.fullmatch``, e.g. ``"Dense_2"``) left in float.
      ste: ``"clipped"`` or ``"identity"``.
      residuals: ``"original"`` or ``"quantized"``: the activations the kernel gradient of
        a ``Dense`` is formed with.

    Yields:
      Nothing; the interception is active inside the ``with`` block.

    Raises:
      ValueError: for bad arguments up front; inside, if a layer has no static range (the
        message lists the calibrated paths) or an integer Dense gets a non-2-D kernel.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, jaxcompress as jc
      >>> model = jc.workloads.MLP((8, 4))
      >>> x = jax.random.normal(jax.random.key(0), (2, 6))
      >>> params = model.init(jax.random.key(1), x)["params"]
      >>> with jc.flax.quantize_activations(8):
      ...     y = model.apply({"params": params}, x)
      >>> y.shape
      (2, 4)

    References:
      Jacob et al. 2018; Dettmers et al. 2022 (per-token scales).
    """
    check_hook_args(bits, ste, residuals, "quantize_activations")
    modules = tuple(modules)
    if not modules or not all(isinstance(m, type) and issubclass(m, nn.Module) for m in modules):
        raise ValueError(
            f"quantize_activations: modules must be linen Module types, got {modules!r}"
        )
    skip = re.compile(exclude) if exclude is not None else None
    ranges = dict(ranges) if ranges is not None else None

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, modules) or not args:
            return next_fun(*args, **kwargs)
        path = _module_path(module)
        if skip is not None and skip.fullmatch(path):
            return next_fun(*args, **kwargs)
        absmax = None
        if ranges is not None:
            if path not in ranges:
                raise ValueError(
                    f"quantize_activations: no static range for layer {path!r}; calibrated "
                    f"layers: {', '.join(sorted(ranges)) or '(none)'}"
                )
            absmax = ranges[path]
        x = args[0]
        if isinstance(module, nn.Dense):
            kernel = module.get_variable("params", "kernel")
            if isinstance(kernel, QArray) or (int_matmul and _plain_dense(module, kernel)):
                return _int_dense(
                    module,
                    x,
                    kernel,
                    bits=bits,
                    per_token=per_token,
                    absmax=absmax,
                    ste=ste,
                    residuals=residuals,
                )
            if residuals == "original" and _plain_dense(module, kernel):
                return _fq_dense(
                    module, x, kernel, bits=bits, per_token=per_token, absmax=absmax, ste=ste
                )
        xq = _intmm.fake_quant_activation(x, bits, per_token=per_token, absmax=absmax, ste=ste)
        return next_fun(xq, *args[1:], **kwargs)

    with nn.intercept_methods(interceptor):
        yield


_METHODS = ("minmax", "percentile", "ema")


def calibrate_activations(
    apply_fn: Callable[..., Any],
    variables: Any,
    batches: Iterable[Any],
    *,
    method: str = "minmax",
    percentile: float = 99.99,
    ema_decay: float = 0.9,
    modules: Sequence[type[nn.Module]] = _DEFAULT_MODULES,
    **apply_kwargs: Any,
) -> dict[str, jax.Array]:
    """Static activation ranges of linen layers from a few calibration batches.

    Runs ``apply_fn(variables, *batch, **apply_kwargs)`` (jitted once) on each batch,
    recording ``max|x|`` (or the ``percentile`` of ``|x|``, found without sorting) of the
    input of every layer of the given ``modules`` types, and combines the batches:
    ``minmax``: the maximum; ``percentile``: the mean of the per-batch percentiles;
    ``ema``: an exponential moving average (``ema_decay``).

    Args:
      apply_fn: usually ``model.apply``.
      variables: ``{"params": ...}`` (float or fake-quantized params).
      batches: an iterable of inputs (an array, or a tuple of positional inputs) per batch.
      method: ``"minmax"``, ``"percentile"`` or ``"ema"``.
      percentile: for ``"percentile"``, in ``(0, 100]``.
      ema_decay: for ``"ema"``, in ``[0, 1)``.
      modules: the module types whose input is recorded.
      **apply_kwargs: static keyword arguments of ``apply_fn`` (e.g. ``train=False``).

    Returns:
      ``{layer path: float32 absmax}``, for :func:`quantize_activations`'s ``ranges``.

    Raises:
      ValueError: for a bad method / percentile / decay, no batch, or no layer found.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> model = jc.workloads.MLP((8, 4))
      >>> x = jax.random.normal(jax.random.key(0), (16, 6))
      >>> v = model.init(jax.random.key(1), x)
      >>> ranges = jc.flax.calibrate_activations(model.apply, v, [x[:8], x[8:]])
      >>> sorted(ranges)
      ['Dense_0', 'Dense_1']

    References:
      Nagel et al. 2021, "A White Paper on Neural Network Quantization" (range setting).
    """
    check_calibration(method, percentile, ema_decay, "calibrate_activations")
    modules = tuple(modules)

    def run(variables, *inputs):
        found: dict[str, jax.Array] = {}

        def interceptor(next_fun, args, kwargs, context):
            m = context.module
            if context.method_name == "__call__" and isinstance(m, modules) and args:
                path = _module_path(m)
                s = range_stat(args[0], method, percentile)
                found[path] = jnp.maximum(found[path], s) if path in found else s
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            apply_fn(variables, *inputs, **apply_kwargs)
        return found

    run = jax.jit(run)
    out = combine_batches(
        (run(variables, *(b if isinstance(b, tuple) else (b,))) for b in batches),
        method,
        ema_decay,
        "calibrate_activations",
    )
    if not out:
        raise ValueError(
            f"calibrate_activations: no layer of types {[m.__name__ for m in modules]} was called"
        )
    return out


def check_calibration(method: str, percentile: Any, ema_decay: Any, where: str) -> None:
    """ValueError for a bad calibration ``method`` / ``percentile`` / ``ema_decay``."""
    if method not in _METHODS:
        raise ValueError(f"{where}: method must be one of {_METHODS}, got {method!r}")
    if not (isinstance(percentile, (int, float)) and 0.0 < percentile <= 100.0):
        raise ValueError(f"{where}: percentile must be in (0, 100], got {percentile!r}")
    if not (isinstance(ema_decay, (int, float)) and 0.0 <= ema_decay < 1.0):
        raise ValueError(f"{where}: ema_decay must be in [0, 1), got {ema_decay!r}")


def range_stat(x: jax.Array, method: str, percentile: float) -> jax.Array:
    """One batch's range statistic of a layer input: ``max|x|`` or the ``percentile`` of |x|.

    Non-finite entries count as 0 (one bad value cannot set the range).
    """
    a = jnp.abs(_fake_quant.finite_or_zero(x.astype(jnp.float32)))
    if method != "percentile":
        return jnp.max(a)
    k = _calibration.percentile_rank(percentile, a.size)
    return _calibration.kth_largest(a, k, tuple(range(a.ndim))).reshape(())


def combine_batches(
    per_batch: Iterable[Mapping[str, jax.Array]], method: str, ema_decay: float, where: str
) -> dict[str, jax.Array]:
    """Per-batch ``{path: statistic}`` combined into ranges: max, EMA or mean (percentile)."""
    out: dict[str, Any] = {}
    n = 0
    for stats in per_batch:
        for path, s in jax.device_get(stats).items():
            s = np.float32(s)
            if path not in out:
                out[path] = s
            elif method == "minmax":
                out[path] = np.maximum(out[path], s)
            elif method == "ema":
                out[path] = np.float32(ema_decay * out[path] + (1 - ema_decay) * s)
            else:
                out[path] = out[path] + s
        n += 1
    if n == 0:
        raise ValueError(f"{where}: no calibration batch was given")
    if method == "percentile":
        out = {p: s / n for p, s in out.items()}
    return {p: jnp.asarray(s, jnp.float32) for p, s in out.items()}


def quantized_dot_general(
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    int_matmul: bool = False,
    ste: str = "clipped",
    residuals: str = "original",
) -> Callable[..., jax.Array]:
    """A ``lax.dot_general`` replacement that quantizes the activations (NNX injection point).

    Pass it as ``dot_general=`` to ``nnx.Linear`` (or ``nnx.LinearGeneral``, ``nnx.Einsum``):
    the left operand (the activations) is fake-quantized with one scale per token (reduced
    over its contracting axes), or with a static calibrated ``absmax``. The right operand
    (the kernel) is whatever the layer holds: quantize the weights with ``jc.quant.qat`` on
    the ``nnx.split`` params. With ``int_matmul=True`` both operands become int8 (the kernel
    per output channel, on the fly, on ``qat(bits=8)``'s grid) and ``lax.dot_general``
    accumulates in int32, with straight-through gradients (training and inference: see
    :func:`jaxcompress.quant.int8_matmul`). The backward forms the kernel gradient from the
    original activations (``residuals="original"``, the default) or the fake-quantized ones
    (``"quantized"``); see :func:`jaxcompress.quant.fake_quant_lhs_dot`.

    Args:
      bits: activation bit width, 2..8.
      per_token: dynamic scales per token (else one per tensor).
      absmax: a static calibrated activation range (scalar).
      int_matmul: real int8 x int8 -> int32 forward matmul (straight-through backward).
      ste: ``"clipped"`` or ``"identity"``.
      residuals: ``"original"`` or ``"quantized"`` (the activations of the kernel gradient).

    Returns:
      ``fn(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None)``.

    Raises:
      ValueError: for bad arguments; with ``int_matmul``, for batch dimensions (raised by
        :func:`jaxcompress.quant.int8_matmul`).

    Example:
      >>> import jax, jax.numpy as jnp, flax.nnx as nnx, jaxcompress as jc
      >>> layer = nnx.Linear(6, 3, dot_general=jc.flax.quantized_dot_general(8),
      ...                    rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 6))).shape
      (2, 3)

    References:
      Jacob et al. 2018; Dettmers et al. 2022.
    """
    check_hook_args(bits, ste, residuals, "quantized_dot_general")

    def fn(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
        # int8_matmul rejects batch dimensions itself; the float path takes dot_general's kwargs
        matmul = _intmm_ste.int8_matmul if int_matmul else _intmm.fake_quant_lhs_dot
        return matmul(
            lhs,
            rhs,
            dimension_numbers,
            bits=bits,
            per_token=per_token,
            absmax=absmax,
            ste=ste,
            residuals=residuals,
            precision=precision,
            preferred_element_type=preferred_element_type,
            **({} if int_matmul else kw),
        )

    return fn


def quantized_conv(
    bits: int = 8,
    *,
    per_token: bool = True,
    absmax: jax.typing.ArrayLike | None = None,
    ste: str = "clipped",
    residuals: str = "original",
) -> Callable[..., jax.Array]:
    """A ``lax.conv_general_dilated`` replacement that quantizes the input (NNX injection point).

    Pass it as ``conv_general_dilated=`` to ``nnx.Conv``: the layer's input activations are
    fake-quantized with one scale per token (per batch element and spatial position, reduced
    over the input features), per tensor, or from a static calibrated ``absmax``, with a
    straight-through backward whose kernel gradient comes from the original activations
    (``residuals="original"``, the default) or the fake-quantized ones (``"quantized"``);
    see :func:`jaxcompress.quant.fake_quant_lhs_conv`. The kernel is whatever the layer
    holds: quantize the weights with ``jc.quant.qat`` on the ``nnx.split`` params (as with
    :func:`quantized_dot_general` for ``nnx.Linear``).

    Args:
      bits: activation bit width, 2..8.
      per_token: dynamic scales per token (else one per tensor).
      absmax: a static calibrated activation range (scalar).
      ste: ``"clipped"`` or ``"identity"``.
      residuals: ``"original"`` or ``"quantized"`` (the activations of the kernel gradient).

    Returns:
      ``fn(lhs, rhs, window_strides, padding, ...)`` with ``lax.conv_general_dilated``'s
      signature.

    Raises:
      ValueError: for bad arguments (up front).

    Example:
      >>> import jax, jax.numpy as jnp, flax.nnx as nnx, jaxcompress as jc
      >>> conv = nnx.Conv(3, 4, (3, 3), conv_general_dilated=jc.flax.quantized_conv(8),
      ...                 rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 8, 8, 3))).shape
      (2, 8, 8, 4)

    References:
      Jacob et al. 2018; Dettmers et al. 2022.
    """
    check_hook_args(bits, ste, residuals, "quantized_conv")
    if absmax is not None and jnp.ndim(absmax):
        raise ValueError(f"quantized_conv: absmax must be a scalar, got shape {jnp.shape(absmax)}")

    def fn(lhs, rhs, window_strides, padding, *args, **kw):
        return fake_quant_lhs_conv(
            lhs,
            rhs,
            window_strides,
            padding,
            *args,
            bits=bits,
            per_token=per_token,
            absmax=absmax,
            ste=ste,
            residuals=residuals,
            **kw,
        )

    return fn
