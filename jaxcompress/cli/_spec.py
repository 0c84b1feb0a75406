"""Method specs: how a recipe names a Compressor, resolved without a registry.

A spec is a Python call expression held in a string, e.g.::

    "quant.qat(bits=8)"
    "chain(prune.magnitude(sparsity), quant.qat(bits=bits, channel_axis=-1))"
    "prune.magnitude(sparsity=0.9, at_step=100)"

It is parsed with :mod:`ast` and never evaluated. The grammar is small:

* a call ``dotted.name(arg, ..., key=value, ...)``. The dotted name is resolved by attribute
  lookup on the ``jaxcompress`` package (``quant.qat``, ``prune.magnitude``, ``chain``,
  ``identity``; a leading ``jc.`` or ``jaxcompress.`` is allowed) or, for schedules, on
  ``optax`` (``optax.cosine_decay_schedule``). Private names (leading ``_``) and anything
  that leaves those two packages are refused, so a spec can only ever call a public factory.
* arguments are literals (numbers, strings, ``True``/``False``/``None``, negative numbers,
  tuples, lists and dicts of them), nested calls, or **names of hyper-parameters**: a bare
  name such as ``bits`` is looked up in the recipe's hyper-parameters (every key of
  ``config.compress`` other than ``rules``), which is how ``--grid compress.bits=2,4,8``
  reaches the spec.

A spec may also be ``None`` (or the string ``"None"``): the rule leaves its leaves alone.
Every new factory added to ``jc.<package>`` is usable at once: there is nothing to register.
"""

from __future__ import annotations

import ast
import importlib
import types
from collections.abc import Iterable, Mapping
from typing import Any

from jaxcompress._src.base import Compressor
from jaxcompress.cli._errors import UsageError

# Packages a spec may call into, by the first component of its dotted name. The jaxcompress
# package is the default namespace (``quant.qat`` means ``jaxcompress.quant.qat``).
_ROOTS = {"jc": "jaxcompress", "jaxcompress": "jaxcompress", "optax": "optax"}
_ALLOWED_PREFIXES = ("jaxcompress", "optax")


class SpecError(UsageError):
    """A method spec that does not parse, names something unknown, or is not allowed."""


def _in_allowed_package(obj: Any) -> bool:
    name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    name = name or ""
    return any(name == p or name.startswith(p + ".") for p in _ALLOWED_PREFIXES)


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def resolve(name: str) -> Any:
    """Resolves a dotted name to a public callable of jaxcompress (or optax).

    Args:
      name: e.g. ``"quant.qat"``, ``"jc.chain"``, ``"optax.linear_schedule"``.

    Returns:
      The callable.

    Raises:
      SpecError: if a component is private, missing, or leads outside jaxcompress/optax.

    Example:
      >>> import jaxcompress as jc
      >>> resolve("prune.magnitude") is jc.prune.magnitude
      True
    """
    parts = name.split(".")
    if parts[0] in _ROOTS:
        root, rest = _ROOTS[parts[0]], parts[1:]
    else:
        root, rest = "jaxcompress", parts
    if not rest:
        raise SpecError(f"{name!r} names a package, not a factory")
    obj: Any = importlib.import_module(root)
    walked = [root]
    for part in rest:
        if part.startswith("_"):
            raise SpecError(f"{name!r}: private name {part!r} is not allowed in a spec")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(a for a in getattr(obj, "__all__", dir(obj)) if not a.startswith("_"))
            has = f"; it has: {', '.join(public)}" if public else ""
            raise SpecError(
                f"{name!r}: {'.'.join(walked)} has no attribute {part!r}{has}"
            ) from None
        walked.append(part)
        if not _in_allowed_package(obj):
            raise SpecError(f"{name!r} leads outside jaxcompress/optax; not allowed in a spec")
    if isinstance(obj, types.ModuleType) or not callable(obj):
        raise SpecError(f"{name!r} is not callable")
    return obj


class _Builder:
    def __init__(self, text: str, hparams: Mapping[str, Any], where: str):
        self.text = text
        self.hparams = hparams
        self.where = where
        self.used: set[str] = set()

    def fail(self, msg: str) -> SpecError:
        return SpecError(f"{self.where}: {msg} in spec {self.text!r}")

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = self.value(node.operand)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.fail("a sign applies to numbers only")
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.fail("'**' is not allowed")
            return {
                self.value(k): self.value(v) for k, v in zip(node.keys, node.values, strict=True)
            }
        if isinstance(node, ast.Name):
            if node.id in self.hparams:
                self.used.add(node.id)
                return _plain(self.hparams[node.id])
            known = ", ".join(sorted(self.hparams)) or "(none defined)"
            raise self.fail(
                f"unknown hyper-parameter {node.id!r} (hyper-parameters are the keys of "
                f"config.compress other than 'rules': {known})"
            )
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(
            f"{type(node).__name__} is not allowed (use literals, hyper-parameter names and "
            "factory calls)"
        )

    def call(self, node: ast.Call) -> Any:
        parts = _dotted(node.func)
        if parts is None:
            raise self.fail("only calls of dotted names like quant.qat(...) are allowed")
        try:
            fn = resolve(".".join(parts))
        except SpecError as e:
            raise self.fail(str(e)) from None
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail("'*' arguments are not allowed")
            args.append(self.value(a))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise self.fail("'**' arguments are not allowed")
            kwargs[kw.arg] = self.value(kw.value)
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError) as e:
            raise self.fail(f"{'.'.join(parts)}(...) failed: {e}") from None


def _plain(v: Any) -> Any:
    """ConfigDict / list values as plain Python (so factories see tuples and dicts)."""
    to_dict = getattr(v, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return v


def build(spec: Any, hparams: Mapping[str, Any] | None = None, *, where: str = "spec") -> Any:
    """Builds the object a spec describes (usually a Compressor, or None).

    Args:
      spec: a spec string, ``None``, or an already built object (returned as is).
      hparams: named hyper-parameters that bare names in the spec refer to.
      where: where the spec comes from, for error messages (e.g. ``compress.rules[0]``).

    Returns:
      What the outermost call returns; ``None`` for a ``None`` spec.

    Raises:
      SpecError: for a spec that does not parse, uses a construct other than literals,
        hyper-parameter names and calls, names an unknown factory or hyper-parameter, or
        whose factory rejects its arguments (the factory's message is included).

    Example:
      >>> import jaxcompress as jc
      >>> comp = build("chain(prune.magnitude(sparsity), quant.qat(bits=bits))",
      ...              {"bits": 4, "sparsity": 0.5})
      >>> isinstance(comp, jc.Compressor)
      True
    """
    return _build(spec, hparams or {}, where)[0]


def names_used(spec: Any, hparams: Mapping[str, Any]) -> set[str]:
    """The hyper-parameter names a spec refers to (builds it to find out)."""
    return _build(spec, hparams, "spec")[1]


def _build(spec: Any, hparams: Mapping[str, Any], where: str) -> tuple[Any, set[str]]:
    if spec is None:
        return None, set()
    if not isinstance(spec, str):
        return spec, set()
    text = spec.strip()
    if text == "None":
        return None, set()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise SpecError(f"{where}: spec {spec!r} does not parse: {e.msg}") from None
    b = _Builder(spec, hparams, where)
    if not isinstance(tree.body, ast.Call):
        raise b.fail("a spec must be a call such as quant.qat(bits=8), or None")
    return b.call(tree.body), b.used


def build_compressor(
    rule_specs: Iterable[Any], hparams: Mapping[str, Any] | None = None
) -> tuple[Compressor, set[str]]:
    """Builds ``jc.rules([(regex, compressor_or_None), ...])`` from ``[(regex, spec), ...]``.

    Args:
      rule_specs: the recipe's ordered rule list.
      hparams: the hyper-parameters bare names in specs refer to.

    Returns:
      ``(compressor, used)``: the Compressor, and the hyper-parameter names the specs use.

    Raises:
      SpecError: for a malformed rule or spec, or a spec that builds something other than a
        Compressor or None.

    Example:
      >>> comp, used = build_compressor([(".*kernel", "quant.qat(bits=bits)"), (".*", None)],
      ...                               {"bits": 8})
      >>> sorted(used)
      ['bits']
    """
    import jaxcompress as jc

    hparams = dict(hparams or {})
    rule_list, used = [], set()
    for i, rule in enumerate(rule_specs):
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise SpecError(f"compress.rules[{i}] must be a (regex, spec) pair, got {rule!r}")
        rx, spec = rule
        comp, names = _build(spec, hparams, f"compress.rules[{i}] {rx!r}")
        if comp is not None and not isinstance(comp, Compressor):
            raise SpecError(
                f"compress.rules[{i}] {rx!r}: spec {spec!r} builds a {type(comp).__name__}, "
                "not a jc.Compressor"
            )
        used |= names
        rule_list.append((rx, comp))
    try:
        return jc.rules(rule_list), used
    except (TypeError, ValueError) as e:
        raise SpecError(f"compress.rules: {e}") from None
