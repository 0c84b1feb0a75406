"""Quantization: fake quantization with straight-through gradients, QAT and export."""

from jaxcompress.quant._fake_quant import absmax_scale, fake_quant_symmetric
from jaxcompress.quant._qat import QATState, qat

__all__ = ["QATState", "absmax_scale", "fake_quant_symmetric", "qat"]
