"""Composition of Compressors: ``chain`` (in order) and ``rules`` (route leaves by path)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor, Params


class ChainState(NamedTuple):
    """State of :func:`chain`: one state per compressor, in order."""

    states: tuple[Any, ...]  # the inner states, one per chained compressor


def chain(*compressors: Compressor) -> Compressor:
    """Applies compressors in order: the second sees the first's forward view.

    ``chain(prune, quant)`` quantizes the pruned weights. ``update`` runs every inner
    ``update`` in order on the stored params, so a later method sees params as rewritten by
    an earlier one (e.g. pruned weights already zeroed).

    Args:
      *compressors: the Compressors to chain.

    Returns:
      A Compressor whose state is a :class:`ChainState`.

    Raises:
      TypeError: if an argument is not a Compressor.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=8))
      >>> params = {"w": jnp.arange(1.0, 9.0).reshape(4, 2)}
      >>> view = comp.apply(params, comp.init(params))
      >>> int((view["w"] == 0).sum())
      4
    """
    for i, c in enumerate(compressors):
        if not isinstance(c, Compressor):
            raise TypeError(f"chain: argument {i} is {type(c).__name__}, not a jc.Compressor")

    def init_fn(params):
        states = []
        view = params
        for c in compressors:
            s = c.init(view)
            states.append(s)
            view = c.apply(view, s)
        return ChainState(tuple(states))

    def apply_fn(params, state):
        for c, s in zip(compressors, state.states):
            params = c.apply(params, s)
        return params

    def update_fn(params, state, grads=None):
        new_states = []
        for c, s in zip(compressors, state.states):
            params, s = c.update(params, s, grads)
            new_states.append(s)
        return params, ChainState(tuple(new_states))

    return Compressor(init_fn, apply_fn, update_fn)


class RulesState(NamedTuple):
    """State of :func:`rules`: one entry per rule (``None`` for rules that leave leaves alone)."""

    states: tuple[Any, ...]  # inner states, aligned with the rule list


Rule = tuple[str, "Compressor | None"]


def _owners(rule_list: Sequence[Rule], params: Params) -> list[int]:
    """Index of the first rule whose regex fully matches each leaf's path (-1: unmatched)."""
    paths_lib.check_array_leaves(params)
    leaf_paths = [p for p, _ in paths_lib.leaves_with_paths(params)]
    patterns = [re.compile(rx) for rx, _ in rule_list]
    owners = []
    for path in leaf_paths:
        owner = -1
        for i, pat in enumerate(patterns):
            if pat.fullmatch(path):
                owner = i
                break
        owners.append(owner)
    for i, (rx, _) in enumerate(rule_list):
        if i not in owners:
            any_match = any(patterns[i].fullmatch(p) for p in leaf_paths)
            why = "matches only leaves taken by earlier rules" if any_match else "matches no leaf"
            raise ValueError(
                f"rules: rule {i} {rx!r} {why}; the parameter paths are: " + ", ".join(leaf_paths)
            )
    return owners


def _select(params: Params, owners: list[int], i: int) -> Params:
    leaves, treedef = jax.tree.flatten(params)
    return jax.tree.unflatten(treedef, [x if o == i else None for x, o in zip(leaves, owners)])


def _merge(params: Params, outs: dict[int, Params], owners: list[int]) -> Params:
    leaves, treedef = jax.tree.flatten(params)
    flat_outs = {i: treedef.flatten_up_to(o) for i, o in outs.items()}
    merged = [
        flat_outs[o][j] if o in flat_outs else x for j, (x, o) in enumerate(zip(leaves, owners))
    ]
    return jax.tree.unflatten(treedef, merged)


def rules(rule_list: Sequence[Rule]) -> Compressor:
    """Routes each parameter leaf to a Compressor by its '/'-joined path.

    Paths are ``jax.tree_util.keystr(path, simple=True, separator='/')``, e.g.
    ``params/Dense_0/kernel``. Each leaf goes to the first rule whose regex matches the whole
    path (``re.fullmatch``); a rule with ``None`` leaves its leaves alone; unmatched leaves are
    left alone. Each inner Compressor sees the full tree with ``None`` at the leaves it does not
    own, so its scope (e.g. global pruning) is exactly the leaves routed to it.

    Args:
      rule_list: ``[(regex, compressor_or_None), ...]``.

    Returns:
      A Compressor whose state is a :class:`RulesState`.

    Raises:
      ValueError: at ``init``, if a rule matches no leaf (the message lists the paths that
        exist), or a leaf is not an array; at construction, if a regex does not compile.
      TypeError: if a rule is not a ``(str, Compressor | None)`` pair.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.rules([(".*/kernel", jc.quant.qat(bits=4)), (".*/bias", None)])
      >>> params = {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
      >>> state = comp.init(params)
    """
    rule_list = list(rule_list)
    for i, rule in enumerate(rule_list):
        if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)):
            raise TypeError(
                f"rules: rule {i} must be a (regex, compressor_or_None) pair, got {rule!r}"
            )
        rx, comp = rule
        if comp is not None and not isinstance(comp, Compressor):
            raise TypeError(
                f"rules: rule {i} {rx!r} maps to {type(comp).__name__}, not a jc.Compressor or None"
            )
        try:
            re.compile(rx)
        except re.error as e:
            raise ValueError(f"rules: rule {i} regex {rx!r} does not compile: {e}") from None

    def init_fn(params):
        owners = _owners(rule_list, params)
        states = tuple(
            None if c is None else c.init(_select(params, owners, i))
            for i, (_, c) in enumerate(rule_list)
        )
        return RulesState(states)

    def apply_fn(params, state):
        owners = _owners(rule_list, params)
        outs = {
            i: c.apply(_select(params, owners, i), s)
            for i, ((_, c), s) in enumerate(zip(rule_list, state.states))
            if c is not None
        }
        return _merge(params, outs, owners)

    def update_fn(params, state, grads=None):
        owners = _owners(rule_list, params)
        outs, new_states = {}, []
        for i, ((_, c), s) in enumerate(zip(rule_list, state.states)):
            if c is None:
                new_states.append(None)
                continue
            g = None if grads is None else _select(grads, owners, i)
            outs[i], s = c.update(_select(params, owners, i), s, g)
            new_states.append(s)
        return _merge(params, outs, owners), RulesState(tuple(new_states))

    return Compressor(init_fn, apply_fn, update_fn)
