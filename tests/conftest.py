"""Strict test settings: 8 CPU devices, rank promotion raises, warnings are errors (pyproject).

Compiled programs go to a persistent JAX cache under ``.pytest_cache/`` (set
``JAX_COMPILATION_CACHE_DIR`` to move it): the two xdist workers and the tests share the many
identical programs (about 10% of the suite's time on 2 cores).
"""

import os
import pathlib

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax-compilation"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


class TraceCounter:
    """Wraps a function and counts how often JAX traces it (to assert no retrace)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.fn(*args, **kwargs)


@pytest.fixture
def trace_counter():
    """``trace_counter(fn)`` returns a counting wrapper; jit it and read ``.count``."""
    return TraceCounter
