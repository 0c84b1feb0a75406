"""A Flax linen ``TrainState`` that carries a Compressor and its state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from jaxcompress._src.base import (
    Compressor,
    Params,
    Trainables,
    compressed_view,
    trainable,
    with_trainable,
)
from jaxcompress._src.summary import finalize


def _has_trainable_leaves(compression: Any) -> bool:
    return bool(jax.tree.leaves(trainable(compression)))


def _step_like(params: Params) -> jax.Array:
    """A zero ``int32[]`` step, replicated on the params' mesh when they are sharded.

    Left on the default device, the step of a sharded state would come back from the first
    jitted step replicated on the mesh, and the second step would compile again for it.
    """
    step = jnp.zeros([], jnp.int32)
    for leaf in jax.tree.leaves(params):
        if isinstance(leaf, jax.core.Tracer):  # created inside jit: leave it to the caller
            return step
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
            return jax.device_put(step, replicated)
    return step


class TrainState(train_state.TrainState):
    """``flax.training.train_state.TrainState`` with compression.

    A standard linen train step changes in at most three lines: create the state with a
    ``compressor``, run the model on ``state.compress(params)``, and differentiate
    ``state.trainables`` (the params together with any trainable compression variables,
    such as LSQ step sizes or k-means centroids). ``apply_gradients`` runs the optimizer on
    both and then ``compressor.update`` (masks, scales, schedules).

    The optimizer state is always built over :class:`jaxcompress.Trainables`
    ``(params, jc.trainable(compression))``; with a compressor that trains nothing, its
    compression part is empty and the optimizer sees exactly the params. To mask weight decay
    away from step sizes, label that tree with ``optax.masked`` / ``optax.multi_transform``.

    Attributes:
      compressor: the Compressor (static).
      compression: its state (masks, scales, step counts, trainable variables).

    Example:
      >>> import jax, jax.numpy as jnp, optax, flax.linen as nn, jaxcompress as jc
      >>> model = nn.Dense(3)
      >>> x, y = jnp.ones((4, 5)), jnp.array([0, 1, 2, 0])
      >>> params = model.init(jax.random.key(0), x)["params"]
      >>> state = jc.flax.TrainState.create(apply_fn=model.apply, params=params,
      ...     tx=optax.adam(1e-3), compressor=jc.quant.qat(bits=8))
      >>> @jax.jit
      ... def train_step(state, x, y):
      ...     def loss_fn(v):
      ...         logits = state.apply_fn({"params": state.compress(v)}, x)
      ...         return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      ...     return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))
      >>> int(train_step(state, x, y).step)
      1
    """

    compressor: Compressor = struct.field(pytree_node=False, default=None)
    compression: Any = struct.field(pytree_node=True, default=None)

    @classmethod
    def create(
        cls,
        *,
        apply_fn: Any,
        params: Params,
        tx: optax.GradientTransformation,
        compressor: Compressor,
        compression: Any = None,
        **kwargs: Any,
    ) -> TrainState:
        """Creates a state with ``step`` an ``int32[]`` zero, the compressor and optimizer state.

        Args:
          apply_fn: usually ``model.apply``.
          params: the float params (``variables["params"]``).
          tx: an optax optimizer.
          compressor: the Compressor (``jc.rules``/``jc.chain`` of methods).
          compression: an existing compressor state; ``compressor.init(params)`` if None.
          **kwargs: further dataclass fields of a subclass.

        Returns:
          A new :class:`TrainState`.

        Raises:
          TypeError: if ``compressor`` is not a ``jc.Compressor``.
        """
        if not isinstance(compressor, Compressor):
            raise TypeError(
                f"TrainState.create: compressor must be a jc.Compressor, got "
                f"{type(compressor).__name__}; use jc.identity() for no compression"
            )
        if compression is None:
            compression = compressor.init(params)
        opt_state = tx.init(Trainables(params, trainable(compression)))
        return cls(
            # An int32 array, not the Python int 0, so the step has one type throughout: a
            # Python int turns into a weakly typed array after the first jitted step (a
            # second jit dispatch-cache entry), and checkpoints of fresh and trained states
            # would hold different types.
            step=_step_like(params),
            apply_fn=apply_fn,
            params=params,
            tx=tx,
            opt_state=opt_state,
            compressor=compressor,
            compression=compression,
            **kwargs,
        )

    @property
    def trainables(self) -> Trainables:
        """What to differentiate: the params and the trainable compression variables."""
        return Trainables(self.params, trainable(self.compression))

    def compress(self, variables: Params | Trainables | None = None) -> Params:
        """The forward view of ``variables`` (params or :attr:`trainables`; default: own).

        Gradients flow through it to the float params (straight-through where the method
        says so) and to the trainable compression variables when ``variables`` is a
        :class:`jaxcompress.Trainables`.
        """
        if variables is None:
            variables = self.trainables
        return compressed_view(self.compressor, variables, self.compression)

    def finalized_params(self) -> Params:
        """The compressed params for evaluation and export (no gradient tricks)."""
        return finalize(self.compressor, self.params, self.compression)

    def apply_gradients(self, *, grads: Params | Trainables, **kwargs: Any) -> TrainState:
        """One optimizer step on params and trainable compression variables, then
        ``compressor.update``.

        Args:
          grads: gradients w.r.t. :attr:`trainables` (a :class:`jaxcompress.Trainables`), or
            w.r.t. the params alone when the compressor trains nothing.
          **kwargs: further fields to ``replace``.

        Returns:
          The updated state, ``step`` incremented.

        Raises:
          ValueError: if plain param gradients are given but the compressor has trainable
            variables (they would silently never train).
        """
        current = self.trainables
        if not isinstance(grads, Trainables):
            if _has_trainable_leaves(self.compression):
                raise ValueError(
                    "apply_gradients: this compressor has trainable variables (e.g. LSQ step "
                    "sizes, centroids) but grads cover only the params; differentiate "
                    "state.trainables instead of state.params"
                )
            grads = Trainables(grads, current.compression)
        updates, opt_state = self.tx.update(grads, self.opt_state, current)
        new = optax.apply_updates(current, updates)
        compression = with_trainable(self.compression, new.compression)
        params, compression = self.compressor.update(new.params, compression, grads.params)
        return self.replace(
            step=self.step + 1,
            params=params,
            opt_state=opt_state,
            compression=compression,
            **kwargs,
        )
