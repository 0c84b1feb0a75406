"""Checkpoints with orbax: train states (params, optimizer state, compressor state, step) and
plain pytrees, restored onto a template that fixes the type, dtypes and shardings.

A checkpoint step directory holds two orbax items: ``state`` (the pytree, written with
``ocp.args.StandardSave``: one OCDBT/Zarr store, compressed) and, when given, ``extra`` (a
JSON document: config, data position, metrics). A ``jc.flax.TrainState`` is saved as the pytree
it is (its data fields ``step``, ``params``, ``opt_state``, ``compression`` and any fields of a
subclass; ``apply_fn``, ``tx`` and ``compressor`` are static and come back from the template).
NNX models save ``nnx.state((cmodel, optimizer))`` and ``nnx.update`` the restored state.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcompress._src import paths as paths_lib

_STATE = "state"
_EXTRA = "extra"


def _check_int(value: Any, name: str, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        what = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {what}, got {value!r}")


def checkpoint_manager(
    directory: str | os.PathLike,
    *,
    max_to_keep: int | None = 3,
    save_interval_steps: int = 1,
    keep_period: int | None = None,
    async_save: bool = False,
    create: bool = True,
) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` for :func:`save` / :func:`restore`.

    Args:
      directory: the root directory; step ``k`` goes to ``directory/k``. Local paths are made
        absolute; ``gs://``-style URLs are passed through.
      max_to_keep: how many most recent steps to keep (``None``: all).
      save_interval_steps: :func:`save` writes only steps that are multiples of this
        (unless ``force=True``).
      keep_period: also keep every step that is a multiple of this (``None``: none).
      async_save: write in a background thread; :func:`save` returns once the arrays are
        copied to host. :func:`restore`, :func:`latest_step` and :func:`disk_bytes` wait for
        pending writes; call ``manager.wait_until_finished()`` before exiting.
      create: create ``directory`` if missing.

    Returns:
      An ``orbax.checkpoint.CheckpointManager`` (use it as a context manager, or ``close()``).

    Raises:
      ValueError: if ``max_to_keep``, ``save_interval_steps`` or ``keep_period`` is not a
        positive integer (``max_to_keep``/``keep_period`` may be None).

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> with jc.io.checkpoint_manager(tempfile.mkdtemp()) as mngr:
      ...     jc.io.save(mngr, 10, {"w": jnp.ones(3)})
      ...     jc.io.latest_step(mngr)
      True
      10
    """
    _check_int(max_to_keep, "checkpoint_manager: max_to_keep", minimum=1, allow_none=True)
    _check_int(save_interval_steps, "checkpoint_manager: save_interval_steps", minimum=1)
    _check_int(keep_period, "checkpoint_manager: keep_period", minimum=1, allow_none=True)
    path = os.fspath(directory)
    if "://" not in path:
        path = os.path.abspath(path)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        keep_period=keep_period,
        enable_async_checkpointing=async_save,
        create=create,
    )
    handlers = {_STATE: ocp.StandardCheckpointHandler(), _EXTRA: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(path, options=options, item_handlers=handlers)


def _check_manager(manager: Any, where: str) -> None:
    if not isinstance(manager, ocp.CheckpointManager):
        raise TypeError(
            f"{where}: manager must be an orbax CheckpointManager (jc.io.checkpoint_manager), "
            f"got {type(manager).__name__}"
        )


def _check_leaves(tree: Any, where: str, *, abstract: bool = False) -> None:
    ok = (jax.Array, np.ndarray, np.generic, int, float, complex, str)
    if abstract:
        ok = (*ok, jax.ShapeDtypeStruct)
    for path, leaf in paths_lib.leaves_with_paths(tree):
        if isinstance(leaf, ok):
            continue
        raise ValueError(
            f"{where}: leaf {path or '<root>'!r} is a {type(leaf).__name__} ({leaf!r}); a "
            "checkpoint holds arrays and Python scalars only (make other objects static "
            "fields, or pass them as `extra`)"
        )


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    """The newest saved step, or ``None`` when the directory holds no checkpoint.

    Example:
      >>> import tempfile, jaxcompress as jc
      >>> jc.io.latest_step(jc.io.checkpoint_manager(tempfile.mkdtemp())) is None
      True
    """
    _check_manager(manager, "latest_step")
    manager.wait_until_finished()
    return manager.latest_step()


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    *,
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> bool:
    """Saves ``state`` (a ``jc.flax.TrainState`` or any pytree of arrays) as step ``step``.

    For a ``jc.flax.TrainState`` this writes its params, optimizer state, compressor state
    (masks, scales, counts, trainable compression variables) and step: everything a resumed
    run needs to continue bit-identically. Shardings are written as they are; each host
    writes its own shards.

    Args:
      manager: from :func:`checkpoint_manager`.
      step: the step number (``>= 0``), usually ``int(state.step)``.
      state: a ``jc.flax.TrainState``, ``nnx.state((cmodel, optimizer))``, or any pytree whose
        leaves are arrays or Python scalars.
      extra: an optional JSON-serializable dict stored next to the state (run config, data
        position, metrics); read it back with :func:`restore_extra`.
      force: save even if ``step`` is not a multiple of ``save_interval_steps``.

    Returns:
      True if the checkpoint was written (False when ``save_interval_steps`` skipped it).

    Raises:
      ValueError: if ``step`` is negative or already saved, or a leaf is not an array /
        scalar (naming its path).
      TypeError: if ``extra`` is not a JSON-serializable dict.

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> mngr = jc.io.checkpoint_manager(tempfile.mkdtemp())
      >>> jc.io.save(mngr, 0, {"w": jnp.ones(3)}, extra={"lr": 0.1})
      True
    """
    _check_manager(manager, "save")
    _check_int(step, "save: step", minimum=0)
    step = int(step)
    _check_leaves(state, "save")
    if extra is not None:
        if not isinstance(extra, dict):
            raise TypeError(f"save: extra must be a dict, got {type(extra).__name__}")
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise TypeError(f"save: extra must be JSON-serializable: {e}") from None
    manager.wait_until_finished()
    if step in manager.all_steps():
        raise ValueError(
            f"save: step {step} is already saved in {manager.directory}; steps must be new "
            "(delete it with manager.delete(step) to overwrite)"
        )
    items = {_STATE: ocp.args.StandardSave(state)}
    if extra is not None:
        items[_EXTRA] = ocp.args.JsonSave(extra)
    return bool(manager.save(step, args=ocp.args.Composite(**items), force=force))


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _uncommitted(x: Any) -> bool:
    """Template leaves restored to the default device, uncommitted (as ``jnp.asarray`` makes).

    A fresh ``jnp`` array is *uncommitted*: jit may move it next to sharded arguments. Orbax
    returns committed arrays; a committed single-device step counter next to mesh-sharded
    params would make the next jitted step fail (incompatible devices), and a committed
    array where the template had an uncommitted one costs a recompile. So such leaves are
    read to host and placed with ``jnp.asarray`` (the same single transfer orbax makes).
    """
    if isinstance(x, jax.Array):
        return not x.committed and not _is_key(x)
    return isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None and not _is_key(x)


def _abstract_leaf(x: Any) -> Any:
    if _uncommitted(x):
        # A zero-strided host view: shape and dtype for orbax, no memory.
        return np.broadcast_to(np.zeros((), x.dtype), x.shape)
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x  # ShapeDtypeStruct (typed keys without a sharding get orbax's default), numpy
    # arrays, Python scalars


def _place_like(path: str, template_leaf: Any, restored: Any) -> Any:
    shape = getattr(template_leaf, "shape", None)
    if shape is not None and tuple(np.shape(restored)) != tuple(shape):
        raise ValueError(
            f"restore: leaf {path!r} is saved with shape {tuple(np.shape(restored))}, but the "
            f"template has shape {tuple(shape)}"
        )
    if _uncommitted(template_leaf):
        return jnp.asarray(restored)
    return restored


def _resolve_step(manager: ocp.CheckpointManager, step: int | None, where: str) -> int:
    manager.wait_until_finished()
    steps = list(manager.all_steps())
    if step is None:
        if not steps:
            raise FileNotFoundError(f"{where}: no checkpoint in {manager.directory}")
        return max(steps)
    _check_int(step, f"{where}: step", minimum=0)
    if int(step) not in steps:
        raise FileNotFoundError(
            f"{where}: no step {step} in {manager.directory}; saved steps: {sorted(steps)}"
        )
    return int(step)


def restore(manager: ocp.CheckpointManager, template: Any, step: int | None = None) -> Any:
    """Restores step ``step`` (the latest when None) onto ``template``.

    The result has the template's type and tree structure (a ``jc.flax.TrainState`` comes
    back as one, with the template's ``apply_fn``, ``tx`` and ``compressor``), and each array
    gets the template leaf's dtype and sharding: restoring onto a template sharded over a
    device mesh reads each shard where it belongs. Leaves the template leaves uncommitted (a
    fresh ``jnp`` array, or a ``jax.ShapeDtypeStruct`` without a sharding) come back
    uncommitted on the default device, so a resumed jitted step neither recompiles nor meets
    incompatible devices. numpy leaves come back as numpy, Python scalars as Python scalars.
    The template may be concrete (e.g. a fresh ``TrainState.create``) or abstract
    (``jax.eval_shape`` of it, or ``jax.ShapeDtypeStruct`` leaves).

    Args:
      manager: from :func:`checkpoint_manager`.
      template: a pytree like the saved one.
      step: the step to restore; the latest when None.

    Returns:
      The restored pytree, of the template's type.

    Raises:
      FileNotFoundError: if there is no checkpoint, or no checkpoint at ``step`` (the
        message lists the saved steps).
      ValueError: if the template's tree structure or shapes differ from the saved ones
        (orbax names the differing paths).

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> mngr = jc.io.checkpoint_manager(tempfile.mkdtemp())
      >>> _ = jc.io.save(mngr, 3, {"w": jnp.arange(3.0)})
      >>> jc.io.restore(mngr, {"w": jnp.zeros(3)})["w"].tolist()
      [0.0, 1.0, 2.0]
    """
    _check_manager(manager, "restore")
    step = _resolve_step(manager, step, "restore")
    _check_leaves(template, "restore", abstract=True)
    abstract = jax.tree.map(_abstract_leaf, template)
    restored = manager.restore(
        step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)})
    )[_STATE]
    return paths_lib.map_with_path(_place_like, template, restored)


def restore_extra(manager: ocp.CheckpointManager, step: int | None = None) -> dict | None:
    """The ``extra`` dict saved with step ``step`` (latest when None), or None if none was.

    Raises:
      FileNotFoundError: if there is no checkpoint at ``step``.

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> mngr = jc.io.checkpoint_manager(tempfile.mkdtemp())
      >>> _ = jc.io.save(mngr, 0, {"w": jnp.ones(1)}, extra={"epoch": 2})
      >>> jc.io.restore_extra(mngr)
      {'epoch': 2}
    """
    _check_manager(manager, "restore_extra")
    step = _resolve_step(manager, step, "restore_extra")
    if not (step_directory(manager, step) / _EXTRA).exists():
        return None
    restored = manager.restore(step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))
    return restored[_EXTRA]


def step_directory(manager: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """The directory of saved step ``step`` (e.g. for :func:`disk_bytes` or copying).

    Raises:
      FileNotFoundError: if the step is not saved.

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> mngr = jc.io.checkpoint_manager(tempfile.mkdtemp())
      >>> _ = jc.io.save(mngr, 5, {"w": jnp.ones(2)})
      >>> jc.io.step_directory(mngr, 5).name
      '5'
    """
    _check_manager(manager, "step_directory")
    step = _resolve_step(manager, step, "step_directory")
    path = ocp.step.find_step_path(manager.directory, ocp.step.standard_name_format(), step=step)
    return pathlib.Path(os.fspath(path))


def disk_bytes(path: str | os.PathLike | ocp.CheckpointManager, step: int | None = None) -> int:
    """Bytes on disk of a checkpoint: the sum of the sizes of the files under ``path``.

    Orbax writes arrays to a compressed store, so this is usually below
    :func:`logical_bytes` (masks of zeros and pruned weights compress well).

    Args:
      path: a step directory (``directory/k``), a checkpoint root directory (all steps), or a
        ``CheckpointManager``.
      step: with a manager, the step to measure (the latest when None).

    Returns:
      The total size in bytes of the regular files under the directory.

    Raises:
      FileNotFoundError: if the path does not exist (or the manager holds no such step).
      ValueError: if ``step`` is given with a path rather than a manager.

    Example:
      >>> import tempfile, jax.numpy as jnp, jaxcompress as jc
      >>> mngr = jc.io.checkpoint_manager(tempfile.mkdtemp())
      >>> _ = jc.io.save(mngr, 0, {"w": jnp.zeros((256, 256))})
      >>> jc.io.disk_bytes(mngr) < jc.io.logical_bytes({"w": jnp.zeros((256, 256))})
      True
    """
    if isinstance(path, ocp.CheckpointManager):
        path = step_directory(path, _resolve_step(path, step, "disk_bytes"))
    elif step is not None:
        raise ValueError("disk_bytes: step is only meaningful with a CheckpointManager")
    root = pathlib.Path(os.fspath(path))
    if not root.exists():
        raise FileNotFoundError(f"disk_bytes: {root} does not exist")
    if root.is_file():
        return root.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.stat(p).st_size
    return total


def logical_bytes(tree: Any) -> int:
    """Bytes of the arrays in ``tree`` as held in memory (what a checkpoint of it stores).

    Python scalars count 8 bytes; typed PRNG keys count their key data.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> jc.io.logical_bytes({"w": jnp.zeros((4, 4)), "m": jnp.ones(8, bool)})
      72
    """
    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        elif isinstance(leaf, (int, float, complex)):
            total += 8
    return total
