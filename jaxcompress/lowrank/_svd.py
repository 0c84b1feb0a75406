"""Low-rank training: kernels kept at rank r by truncated-SVD projection, and their export."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src import table
from jaxcompress._src.base import Compressor, Params, State, states_of_type
from jaxcompress._src.export import export_owned
from jaxcompress.lowrank._factorize import (
    Factors,
    check_energy,
    energy_rank,
    max_saving_rank,
    saves_bytes,
)


class LowRankState(NamedTuple):
    """State of :func:`svd`."""

    count: jax.Array  # int32[]: number of update calls
    rank: Any  # per-leaf int32[]: kept rank; min(m, n) where the leaf stays dense
    basis: Any  # per-leaf float32[min(m, n), K]: orthonormal basis of the kept subspace on the
    # smaller side (left singular vectors if m <= n, else right); columns >= rank are zero.
    # K = rank (explicit rank), the largest rank that saves bytes (energy), 0 if kept dense.


def _check_leaf(method: str, path: str, w: Any, rank: int | None) -> None:
    if w.ndim != 2:
        raise ValueError(
            f"{method}: leaf {path!r} has shape {tuple(w.shape)}; only 2-D kernels are "
            "factorized: route biases, norms and other leaves to None in jc.rules"
        )
    if rank is not None and rank > min(w.shape):
        raise ValueError(
            f"{method}: rank={rank} exceeds min(m, n)={min(w.shape)} for leaf {path!r} of "
            f"shape {tuple(w.shape)}"
        )


def _width(shape: tuple[int, ...], rank: int | None) -> int:
    """K: columns of the stored basis (0 when the leaf stays dense whatever the values)."""
    m, n = shape
    if rank is not None:
        return rank if saves_bytes(m, n, rank) else 0
    return max_saving_rank(m, n)


def _project(w: jax.Array, basis: jax.Array) -> jax.Array:
    """``B B^T W`` (basis on the input side) or ``W B B^T`` (output side), in float32."""
    x = w.astype(jnp.float32)
    m, n = w.shape
    if m <= n:
        return basis @ (basis.T @ x)
    return (x @ basis) @ basis.T


def svd(
    rank: int | None = None, *, energy: float | None = None, update_every: int = 1
) -> Compressor:
    """Keeps each 2-D kernel at rank ``r`` during training (truncated-SVD projection).

    The forward view of a kernel ``W [m, n]`` is its projection on the top-``r`` singular
    subspace found at the last refresh (``U_r U_r^T W``, or ``W V_r V_r^T`` when ``m > n``):
    exactly rank ``<= r``. The gradient passes straight through to ``W``. Every
    ``update_every`` updates, a refresh recomputes the SVD of the stored kernel, keeps the
    top ``r`` directions and projects the stored kernel onto them (projected gradient
    descent: with ``update_every=1`` the stored kernel is rank ``r`` after every step).

    A leaf is factorized only where it saves bytes, ``r (m + n) < m n``; otherwise it stays
    dense (its view is the kernel itself) and :func:`report` says so. With ``energy``, the
    rank is recomputed at every refresh as the smallest ``r`` keeping that fraction of
    ``sum(s**2)``; a kernel whose ``r`` would not save bytes stays dense until it would.

    Each refresh runs a full SVD per kernel (float32): ``O(m n min(m, n))``. Raise
    ``update_every`` for large kernels. On a sharded mesh the SVD runs on the whole kernel.

    Args:
      rank: the rank ``r >= 1`` of every kernel routed here.
      energy: instead of ``rank``: the retained fraction of ``sum(s**2)``, in ``(0, 1]``.
      update_every: refresh (SVD + projection of the stored kernel) every this many updates.

    Returns:
      A Compressor with a :class:`LowRankState`.

    Raises:
      ValueError: at construction if neither or both of ``rank`` / ``energy`` are given, or
        one is out of range; at ``init`` if a leaf is not a floating-point 2-D array or
        ``rank > min(m, n)`` (naming the leaf's path).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.lowrank.svd(rank=2)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (16, 8))}
      >>> view = comp.apply(params, comp.init(params))["kernel"]
      >>> int(jnp.linalg.matrix_rank(view))
      2

    References:
      Eckart & Young 1936; Denton et al. 2014, "Exploiting Linear Structure Within
      Convolutional Networks for Efficient Evaluation"; Jain, Tewari & Kar 2014 (projected
      gradient descent on low-rank sets).
    """
    if (rank is None) == (energy is None):
        raise ValueError("lowrank.svd: give exactly one of rank= or energy=")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"lowrank.svd: rank must be an integer >= 1, got {rank!r}")
    if energy is not None:
        try:
            check_energy(energy)
        except ValueError as e:
            raise ValueError(f"lowrank.svd: {e}") from None
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        raise ValueError(f"lowrank.svd: update_every must be an integer >= 1, got {update_every!r}")
    name = f"lowrank.svd(rank={rank})" if rank is not None else f"lowrank.svd(energy={energy})"

    def refresh_leaf(w):
        """(rank, basis) of the current kernel."""
        m, n = w.shape
        d, k = min(m, n), _width(w.shape, rank)
        if k == 0:
            return jnp.asarray(d, jnp.int32), jnp.zeros((d, 0), jnp.float32)
        u, s, vt = jnp.linalg.svd(w.astype(jnp.float32), full_matrices=False)
        side = u[:, :k] if m <= n else vt[:k].T
        # Singular vectors are defined up to sign; fix it (largest entry of a column > 0) so
        # that the state does not depend on the SVD implementation or the sharding.
        pivot = jnp.take_along_axis(side, jnp.argmax(jnp.abs(side), axis=0)[None, :], axis=0)
        side = side * jnp.where(pivot < 0, -1.0, 1.0)
        r = jnp.asarray(rank, jnp.int32) if rank is not None else energy_rank(s, energy)
        basis = side * (jnp.arange(k) < r)[None, :].astype(jnp.float32)
        return jnp.where(r <= k, r, d).astype(jnp.int32), basis

    def view_leaf(w, r, basis):
        k = basis.shape[1]
        if k == 0:
            return w
        return jnp.where(r <= k, _project(w, basis).astype(w.dtype), w)

    def refresh_all(params):
        out = jax.tree.map(lambda w: _Pair(*refresh_leaf(w)), params)
        return jax.tree.map(lambda t: t.first, out), jax.tree.map(lambda t: t.second, out)

    def init_fn(params):
        paths_lib.check_float_leaves(params, method=name)
        for path, w in paths_lib.leaves_with_paths(params):
            _check_leaf(name, path, w, rank)
        r, basis = refresh_all(params)
        return LowRankState(count=jnp.zeros([], jnp.int32), rank=r, basis=basis)

    def apply_fn(params, state):
        def leaf(w, r, basis):
            # Value: exactly the projection; gradient: straight through to w.
            return lax.stop_gradient(view_leaf(w, r, basis)) + (w - lax.stop_gradient(w))

        return jax.tree.map(leaf, params, state.rank, state.basis)

    def update_fn(params, state, grads=None):
        del grads
        count = state.count + 1

        def refresh():
            r, basis = refresh_all(params)
            return jax.tree.map(view_leaf, params, r, basis), r, basis

        params, r, basis = lax.cond(
            count % update_every == 0, refresh, lambda: (params, state.rank, state.basis)
        )
        return params, LowRankState(count=count, rank=r, basis=basis)

    return Compressor(init_fn, apply_fn, update_fn)


class _Pair:
    """Two results of one per-leaf computation, kept together as a single (opaque) leaf."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second


def _owned(treedef: Any, state: State) -> list[tuple[int, np.ndarray] | None]:
    """Per leaf: (rank, basis) of the low-rank state that owns it, or None."""
    owned: list[Any] = [None] * treedef.num_leaves
    for s in states_of_type(state, LowRankState):
        for j, (r, b) in enumerate(
            zip(treedef.flatten_up_to(s.rank), treedef.flatten_up_to(s.basis), strict=True)
        ):
            if r is not None:
                owned[j] = (int(jax.device_get(r)), np.asarray(jax.device_get(b)))
    return owned


def export(compressor: Compressor, params: Params, state: State) -> Any:
    """Each factorized kernel as :class:`Factors` ``(a [m, r], b [r, n])``; the rest dense.

    The factors reproduce the forward view, ``a @ b == view`` (to float rounding): with the
    stored orthonormal basis ``B`` of the smaller side, ``a = B``, ``b = B^T view`` (or
    ``b = B^T``, ``a = view B``). Leaves kept dense, and leaves of other methods, are
    :func:`jaxcompress.finalize`'s view. Run a layer with :func:`dense`.

    Runs on the host (the rank decides the shapes); call it outside ``jax.jit``.

    Args:
      compressor: the Compressor (``svd``, or a chain / rules containing it).
      params: the stored float params.
      state: the compressor state.

    Returns:
      A tree shaped like ``params`` with :class:`Factors` at the factorized kernels.

    Raises:
      ValueError: if a factorized kernel's view is not rank ``r`` (a compressor chained after
        ``svd`` changed it); the message names the path.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.lowrank.svd(rank=4)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (64, 32))}
      >>> f = jc.lowrank.export(comp, params, comp.init(params))["kernel"]
      >>> f.a.shape, f.b.shape
      ((64, 4), (4, 32))

    References:
      Denton et al. 2014, "Exploiting Linear Structure Within Convolutional Networks".
    """
    return export_owned(
        compressor,
        params,
        state,
        owned=lambda treedef, leaves: _owned(treedef, state),
        export_leaf=_export_leaf,
    )


def _export_leaf(path: str, v: jax.Array, own: tuple[int, np.ndarray]) -> jax.Array | Factors:
    """The factors of one owned kernel (or its view when the rank saves nothing)."""
    if own[0] > own[1].shape[1]:
        return v
    r, basis = own[0], jnp.asarray(own[1][:, : own[0]])
    x = v.astype(jnp.float32)
    m, n = v.shape
    if m <= n:
        a, b = basis, basis.T @ x
    else:
        a, b = x @ basis, basis.T
    err = float(jnp.linalg.norm(a @ b - x))
    scale = float(jnp.linalg.norm(x))
    # The view is rank r up to its dtype's rounding (bfloat16: eps = 2**-7).
    tol = max(1e-3, 4 * float(jnp.finfo(v.dtype).eps))
    if err > tol * max(scale, 1e-30) + 1e-6:
        raise ValueError(
            f"lowrank.export: leaf {path!r}: the forward view is not rank {r} (relative "
            f"error {err / max(scale, 1e-30):.2e}); a compressor chained after svd changes it"
        )
    return Factors(a.astype(v.dtype), b.astype(v.dtype))


@dataclasses.dataclass(frozen=True)
class LowRankLeaf:
    """One row of :func:`report`."""

    path: str  # '/'-joined key path
    shape: tuple[int, int]  # (m, n)
    rank: int  # kept rank (min(m, n) if dense)
    max_saving_rank: int  # the largest r with r (m + n) < m n
    factorized: bool  # stored as factors (True) or dense (False)
    dense_bytes: int  # m n x itemsize
    bytes: int  # r (m + n) x itemsize if factorized, else dense_bytes
    note: str  # why a leaf stays dense


@dataclasses.dataclass(frozen=True)
class LowRankReport:
    """Result of :func:`report`; ``str()`` gives a table."""

    leaves: tuple[LowRankLeaf, ...]

    @property
    def dense_bytes(self) -> int:
        return table.column_total(self.leaves, "dense_bytes")

    @property
    def bytes(self) -> int:
        return table.column_total(self.leaves, "bytes")

    def __str__(self) -> str:
        head = ("path", "shape", "rank", "bytes", "")
        rows = [
            (
                r.path,
                f"{r.shape[0]}x{r.shape[1]}",
                str(r.rank),
                f"{r.bytes:,}",
                "factorized" if r.factorized else f"dense: {r.note}",
            )
            for r in self.leaves
        ]
        ratio = self.dense_bytes / max(self.bytes, 1)
        footer = f"{self.dense_bytes:,} B dense -> {self.bytes:,} B ({ratio:.2f}x smaller)"
        return table.format_table(head, rows, left=(0, 4), footer=[footer])


def report(params: Params, state: State) -> LowRankReport:
    """Per low-rank kernel: the kept rank, whether it is factorized, and the bytes.

    A kernel stays dense when its rank does not save bytes (``r (m + n) >= m n``); the note
    says so with the numbers. Leaves no :func:`svd` state owns are not listed.

    Args:
      params: the params (for paths, shapes and dtypes).
      state: a state containing :class:`LowRankState` (possibly nested).

    Returns:
      A :class:`LowRankReport`; ``print()`` it for a table.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.lowrank.svd(rank=8)
      >>> params = {"a": jnp.ones((64, 64)), "b": jnp.ones((8, 8))}
      >>> [(r.path, r.factorized) for r in jc.lowrank.report(params, comp.init(params)).leaves]
      [('a', True), ('b', False)]
    """
    paths_lib.check_array_leaves(params)
    leaves, treedef = jax.tree.flatten(params)
    rows = []
    for (path, w), own in zip(
        paths_lib.leaves_with_paths(params), _owned(treedef, state), strict=True
    ):
        if own is None:
            continue
        m, n = w.shape
        r, k = own[0], own[1].shape[1]
        item = jnp.dtype(w.dtype).itemsize
        factorized = r <= k and k > 0
        limit = max_saving_rank(m, n)
        if factorized:
            note = ""
        elif k == 0 and limit == 0:
            note = f"no rank saves bytes for {m}x{n}"
        else:
            note = f"rank >= m*n/(m+n) = {m * n / (m + n):.1f} saves no bytes"
        rows.append(
            LowRankLeaf(
                path=path,
                shape=(m, n),
                rank=r,
                max_saving_rank=limit,
                factorized=factorized,
                dense_bytes=m * n * item,
                bytes=(r * (m + n) if factorized else m * n) * item,
                note=note,
            )
        )
    return LowRankReport(tuple(rows))
