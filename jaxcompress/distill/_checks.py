"""Input validation shared by the distillation losses: clear errors raised up front."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
    """``x`` as a numpy array when its value is known now, ``None`` inside a trace."""
    if isinstance(x, jax.core.Tracer):
        return None
    if callable(x):
        return None
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        return None


def as_float_array(x: Any, *, fn: str, name: str) -> jax.Array:
    """``jnp.asarray(x)``, raising a TypeError unless it is floating point."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be floating point, got dtype {arr.dtype}")
    return arr


def compute_dtype(*arrays: jax.Array) -> jnp.dtype:
    """float32, or wider when an input is wider (float64 under x64)."""
    return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def check_positive_scalar(value: Any, *, fn: str, name: str) -> jax.Array:
    """A scalar that must be > 0 and finite; checked now when concrete."""
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {arr.shape}")
    c = concrete(value)
    if c is not None and not (np.isfinite(c) and c > 0):
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return arr


def check_unit_interval(value: Any, *, fn: str, name: str) -> jax.Array:
    """A scalar in [0, 1]; checked now when concrete."""
    arr = jnp.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {arr.shape}")
    c = concrete(value)
    if c is not None and not (np.isfinite(c) and 0.0 <= c <= 1.0):
        raise ValueError(f"{fn}: {name} must be in [0, 1], got {value!r}")
    return arr


def split_where(where: Any, shape: tuple[int, ...], *, fn: str) -> tuple[Any, Any]:
    """Splits a ``where`` mask into (per-example mask [...], per-class mask [..., C]).

    ``where`` is boolean and shaped either like the logits without their class axis (which
    examples count) or like the logits (which classes exist).
    """
    if where is None:
        return None, None
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_:
        raise TypeError(f"{fn}: where must be a boolean mask, got dtype {w.dtype}")
    if w.shape == tuple(shape[:-1]):
        return w, None
    if w.shape == tuple(shape):
        return None, w
    raise ValueError(
        f"{fn}: where has shape {w.shape}; it must be {tuple(shape[:-1])} (which examples "
        f"count) or {tuple(shape)} (which classes exist) for logits of shape {tuple(shape)}"
    )


def check_labels(labels: Any, shape: tuple[int, ...], *, fn: str, row_mask: Any) -> jax.Array:
    """Integer labels ``[...]`` in ``[0, C)`` or soft labels ``[..., C]``; checked now."""
    y = jnp.asarray(labels)
    num_classes = shape[-1]
    if jnp.issubdtype(y.dtype, jnp.integer):
        if y.shape != tuple(shape[:-1]):
            raise ValueError(
                f"{fn}: integer labels have shape {y.shape} but logits have shape "
                f"{tuple(shape)}; labels must be shaped like the logits without the class axis "
                f"{tuple(shape[:-1])}"
            )
        c = concrete(labels)
        if c is not None and c.size:
            keep = np.ones(c.shape, bool)
            m = concrete(row_mask) if row_mask is not None else None
            if m is not None:
                keep = m.astype(bool)
            bad = keep & ((c < 0) | (c >= num_classes))
            if bad.any():
                raise ValueError(
                    f"{fn}: labels must be class indices in [0, {num_classes}), got "
                    f"{c[bad].ravel()[:5].tolist()} (exclude padded examples with where)"
                )
        return y
    if jnp.issubdtype(y.dtype, jnp.floating):
        if y.shape != tuple(shape):
            raise ValueError(
                f"{fn}: soft labels have shape {y.shape} but logits have shape {tuple(shape)}; "
                "one-hot or soft labels must be shaped like the logits"
            )
        return y
    raise TypeError(f"{fn}: labels must be integer class ids or float soft labels, got {y.dtype}")
