"""Quantization: fake quantization with STE / LSQ gradients, QAT, PTQ, calibration, export.

Numerics only (jax, optax, numpy); the Flax glue for activation quantization lives in
:mod:`jaxcompress.flax`.
"""

from jaxcompress.quant._act_conv import fake_quant_lhs_conv
from jaxcompress.quant._calibration import kth_largest
from jaxcompress.quant._checkpoint import load, save
from jaxcompress.quant._export import QArray, dequantize, is_qarray, pack, quantize, unpack
from jaxcompress.quant._fake_quant import absmax_scale, fake_quant, fake_quant_symmetric
from jaxcompress.quant._grid import qrange
from jaxcompress.quant._intmm import (
    activation_scale,
    fake_quant_activation,
    fake_quant_lhs_dot,
    int8_dot_general,
    lhs_scale,
    qdot,
    quantize_activation,
)
from jaxcompress.quant._intmm_ste import int8_matmul
from jaxcompress.quant._ptq import ptq
from jaxcompress.quant._qat import QATState, QuantSpec, qat

__all__ = [
    "QATState",
    "QArray",
    "QuantSpec",
    "absmax_scale",
    "activation_scale",
    "dequantize",
    "fake_quant",
    "fake_quant_activation",
    "fake_quant_lhs_conv",
    "fake_quant_lhs_dot",
    "fake_quant_symmetric",
    "int8_dot_general",
    "int8_matmul",
    "is_qarray",
    "kth_largest",
    "lhs_scale",
    "load",
    "pack",
    "ptq",
    "qat",
    "qdot",
    "qrange",
    "quantize",
    "quantize_activation",
    "save",
    "unpack",
]
