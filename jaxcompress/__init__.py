"""jaxcompress: compress JAX/Flax models while they train.

Every method is a :class:`Compressor` (``init`` / ``apply`` / ``update``) over a parameter
pytree; compose them with :func:`chain` and :func:`rules`.
"""

import importlib as _importlib

from jaxcompress import cluster, distill, lowrank, prune, quant
from jaxcompress._src.base import (
    Compressor,
    IdentityState,
    Trainables,
    compressed_view,
    identity,
    state_fields,
    trainable,
    with_trainable,
)
from jaxcompress._src.combine import ChainState, RulesState, chain, rules
from jaxcompress._src.sharding import derive_sharding, state_shardings
from jaxcompress._src.summary import LeafSummary, Summary, finalize, summary

__version__ = "0.1.0"

# Sub-packages that pull in heavier dependencies (flax, orbax, the CLI) load on first use.
_LAZY = ("flax", "io", "workloads", "cli")


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f"jaxcompress.{name}")
    raise AttributeError(f"module 'jaxcompress' has no attribute {name!r}")


__all__ = [
    "ChainState",
    "Compressor",
    "IdentityState",
    "LeafSummary",
    "RulesState",
    "Summary",
    "Trainables",
    "chain",
    "compressed_view",
    "derive_sharding",
    "cli",
    "cluster",
    "distill",
    "finalize",
    "flax",
    "identity",
    "io",
    "lowrank",
    "prune",
    "quant",
    "rules",
    "state_fields",
    "state_shardings",
    "summary",
    "trainable",
    "with_trainable",
    "workloads",
]
