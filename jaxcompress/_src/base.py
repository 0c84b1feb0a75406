"""The Compressor contract and the conventions every compression state follows.

A Compressor is a NamedTuple of three pure functions over a parameter pytree, in the
spirit of ``optax.GradientTransformation``:

* ``init(params) -> state``: masks, scales, codebooks, step count ...
* ``apply(params, state) -> params``: the differentiable forward view (fake-quantized,
  masked, centroid-gathered weights). Same tree structure, shapes and dtypes.
* ``update(params, state, grads=None) -> (params, state)``: once per train step, after the
  optimizer. Advances the step count, refreshes masks / scales on schedule, may rewrite params.

State conventions, shared by every method and relied upon by the core (never per method):

* ``count``: ``int32[]`` number of ``update`` calls so far.
* ``trainable``: a sub-tree of the state that is *optimized together with the params*
  (LSQ step sizes, k-means centroids). :func:`trainable` extracts every such sub-tree of a
  (possibly nested) state, :func:`with_trainable` puts new values back, and
  ``jc.flax.TrainState`` differentiates and optimizes them with the params.
* ``bits``: per-leaf ``int32[]`` bit widths (a tree shaped like the params, ``None`` for leaves
  the method does not own); read by :func:`jaxcompress.summary`.
* ``mask``: per-leaf ``bool`` keep-masks (shaped like the leaf, ``None`` elsewhere); read by
  :func:`jaxcompress.summary` for sparsity.

Per-leaf trees in a state always have the *full* params structure, with ``None`` at the leaves
the method does not own; this is how :func:`jaxcompress.rules` routes leaves without renaming
paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

Params = Any  # a pytree of arrays
State = Any  # a pytree (usually a NamedTuple) of arrays


class InitFn(Protocol):
    def __call__(self, params: Params) -> State: ...


class ApplyFn(Protocol):
    def __call__(self, params: Params, state: State) -> Params: ...


class UpdateFn(Protocol):
    def __call__(
        self, params: Params, state: State, grads: Params | None = None
    ) -> tuple[Params, State]: ...


class Compressor(NamedTuple):
    """A compression method: three pure functions over a parameter pytree.

    Attributes:
      init: ``(params) -> state``.
      apply: ``(params, state) -> params``, the differentiable forward view.
      update: ``(params, state, grads=None) -> (params, state)``, once per step, after the
        optimizer.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=8)
      >>> params = {"w": jnp.ones((4, 3))}
      >>> state = comp.init(params)
      >>> view = comp.apply(params, state)
      >>> params, state = comp.update(params, state)
    """

    init: InitFn
    apply: ApplyFn
    update: UpdateFn


class IdentityState(NamedTuple):
    """State of :func:`identity`: nothing."""


def identity() -> Compressor:
    """The Compressor that leaves every leaf as it is.

    Returns:
      A Compressor whose ``apply`` returns the params unchanged.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.identity()
      >>> comp.apply({"w": jnp.ones(2)}, comp.init({"w": jnp.ones(2)}))["w"].tolist()
      [1.0, 1.0]
    """

    def init_fn(params):
        del params
        return IdentityState()

    def apply_fn(params, state):
        del state
        return params

    def update_fn(params, state, grads=None):
        del grads
        return params, state

    return Compressor(init_fn, apply_fn, update_fn)


# ----------------------------------------------------------------------------------------
# Trainable compression variables.


def _has_field(name: str) -> Callable[[Any], bool]:
    def pred(node: Any) -> bool:
        return isinstance(node, tuple) and name in getattr(node, "_fields", ())

    return pred


_is_trainable_holder = _has_field("trainable")


def trainable(state: State) -> Any:
    """Extracts every ``trainable`` sub-tree of a (possibly nested) compression state.

    The result has the structure of ``state`` with each state NamedTuple that has a
    ``trainable`` field replaced by that field's value, and every other leaf replaced by
    ``None``. It is what ``jc.flax.TrainState`` differentiates and optimizes alongside the
    params.

    Args:
      state: a compression state (any pytree).

    Returns:
      A pytree whose array leaves are exactly the trainable compression variables.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> jax.tree.leaves(jc.trainable(jc.quant.qat(8).init({"w": jnp.ones((2, 2))})))
      []
    """

    def pick(node):
        if _is_trainable_holder(node):
            return node.trainable
        return None

    return jax.tree.map(pick, state, is_leaf=_is_trainable_holder)


def with_trainable(state: State, values: Any) -> State:
    """Returns ``state`` with its ``trainable`` sub-trees replaced by ``values``.

    Inverse of :func:`trainable`: ``with_trainable(s, trainable(s))`` equals ``s``.

    Args:
      state: a compression state.
      values: a tree shaped like ``trainable(state)``.

    Returns:
      The state with new trainable values.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> s = jc.quant.qat(8).init({"w": jnp.ones((2, 2))})
      >>> jc.with_trainable(s, jc.trainable(s)) == s
      True
    """

    def put(node, value):
        if _is_trainable_holder(node):
            return node._replace(trainable=value)
        return node

    return jax.tree.map(put, state, values, is_leaf=_is_trainable_holder)


class Trainables(NamedTuple):
    """What a train step differentiates when compression variables are trained too.

    ``jax.grad(loss)(Trainables(params, jc.trainable(state)))`` gives gradients for the model
    params and for the trainable compression variables (LSQ step sizes, centroids) at once;
    :func:`compressed_view` turns it into the forward params. ``jc.flax.TrainState`` does this
    for you (``state.trainables``).
    """

    params: Params  # the stored float model params
    compression: Any  # ``trainable(state)``: the trainable compression variables


def compressed_view(compressor: Compressor, variables: Any, state: State) -> Params:
    """``compressor.apply`` on params or on a :class:`Trainables`, differentiably.

    Args:
      compressor: the Compressor.
      variables: a params tree, or a :class:`Trainables` whose ``compression`` part replaces the
        state's trainable sub-trees (so gradients reach them).
      state: the compression state.

    Returns:
      The forward params view.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(8)
      >>> params = {"w": jnp.ones((2, 2))}
      >>> state = comp.init(params)
      >>> v = jc.Trainables(params, jc.trainable(state))
      >>> jc.compressed_view(comp, v, state)["w"].shape
      (2, 2)
    """
    if isinstance(variables, Trainables):
        state = with_trainable(state, variables.compression)
        variables = variables.params
    return compressor.apply(variables, state)


def state_fields(state: State, name: str) -> list[Any]:
    """Returns the values of every state NamedTuple field called ``name`` in ``state``.

    Used by the core to read the shared conventions (``bits``, ``mask``) of nested states.

    Args:
      state: a compression state (any pytree).
      name: the field name.

    Returns:
      A list of field values, in tree order.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=4))
      >>> state = comp.init({"w": jnp.arange(1.0, 9.0).reshape(2, 4)})
      >>> [int(m["w"].sum()) for m in jc.state_fields(state, "mask")]
      [4]
    """
    pred = _has_field(name)
    nodes = jax.tree.leaves(state, is_leaf=pred)
    return [getattr(n, name) for n in nodes if pred(n)]


def states_of_type(state: State, cls: type) -> list[Any]:
    """Every node of type ``cls`` in a (possibly nested ``chain`` / ``rules``) state.

    Export functions use it to find their method's states, e.g. every ``QATState``.

    Args:
      state: a compression state (any pytree).
      cls: the state class (a NamedTuple type).

    Returns:
      The nodes that are instances of ``cls``, in tree order.
    """
    pred = lambda n: isinstance(n, cls)  # noqa: E731
    return [n for n in jax.tree.leaves(state, is_leaf=pred) if pred(n)]
