"""Distillation losses (a loss, not a Compressor): KD, hint and attention transfer.

Pure jax + optax. The teacher never receives gradients. Train-step helpers for Flax (linen
and NNX), with the teacher run inside the same jitted step, live in :mod:`jaxcompress.flax`.
"""

from jaxcompress.distill._attention import attention_map, attention_transfer_loss
from jaxcompress.distill._cache import teacher_logits
from jaxcompress.distill._hint import hint_loss, init_projection, project
from jaxcompress.distill._kd import kd_loss, multi_teacher_kd_loss

__all__ = [
    "attention_map",
    "attention_transfer_loss",
    "hint_loss",
    "init_projection",
    "kd_loss",
    "multi_teacher_kd_loss",
    "project",
    "teacher_logits",
]
