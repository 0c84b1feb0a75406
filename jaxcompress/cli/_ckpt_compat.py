"""Orbax checkpoints with the ``jc.io`` API, until ``jaxcompress.io`` provides it.

Same functions and signatures as ``jc.io``: :func:`checkpoint_manager`, :func:`save`,
:func:`restore`, :func:`latest_step`, :func:`disk_bytes`. A checkpoint holds
``{params, opt_state, compression, step}`` of a ``jc.flax.TrainState`` (StandardSave); the
static fields (apply_fn, tx, compressor) come back from the template.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp


def checkpoint_manager(directory: str | os.PathLike, *, max_to_keep: int = 3) -> Any:
    """An orbax ``CheckpointManager`` over ``directory`` (created if missing).

    Args:
      directory: the checkpoint folder.
      max_to_keep: how many of the latest checkpoints to keep.

    Returns:
      An ``orbax.checkpoint.CheckpointManager``; close it with ``.close()``.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def _tree(train_state: Any) -> dict[str, Any]:
    return {
        "params": train_state.params,
        "opt_state": train_state.opt_state,
        "compression": train_state.compression,
        "step": jnp.asarray(train_state.step, jnp.int32),
    }


def save(manager: Any, step: int, train_state: Any) -> None:
    """Saves ``{params, opt_state, compression, step}`` of ``train_state`` at ``step``.

    Blocks until the checkpoint is on disk, so an interrupted process leaves it complete.
    """
    manager.save(int(step), args=ocp.args.StandardSave(_tree(train_state)), force=True)
    manager.wait_until_finished()


def restore(manager: Any, template: Any, step: int | None = None) -> Any:
    """Restores a checkpoint into the structure of ``template`` (a TrainState).

    Args:
      manager: the CheckpointManager.
      template: a TrainState of the same model, optimizer and compressor.
      step: the step to restore; the latest if None.

    Returns:
      ``template`` with params, opt_state, compression and step from the checkpoint.

    Raises:
      FileNotFoundError: if there is no checkpoint.
    """
    if step is None:
        step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    target = _tree(template)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    got = manager.restore(int(step), args=ocp.args.StandardRestore(abstract))
    # Rebuild with the template's tree structure (NamedTuple states, None leaves).
    leaves = jax.tree.leaves(got)
    got = jax.tree.unflatten(jax.tree.structure(target), leaves)
    return template.replace(
        params=got["params"],
        opt_state=got["opt_state"],
        compression=got["compression"],
        step=jnp.asarray(got["step"], jnp.int32),
    )


def latest_step(manager: Any) -> int | None:
    """The latest saved step, or None."""
    return manager.latest_step()


def disk_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk under ``path`` (a file or a folder, recursively)."""
    p = pathlib.Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
