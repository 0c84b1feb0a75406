"""Post-training quantization: calibrate on the float params and export, no training."""

from __future__ import annotations

from typing import Any

from jaxcompress._src.base import Compressor, Params
from jaxcompress.quant._export import quantize
from jaxcompress.quant._qat import qat


def ptq(params: Params, compressor: Compressor | None = None, **qat_kwargs: Any) -> Params:
    """Post-training quantization of float params to :class:`~jaxcompress.quant.QArray` leaves.

    Calibrates every leaf the compressor quantizes (``compressor.init`` on the float params,
    e.g. ``calibration="mse"`` or ``"percentile"``) and exports it with
    :func:`~jaxcompress.quant.quantize`. Without a compressor, ``qat(**qat_kwargs)`` quantizes
    every leaf; pass ``jc.rules([...])`` to choose leaves (biases left float). For activations,
    calibrate ranges on a few batches with ``jc.flax.calibrate_activations`` and run the model
    under ``jc.flax.quantize_activations(ranges=...)`` (linen), or with
    ``jc.flax.calibrate_nnx_activations`` and ``jc.flax.quantize_nnx_activations(model,
    ranges=...)`` (NNX).

    Args:
      params: float params.
      compressor: a Compressor holding ``qat`` (possibly inside ``rules``/``chain``); its
        hyper-parameters say how to quantize. Default ``qat(**qat_kwargs)``.
      **qat_kwargs: arguments of :func:`~jaxcompress.quant.qat` when no compressor is given.

    Returns:
      The params with :class:`~jaxcompress.quant.QArray` leaves for quantized weights.

    Raises:
      ValueError: if both a compressor and ``qat_kwargs`` are given, or as ``qat`` /
        ``quantize`` raise (bad hyper-parameters, non-finite weights, naming the leaf).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> params = {"w": jax.random.normal(jax.random.key(0), (64, 8))}
      >>> qp = jc.quant.ptq(params, bits=4, calibration="mse")
      >>> qp["w"].bits, qp["w"].nbytes
      (4, 256)

    References:
      Nagel et al. 2021, "A White Paper on Neural Network Quantization" (MSE range setting).
    """
    if compressor is not None and qat_kwargs:
        raise ValueError("ptq: pass either a compressor or qat keyword arguments, not both")
    comp = compressor if compressor is not None else qat(**qat_kwargs)
    state = comp.init(params)
    return quantize(params, state, comp)
