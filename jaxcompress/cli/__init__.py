"""The ``jaxcompress`` command: run recipes, sweep them, inspect and evaluate exports.

The command line is :func:`jaxcompress.cli.main.main`; the pieces it is built from are usable
from Python too: :func:`build_compressor` (a recipe's rule list of method specs to a
Compressor), :func:`load_config` / :func:`override` (recipes and ``--config.`` overrides),
:func:`load_artifact` (an exported model back as params), :mod:`recipes` (the blocks
recipes share, e.g. ``recipes.mnist(...)``).
"""

from jaxcompress.cli import _recipes as recipes
from jaxcompress.cli._artifact import load as load_artifact
from jaxcompress.cli._config import defaults as default_config
from jaxcompress.cli._config import load as load_config
from jaxcompress.cli._config import override
from jaxcompress.cli._errors import UsageError
from jaxcompress.cli._spec import build as build_spec
from jaxcompress.cli._spec import build_compressor

__all__ = [
    "UsageError",
    "build_compressor",
    "build_spec",
    "default_config",
    "load_artifact",
    "load_config",
    "override",
    "recipes",
]
