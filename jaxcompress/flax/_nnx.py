"""Flax NNX adapter: a wrapper module that runs its model on the compressed params.

DESIGN §2: the model is split into ``(graphdef, params, rest)``, the params become a plain
nested dict (the same ``Dense_0/kernel`` paths as a linen params tree, so the same
``jc.rules`` regexes apply to both), the Compressor's forward view replaces them, and
``nnx.merge`` rebuilds the model inside the loss. The rest of the model state (batch
statistics, RNG counters) is shared with the wrapped model, so its updates are kept.

The compressor state lives in NNX variables of the wrapper, one variable per array (NNX and
``nnx.Optimizer`` expect variables to hold arrays, not pytrees), in tree-flatten order, with
the tree structure kept as static metadata:

* :class:`CompressionParam` (an ``nnx.Param`` subclass) holds the leaves of
  ``jc.trainable(state)``: LSQ step sizes, k-means centroids. ``nnx.grad`` differentiates them
  and ``nnx.Optimizer(cmodel, tx, wrt=nnx.Param)`` trains them together with the model params.
* :class:`CompressionState` (a plain ``nnx.Variable``) holds everything else (step counts,
  masks, bits); optimizers leave it alone and :meth:`Compressed.update` advances it.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxcompress._src.base import (
    Compressor,
    Params,
    State,
    Trainables,
    compressed_view,
    trainable,
    with_trainable,
)
from jaxcompress._src.summary import Summary, finalize, summary


class CompressionParam(nnx.Param):
    """A trainable compression variable (a leaf of ``jc.trainable(state)``) of :class:`Compressed`.

    An ``nnx.Param`` subclass: ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` train it
    with the model params. Select it with the filter ``CompressionParam`` (e.g. for a separate
    learning rate through ``optax.multi_transform``), or leave it out with
    ``nnx.All(nnx.Param, nnx.Not(CompressionParam))``.
    """


class CompressionState(nnx.Variable):
    """A leaf of the non-trainable compressor state of :class:`Compressed` (counts, masks, bits).

    Not an ``nnx.Param``, so optimizers ignore it; :meth:`Compressed.update` replaces it. The
    ``trainable`` sub-trees of the state are held by :class:`CompressionParam` instead.
    """


def _strip_trainable(state: State) -> State:
    """``state`` with every ``trainable`` sub-tree replaced by the same tree of ``None``."""
    return with_trainable(state, jax.tree.map(lambda _: None, trainable(state)))


def _to_variables(tree: Any, kind: type[nnx.Variable]) -> tuple[nnx.List, Any]:
    leaves, treedef = jax.tree.flatten(tree)
    return nnx.List([kind(x) for x in leaves]), treedef


def _from_variables(variables: nnx.List, treedef: Any) -> Any:
    return jax.tree.unflatten(treedef, [v.get_value() for v in variables])


def _leaves_checked(tree: Any, treedef: Any, what: str) -> list[Any]:
    leaves, new_def = jax.tree.flatten(tree)
    if new_def != treedef:
        raise ValueError(
            f"Compressed.update: compressor.update changed the structure of the {what} from "
            f"{treedef} to {new_def}; a Compressor's state must keep its structure"
        )
    return leaves


def _check_model(model: Any) -> None:
    if not isinstance(model, nnx.Module):
        raise TypeError(f"Compressed: model must be an nnx.Module, got {type(model).__name__}")


class Compressed(nnx.Module):
    """An NNX module that runs ``model`` on ``compressor``'s forward view of its params.

    A standard NNX train step changes in two lines: wrap the model, and call
    :meth:`update` after the optimizer step (masks, scales, schedules; pruned weights are
    zeroed again there). Build the optimizer on the *wrapper* so the trainable compression
    variables (:class:`CompressionParam`) are trained with the params.

    Paths seen by the compressor are those of ``nnx.to_pure_dict(nnx.state(model,
    nnx.Param))``, e.g. ``Dense_0/kernel`` — the same as a linen ``variables["params"]`` tree,
    so one ``jc.rules`` recipe serves both.

    Attributes:
      model: the wrapped module (its params are the stored float params).
      compressor: the Compressor (static).
      wrt: the NNX filter selecting the variables that are compressed (``nnx.Param``).
      compression: an ``nnx.List`` of :class:`CompressionState`, the leaves of the
        non-trainable compressor state.
      compression_params: an ``nnx.List`` of :class:`CompressionParam`, the leaves of
        ``jc.trainable(state)``.
      compression_def, compression_params_def: the (static) tree structures of those two
        leaf lists; ``jax.tree.unflatten(cmodel.compression_params_def,
        jax.tree.leaves(grads["compression_params"]))`` puts gradients of the trainable
        compression variables back in the shape of ``jc.trainable(state)``.

    Example:
      >>> import jax, jax.numpy as jnp, optax, jaxcompress as jc
      >>> from flax import nnx
      >>> model = jc.workloads.MLPNNX(64, (32, 10), rngs=nnx.Rngs(0))
      >>> comp = jc.rules([(".*/kernel", jc.quant.qat(bits=8)), (".*", None)])
      >>> cmodel = jc.flax.Compressed(model, comp)
      >>> optimizer = nnx.Optimizer(cmodel, optax.adam(1e-3), wrt=nnx.Param)
      >>> @nnx.jit
      ... def train_step(cmodel, optimizer, x, y):
      ...     def loss_fn(cmodel):
      ...         logits = cmodel(x)
      ...         return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      ...     grads = nnx.grad(loss_fn)(cmodel)
      ...     optimizer.update(cmodel, grads)
      ...     cmodel.update(grads)
      >>> train_step(cmodel, optimizer, jnp.ones((4, 64)), jnp.array([0, 1, 2, 3]))
      >>> [int(c) for c in jc.state_fields(cmodel.compression_state, "count")]
      [1]

    The functional form works too: ``graphdef, state = nnx.split((cmodel, optimizer))``,
    then a ``jax.jit`` step that ``nnx.merge``-s, steps and returns ``nnx.state``.
    """

    def __init__(
        self,
        model: nnx.Module,
        compressor: Compressor,
        *,
        compression: State | None = None,
        wrt: Any = nnx.Param,
    ):
        """Wraps ``model`` and initialises the compressor state on its params.

        Args:
          model: an NNX module.
          compressor: the Compressor (``jc.rules``/``jc.chain`` of methods).
          compression: an existing compressor state; ``compressor.init(params)`` if None.
          wrt: NNX filter of the variables to compress (default ``nnx.Param``).

        Raises:
          TypeError: if ``model`` is not an ``nnx.Module`` or ``compressor`` not a
            ``jc.Compressor``.
          ValueError: from ``compressor.init`` (bad leaves, rules matching nothing ...).
        """
        _check_model(model)
        if not isinstance(compressor, Compressor):
            raise TypeError(
                f"Compressed: compressor must be a jc.Compressor, got "
                f"{type(compressor).__name__}; use jc.identity() for no compression"
            )
        self.model = model
        self.compressor = nnx.static(compressor)
        self.wrt = nnx.static(wrt)
        if compression is None:
            compression = compressor.init(self.params)
        self.compression, treedef = _to_variables(_strip_trainable(compression), CompressionState)
        self.compression_def = nnx.static(treedef)
        self.compression_params, treedef = _to_variables(trainable(compression), CompressionParam)
        self.compression_params_def = nnx.static(treedef)

    # -- reading ----------------------------------------------------------------------------

    def _split(self) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
        return nnx.split(self.model, self.wrt, ...)

    @property
    def params(self) -> Params:
        """The model's stored float params as a plain nested dict (what the compressor sees)."""
        return nnx.to_pure_dict(nnx.state(self.model, self.wrt))

    @property
    def compression_state(self) -> State:
        """The full compressor state (trainable values put back in place)."""
        return with_trainable(self._stripped_state(), self._trainable_values())

    def _stripped_state(self) -> State:
        return _from_variables(self.compression, self.compression_def)

    def _trainable_values(self) -> Any:
        return _from_variables(self.compression_params, self.compression_params_def)

    def _merge(self, view: Params) -> nnx.Module:
        graphdef, params, rest = self._split()
        nnx.replace_by_pure_dict(params, view)  # new Param objects; the model's are untouched
        return nnx.merge(graphdef, params, rest)

    def compressed_model(self) -> nnx.Module:
        """The model on the differentiable forward view of its params.

        Gradients flow through it to the stored float params (straight-through where the
        method says so) and to :attr:`compression_params`. The non-param state (batch
        statistics, RNG counters) is shared with :attr:`model`, so updates to it are kept.
        Call it for methods other than ``__call__``: ``cmodel.compressed_model().encode(x)``.
        """
        view = compressed_view(
            self.compressor,
            Trainables(self.params, self._trainable_values()),
            self._stripped_state(),
        )
        return self._merge(view)

    def finalized_model(self) -> nnx.Module:
        """The model on the compressed params for evaluation and export (no gradient tricks)."""
        return self._merge(finalize(self.compressor, self.params, self.compression_state))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the model on the compressed params: ``self.compressed_model()(*args, **kwargs)``."""
        return self.compressed_model()(*args, **kwargs)

    def summary(self) -> Summary:
        """:func:`jaxcompress.summary` of the model params and compressor state."""
        return summary(self.compressor, self.params, self.compression_state)

    # -- the per-step update ----------------------------------------------------------------

    def _model_grads(self, grads: Any) -> Params | None:
        """Gradients w.r.t. the model params as a plain dict, from what the user passes."""
        if grads is None:
            return None
        params_def = jax.tree.structure(self.params)

        def fits(g: Any) -> bool:
            try:
                params_def.flatten_up_to(g)
            except (ValueError, TypeError):
                return False
            return True

        candidates = [grads]
        if isinstance(grads, (nnx.State, dict)) and "model" in grads:
            # ``nnx.grad(loss)(cmodel)``: a State of the wrapper's Params.
            candidates.append(grads["model"])
        for g in candidates:
            if isinstance(g, nnx.State):
                g = nnx.to_pure_dict(g)
            if fits(g):
                return g
        raise ValueError(
            "Compressed.update: grads do not have the structure of the model params "
            f"{params_def}; pass nnx.grad(loss_fn)(cmodel) or a dict shaped like "
            f"cmodel.params, got {jax.tree.structure(grads)}"
        )

    def update(self, grads: Any = None) -> None:
        """Runs ``compressor.update`` once; call it after ``optimizer.update``.

        Advances the step counts, refreshes masks / scales on schedule, and writes the params
        it returns (e.g. pruned weights zeroed) back into :attr:`model`.

        Args:
          grads: ``nnx.grad(loss_fn)(cmodel)`` (a State of the wrapper's params), a State or
            dict of the model params' gradients, or None. Methods that read gradients
            (saliency, movement) need them.

        Raises:
          ValueError: if ``grads`` does not have the structure of the model params.
        """
        g = self._model_grads(grads)
        params, state = self.compressor.update(self.params, self.compression_state, g)
        rest = _leaves_checked(_strip_trainable(state), self.compression_def, "compressor state")
        train = _leaves_checked(
            trainable(state), self.compression_params_def, "trainable compression variables"
        )
        new_params = nnx.state(self.model, self.wrt)
        nnx.replace_by_pure_dict(new_params, params)
        nnx.update(self.model, new_params)
        for v, x in zip(self.compression, rest):
            v.set_value(x)
        for v, x in zip(self.compression_params, train):
            v.set_value(x)
