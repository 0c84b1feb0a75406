"""Precomputed teacher logits: run a frozen teacher over a data set once, cache the result."""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcompress._src import paths as paths_lib

_FORMAT = "jaxcompress.teacher_logits.v1"


def _fingerprint(variables: Any, x: np.ndarray, batch_size: int, dtype: np.dtype) -> str:
    h = hashlib.sha256(_FORMAT.encode())
    for path, leaf in paths_lib.leaves_with_paths(variables):
        a = np.asarray(leaf)
        h.update(f"{path}:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"x:{x.dtype}:{x.shape};batch:{batch_size};out:{dtype};".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def teacher_logits(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    x: np.ndarray | jax.Array,
    *,
    batch_size: int = 1024,
    cache: str | os.PathLike[str] | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Runs a frozen teacher over a whole data set in batches; optionally caches the logits.

    Distilling from cached logits removes the teacher's forward pass from every train step
    (it is then only as costly as a plain student step). It is exact when the student sees
    the same inputs the teacher saw, i.e. without data augmentation; with augmentation run
    the teacher inside the step (``jc.flax.distiller``) instead.

    The teacher runs jitted on fixed-size batches (the last one padded), so it compiles once.
    With ``cache``, the logits are stored in an ``.npz`` file together with a SHA-256
    fingerprint of the teacher variables, the inputs, ``batch_size`` and ``dtype``; a later
    call with the same fingerprint loads the file instead of running the teacher, and a call
    with different teacher weights or data recomputes and overwrites it (the teacher's code
    is not part of the fingerprint: delete the file after changing the architecture).

    Args:
      apply_fn: ``apply_fn(variables, x_batch) -> logits``, e.g. a linen ``model.apply`` (use
        ``functools.partial`` for keyword arguments such as ``train=False``).
      variables: the teacher variables, e.g. ``{"params": params}``.
      x: inputs ``[n, ...]``.
      batch_size: examples per teacher call.
      cache: optional ``.npz`` path for the cache.
      dtype: dtype of the returned logits (``np.float16`` halves the memory of a large cache).

    Returns:
      A numpy array ``[n, ...]`` of teacher logits, row ``i`` for ``x[i]``.

    Raises:
      ValueError: if ``batch_size`` is not a positive integer or ``x`` is empty.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np, jaxcompress as jc
      >>> model = jc.workloads.MLP((16, 10))
      >>> x = np.ones((10, 64), np.float32)
      >>> variables = model.init(jax.random.key(0), x[:1])
      >>> jc.distill.teacher_logits(model.apply, variables, x, batch_size=4).shape
      (10, 10)

    References:
      Shen & Xing 2022, "A Fast Knowledge Distillation Framework for Visual Recognition"
      (precomputed teacher predictions), https://arxiv.org/abs/2112.01528
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"teacher_logits: batch_size must be a positive integer, got {batch_size!r}"
        )
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        raise ValueError(f"teacher_logits: x must hold at least one example, got shape {x.shape}")
    dtype = np.dtype(dtype)
    path = None
    fingerprint = None
    if cache is not None:
        path = pathlib.Path(cache)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        fingerprint = _fingerprint(variables, x, batch_size, dtype)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    if str(f["fingerprint"]) == fingerprint and f["logits"].shape[0] == n:
                        return f["logits"]
            except (OSError, KeyError, ValueError):
                pass  # unreadable or foreign file: recompute and overwrite
    forward = jax.jit(lambda v, xb: jax.lax.stop_gradient(apply_fn(v, xb)))
    bs = min(batch_size, n)
    chunks = []
    for start in range(0, n, bs):
        xb = x[start : start + bs]
        m = xb.shape[0]
        if m < bs:  # pad the last batch so the forward compiles once
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - m, axis=0)], axis=0)
        out = forward(variables, jnp.asarray(xb))
        chunks.append(np.asarray(out[:m]).astype(dtype))
    logits = np.concatenate(chunks, axis=0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, logits=logits, fingerprint=np.asarray(fingerprint))
        os.replace(tmp, path)
    return logits
