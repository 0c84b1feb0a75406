"""Counts XLA compilations, to assert that a jitted step neither retraces nor recompiles.

A trace counter alone misses recompiles that reuse the trace: e.g. a Python ``int`` step
counter on step 1 and an ``int32`` array on step 2 give one trace but two executables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

_EVENT = "/jax/core/compile/backend_compile_duration"


class Count:
    n: int = 0


@contextlib.contextmanager
def count_compiles() -> Iterator[Count]:
    """``with count_compiles() as c: ...``; ``c.n`` is the number of XLA compilations inside.

    Eager jnp operations compile too (once per new shape), so keep only the jitted calls
    under test inside the block.
    """
    count = Count()

    def listener(event: str, duration_secs: float, **kwargs) -> None:
        del duration_secs, kwargs
        if event == _EVENT:
            count.n += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
