"""Sort-free exact top-k masks: the k-th largest key in a few counting passes.

No sort, argsort or top_k touches the data. Scores become ``uint32`` keys with the same order
(:func:`ordered_key`) and the k-th largest key ``t`` is found by a search whose every step is a
single pass over the data: one variadic reduction returning, for a guess ``g``,

* ``count(key >= g)``,
* ``max{key < g}`` and ``min{key >= g}``: the data values on either side of ``g``.

The bracket ``lo <= t <= top`` is *snapped to data values* by those two results, so it shrinks
by at least one distinct value per pass, and a pass whose count lands on ``k`` ends the search.
Guesses come first from a small strided sample of the keys (its order statistics are read off
a pairwise comparison, itself sort-free), then from interpolating the exact counts inside the
bracket, aimed slightly past ``k`` so that the bracket closes from both ends; plain bisection
of the key range is the safeguard when interpolation stalls. Typical inputs need 5-12 passes
whatever their size; the worst case is bounded (16 guided passes, then at most 32 bisection
passes of the 32-bit key range, per phase). Ties at ``t`` are broken by
position (lower flat index first, arrays in order) with a second search of the same kind over
the tied positions, run only when ties straddle ``k``.

Every pass is a reduction (sum / max / min) and the sample is a strided slice, so under
``jax.sharding`` only scalars and the small sample cross devices: no parameter is gathered
onto one device. Keys are recomputed from the scores inside each pass (fused into the
reduction), so no key array is materialized. Many independent selections (one per layer) run
in one loop, vectorized over the selections, which keeps compile time flat in the number of
layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_U32 = jnp.uint32
_MAXU = 0xFFFFFFFF
# Sampled keys per selection: sqrt(N / 16), within [128, 1024]. The pairwise comparison of
# the sample costs SAMPLE**2 (at most N / 16), a larger sample brackets k more tightly.
_SAMPLE_MIN, _SAMPLE_MAX = 128, 1024
_GUIDED = 16  # passes of sample / interpolation guesses before plain bisection only
_STALL = 3  # passes moving the same end of the bracket before a bisection step

KeyFn = Callable[[], jax.Array]
Problem = Sequence[tuple[KeyFn, tuple[int, ...]]]


def ordered_key(scores: jax.Array) -> jax.Array:
    """Maps float scores to ``uint32`` keys with the same order.

    ``-0.0`` maps just below ``+0.0``; NaNs with the sign bit clear sort above ``+inf``, with
    the sign bit set below ``-inf``. Float16 / bfloat16 / float32 are exact (widened to
    float32); float64 is rounded to float32 first.

    Args:
      scores: a floating-point array.

    Returns:
      ``uint32`` keys, same shape: ``a < b`` implies ``key(a) < key(b)``.

    Example:
      >>> import jax.numpy as jnp
      >>> k = ordered_key(jnp.array([-2.0, -0.0, 0.0, 1.5]))
      >>> bool(jnp.all(k[1:] > k[:-1]))
      True

    References:
      The order-preserving float-to-integer map of radix sorts, e.g. Herf 2001, "Radix
      Tricks".
    """
    i = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.int32)
    # Negative floats: flip the magnitude bits so that more negative means smaller.
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)
    return lax.bitcast_convert_type(i, _U32) ^ _U32(0x80000000)


def _comb(a, b):
    return (a[0] + b[0], jnp.maximum(a[1], b[1]), jnp.minimum(a[2], b[2]))


def _positions(shape: tuple[int, ...], offset: int) -> jax.Array:
    """``MAXU - flat_index``: larger for earlier entries, never 0 (sizes < 2**31)."""
    idx = jnp.full(shape, offset, _U32)
    stride = 1
    for a in reversed(range(len(shape))):
        idx = idx + lax.broadcasted_iota(_U32, shape, a) * _U32(stride)
        stride *= shape[a]
    return _U32(_MAXU) - idx


def _comb(a, b):
    return (a[0] + b[0], jnp.maximum(a[1], b[1]), jnp.minimum(a[2], b[2]))


def _pass(keys: Sequence[jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``count(key >= g)``, ``max{key < g}`` (0 if none), ``min{key >= g}`` (MAX if none)."""
    zero, maxu = _U32(0), _U32(_MAXU)
    c, u, v = jnp.int32(0), zero, maxu
    for key in keys:
        ge = key >= g
        ops = (ge.astype(jnp.int32), jnp.where(ge, zero, key), jnp.where(ge, key, maxu))
        # One variadic reduction: a single loop over the data for all three results.
        r = lax.reduce(ops, (jnp.int32(0), zero, maxu), _comb, tuple(range(key.ndim)))
        c, u, v = c + r[0], jnp.maximum(u, r[1]), jnp.minimum(v, r[2])
    return c, u, v


def _sample_strides(shape: tuple[int, ...], want: int) -> tuple[int, ...]:
    """Per-axis strides giving about ``want`` evenly spread entries of an array of ``shape``."""
    size = math.prod(shape)
    strides = [1] * len(shape)
    if size <= want:
        return tuple(strides)
    ratio = size / want
    order = sorted(range(len(shape)), key=lambda a: -shape[a])
    for j, a in enumerate(order):
        s = max(1, min(shape[a], round(ratio ** (1.0 / (len(order) - j)))))
        strides[a] = s
        ratio /= s
    return tuple(strides)


def _sample(problem: Problem) -> jax.Array:
    total = sum(math.prod(s) for _, s in problem)
    size = min(max(round(math.sqrt(total / 16)), _SAMPLE_MIN), _SAMPLE_MAX)
    parts = []
    for fn, shape in problem:
        n = math.prod(shape)
        if n == 0:
            continue
        strides = _sample_strides(shape, max(1, round(size * n / total)))
        key = fn()
        parts.append(key[tuple(slice(None, None, s) for s in strides)].reshape(-1))
    return jnp.concatenate(parts) if parts else jnp.zeros(1, _U32)


# Columns of the search state, one uint32 row per problem. Keeping the whole state in one
# array lets XLA fuse each step's bookkeeping into a single kernel (a loop step is then that
# kernel plus one reduction per array), which keeps both run time and compile time low.
_LO, _TOP, _CLO, _CTOP, _K, _IT, _STALE, _SIDE, _FLAGS, _T, _T2, _PASSES = range(12)
_NCOL = 12
_LO_SNAP, _TOP_SNAP, _PHASE1, _DONE = 1, 2, 4, 8  # _FLAGS bits


def _u32(x) -> jax.Array:
    if isinstance(x, int):
        return _U32(x)
    return jnp.asarray(x).astype(_U32)


def _search(problems: Sequence[Problem], k: jax.Array, active: jax.Array):
    """The k-th largest key of each problem, then the tie cut among keys equal to it.

    Vectorized over problems. Phase 0 finds ``t``, the k-th largest key. If the keys equal to
    ``t`` straddle ``k``, phase 1 (same loop) searches the tied positions ``MAXU - flat_index``
    for the ``need``-th largest, ``t2``. The mask is ``key > t | (key == t & pos >= t2)``
    (``t2 = 0`` when no cut is needed).

    Returns:
      ``(t, t2, passes)``, vectors over problems.
    """
    n_prob = len(problems)
    totals = jnp.array([sum(math.prod(s) for _, s in p) for p in problems], jnp.int32)
    offsets = [[sum(math.prod(s) for _, s in p[:j]) for j in range(len(p))] for p in problems]

    # Sample guesses: order statistics of a small strided sample per problem, read off a
    # pairwise comparison (ge[p, j] = #{i : s[p, i] >= s[p, j]}, exact float32 sums of 0/1
    # done as a matrix product), no sort.
    samples = [_sample(p) for p in problems]
    width = max(x.shape[0] for x in samples)
    sample = jnp.stack([jnp.pad(x, (0, width - x.shape[0])) for x in samples])  # [P, W]
    mf = jnp.array([x.shape[0] for x in samples], jnp.float32)[:, None]
    valid = jnp.arange(width)[None, :] < mf
    ge = jnp.einsum(
        "pi,pij->pj",
        valid.astype(jnp.float32),
        (sample[:, :, None] >= sample[:, None, :]).astype(jnp.float32),
    ).astype(jnp.int32)
    mf, totf = mf[:, 0], totals.astype(jnp.float32)
    r0 = k.astype(jnp.float32) / totf * mf  # sample rank of the k-th largest key

    def sample_at(rank):
        # The rank-th largest sampled key. Past the sample's small end: 0, which the bracket
        # clips to lo + 1 (a pass there snaps lo to the smallest key); past its large end:
        # MAXU, clipped to top (snaps top to the largest key).
        r = jnp.clip(jnp.round(rank), 1.0, mf).astype(jnp.int32)
        at = jnp.max(jnp.where(valid & (ge >= r[:, None]), sample, _U32(0)), axis=1)
        return jnp.where(rank > mf + 0.5, _U32(0), jnp.where(rank < 0.5, _U32(_MAXU), at))

    first_pos = _u32(_MAXU) - _u32(totals - 1)  # smallest tied-position key

    def col(S, c):
        return S[:, c]

    def assemble(cols):
        # One where-chain over the [P, NCOL] array: XLA fuses it into a single kernel (a
        # stack/concatenate of separately computed columns would be one kernel per column).
        out = jnp.zeros((n_prob, _NCOL), _U32)
        for c, x in enumerate(cols):
            out = jnp.where(np.arange(_NCOL)[None, :] == c, x[:, None], out)
        return out

    def guess(S):
        lo, top, clo, ctop, kk = (col(S, c) for c in (_LO, _TOP, _CLO, _CTOP, _K))
        it, stale, side, flags = (col(S, c) for c in (_IT, _STALE, _SIDE, _FLAGS))
        lo_snap, top_snap = (flags & _LO_SNAP) > 0, (flags & _TOP_SNAP) > 0
        span = top - lo  # >= 1 while searching
        kf = kk.astype(jnp.float32) - 0.5
        # Interpolate the exact counts over the key range, aiming past k towards the end
        # that has not moved lately (further each time it stays put).
        clof, ctopf = clo.astype(jnp.float32), ctop.astype(jnp.float32)
        gap = jnp.maximum(clof - ctopf, 1.0)
        push = 0.25 * jnp.sqrt(gap) * (1.0 + stale.astype(jnp.float32))
        target = jnp.clip(jnp.where(side == 1, kf - push, kf + push), ctopf + 0.5, clof - 0.5)
        off = jnp.round((clof - target) / gap * (span.astype(jnp.float32) + 1.0))
        interp = lo + jnp.clip(off, 1.0, 4.0e9).astype(_U32)
        # Phase 0 until both ends are known: first the sample's k-th quantile; then, anchored
        # on the exact count c0 found at the known end, the sample point about (c0 - k) further,
        # pushed past k by the sampling noise of that distance (doubling each pass).
        open_ = ~(lo_snap & top_snap)
        above = jnp.where(lo_snap[:, None], sample >= lo[:, None], sample > top[:, None])
        anchor = jnp.sum(valid & above, axis=1).astype(jnp.float32)  # its sample rank
        c0 = jnp.where(lo_snap, clof, ctopf)
        d = (c0 - kk.astype(jnp.float32)) / totf * mf  # sample ranks from the anchor to k
        beyond = jnp.sqrt(jnp.abs(d) + 1.0) * jnp.exp2(it.astype(jnp.float32) - 1.0)
        rank = jnp.where(it == 0, r0, anchor - d + jnp.where(lo_snap, -beyond, beyond))
        from_sample = sample_at(rank)
        use_sample = ((flags & _PHASE1) == 0) & ((it == 0) | (open_ & (it < 4)))
        bisect = (it >= _GUIDED) | (stale >= _STALL) | (open_ & (it >= 4))
        g = jnp.where(use_sample, from_sample, jnp.where(bisect, lo + span // 2 + 1, interp))
        # top is a data value with k - 1 keys above it: test it directly (ends the search).
        g = jnp.where(top_snap & (ctop + 1 == kk), top, g)
        return jnp.clip(g, lo + 1, top)

    def finished(S):
        flags = col(S, _FLAGS)
        exact = ((flags & _LO_SNAP) > 0) & (col(S, _CLO) == col(S, _K))
        return (col(S, _LO) == col(S, _TOP)) | exact, exact

    def advance(S):
        # A finished phase 0 is done if key >= t keeps exactly k; else the tie search starts.
        flags = col(S, _FLAGS)
        fin, exact = finished(S)
        fin = fin & ((flags & _DONE) == 0)
        phase1 = (flags & _PHASE1) > 0
        fin0, fin1 = fin & ~phase1, fin & phase1
        need = col(S, _K) - col(S, _CTOP)
        ties = col(S, _CLO) - col(S, _CTOP)
        cut = fin0 & ~exact & (need != ties)
        new = {
            _T: jnp.where(fin0, col(S, _LO), col(S, _T)),
            _T2: jnp.where(fin1, col(S, _LO), col(S, _T2)),
            _PASSES: jnp.where(fin0, col(S, _IT), col(S, _PASSES)),
            _FLAGS: jnp.where(
                cut, _LO_SNAP | _TOP_SNAP | _PHASE1, jnp.where(fin & ~cut, flags | _DONE, flags)
            ),
            _K: jnp.where(cut, need, col(S, _K)),
            _LO: jnp.where(cut, first_pos, col(S, _LO)),
            _CLO: jnp.where(cut, ties, col(S, _CLO)),
            _TOP: jnp.where(cut, _u32(_MAXU), col(S, _TOP)),
            _CTOP: jnp.where(cut, 0, col(S, _CTOP)),
            _IT: jnp.where(cut, 1, col(S, _IT)),
            _STALE: jnp.where(cut, 0, col(S, _STALE)),
            _SIDE: jnp.where(cut, 0, col(S, _SIDE)),
        }
        return [_u32(new.get(c, col(S, c))) for c in range(_NCOL)]

    def body(S):
        g, flags = guess(S), col(S, _FLAGS)

        def run(tie_phase):
            res = []
            for i, p in enumerate(problems):
                keys = []
                for (fn, shape), off in zip(p, offsets[i], strict=True):
                    key = fn()
                    if tie_phase:
                        tied = jnp.where(key == S[i, _T], _positions(shape, off), _U32(0))
                        key = jnp.where((flags[i] & _PHASE1) > 0, tied, key)
                    keys.append(key)
                res.append(_pass(keys, g[i]))
            return tuple(jnp.stack(x) for x in zip(*res, strict=True))

        # The tie phase's keys cost extra work per entry: only passes that need them pay it.
        c, u, v = lax.cond(jnp.any((flags & _PHASE1) > 0), lambda: run(True), lambda: run(False))
        c = _u32(c)
        up = c >= col(S, _K)
        side = jnp.where(up, 1, 2)
        done = (flags & _DONE) > 0
        new = {
            _LO: jnp.where(up, v, col(S, _LO)),
            _CLO: jnp.where(up, c, col(S, _CLO)),
            _TOP: jnp.where(up, col(S, _TOP), u),
            _CTOP: jnp.where(up, col(S, _CTOP), c),
            _FLAGS: flags | jnp.where(up, _LO_SNAP, _TOP_SNAP),
            _IT: col(S, _IT) + 1,
            _SIDE: side,
            _STALE: jnp.where(side == col(S, _SIDE), col(S, _STALE) + 1, 0),
        }
        cols = [
            jnp.where(done, col(S, c), _u32(new[c])) if c in new else col(S, c)
            for c in range(_NCOL)
        ]
        return assemble(advance(assemble(cols)))

    init = {
        _LO: 0,  # lower end of the bracket (a data value once _LO_SNAP)
        _TOP: _MAXU,  # upper end (a data value once _TOP_SNAP)
        _CLO: totals,  # count(key >= lo) >= k
        _CTOP: 0,  # count(key > top) < k
        _K: k,  # entries to keep (phase 1: tied entries to keep)
        _FLAGS: jnp.where(active, 0, _DONE),
    }
    S = jnp.stack([jnp.broadcast_to(_u32(init.get(c, 0)), (n_prob,)) for c in range(_NCOL)], axis=1)
    S = lax.while_loop(lambda S: ~jnp.all((col(S, _FLAGS) & _DONE) > 0), body, S)
    return col(S, _T), col(S, _T2), col(S, _PASSES).astype(jnp.int32)


def select_top(
    problems: Sequence[Problem], k: Sequence[jax.typing.ArrayLike] | jax.typing.ArrayLike
) -> list[list[jax.Array]]:
    """Exact top-k masks over ``uint32`` keys, for several independent selections at once.

    The low-level entry point used by every pruning criterion and structure. A *problem* is a
    list of ``(key_fn, shape)`` pairs whose keys compete together (global scope: all layers in
    one problem; layer-wise: one problem per layer). ``key_fn()`` returns the ``uint32`` keys
    (:func:`ordered_key` of the scores); it is called inside every pass, so the keys are fused
    into the reductions and never materialized.

    Args:
      problems: the selections; each a non-empty list of ``(key_fn, shape)``.
      k: entries to keep per problem (ints or traced int32), clipped to ``[0, N_problem]``.

    Returns:
      ``masks[p][i]``: a bool mask of ``shape`` for array ``i`` of problem ``p``; exactly
      ``clip(k[p], 0, N_p)`` True per problem. Ties: lower flat index first, arrays in order.

    Raises:
      ValueError: if a problem has ``2**31 - 1`` entries or more, or no arrays.

    Example:
      >>> import jax.numpy as jnp, jaxcompress as jc
      >>> a, b = jnp.array([3.0, 1.0, 2.0]), jnp.array([5.0, 4.0])
      >>> layerwise = [[(lambda: jc.prune.ordered_key(a), a.shape)],
      ...              [(lambda: jc.prune.ordered_key(b), b.shape)]]
      >>> [m[0].tolist() for m in jc.prune.select_top(layerwise, jnp.array([2, 1]))]
      [[True, False, True], [True, False]]

    References:
      Floyd & Rivest 1975, "Expected time bounds for selection"; Perl, Itai & Avni 1978,
      "Interpolation search -- a log log N search".
    """
    return _select_top(problems, k)[0]


def _select_top(problems, k):
    """:func:`select_top` and the number of search passes per problem (for benchmarks)."""
    problems = [[(fn, tuple(int(d) for d in shape)) for fn, shape in p] for p in problems]
    n_prob = len(problems)
    if n_prob == 0:
        return [], jnp.zeros(0, jnp.int32)
    sizes = [[math.prod(s) for _, s in p] for p in problems]
    for i, p in enumerate(problems):
        if not p:
            raise ValueError(f"top-k selection: problem {i} has no arrays")
        if sum(sizes[i]) >= 2**31 - 1:
            raise ValueError(
                f"top-k selection supports fewer than 2**31 - 1 entries, got {sum(sizes[i])}"
            )
    totals = jnp.array([sum(s) for s in sizes], jnp.int32)
    k = jnp.clip(jnp.broadcast_to(jnp.asarray(k), (n_prob,)).astype(jnp.int32), 0, totals)
    active = (k > 0) & (k < totals)
    t, t2, passes = _search(problems, jnp.clip(k, 1, jnp.maximum(totals - 1, 1)), active)
    out = []
    for i, p in enumerate(problems):
        masks, off = [], 0
        for fn, shape in p:
            key = fn()
            m = (key > t[i]) | ((key == t[i]) & (_positions(shape, off) >= t2[i]))
            masks.append(jnp.where(active[i], m, k[i] >= totals[i]))
            off += math.prod(shape)
        out.append(masks)
    return out, passes


def topk_masks(scores: Sequence[jax.Array], k: jax.typing.ArrayLike) -> list[jax.Array]:
    """Boolean masks keeping exactly the ``k`` largest scores across all arrays together.

    Sort-free (a few counting passes, see the module docstring) and exact; ties are broken by
    position (lower flat index first, arrays taken in order). Under ``jax.sharding`` every pass
    is a reduction, so no array is gathered onto one device.

    Args:
      scores: float arrays (any shapes); their total size must be below ``2**31 - 1``.
      k: number of entries to keep (int, may be traced); clipped to ``[0, total size]``.

    Returns:
      One bool mask per input, same shapes, with exactly ``clip(k, 0, N)`` True in total.

    Raises:
      ValueError: if the total size is ``2**31 - 1`` or more.

    Example:
      >>> import jax.numpy as jnp
      >>> [m.tolist() for m in topk_masks([jnp.array([3.0, 1.0]), jnp.array([1.0, 2.0])], 3)]
      [[True, True], [False, True]]

    References:
      Floyd & Rivest 1975, "Expected time bounds for selection" (sample-guided selection);
      Perl, Itai & Avni 1978, "Interpolation search -- a log log N search".
    """
    scores = [jnp.asarray(s) for s in scores]
    if not scores:
        return []
    problem = [((lambda s=s: ordered_key(s)), s.shape) for s in scores]
    return select_top([problem], k)[0]


def topk_mask(scores: jax.Array, k: jax.typing.ArrayLike) -> jax.Array:
    """Boolean mask keeping exactly the ``k`` largest entries of ``scores`` (sort-free).

    Args:
      scores: a float array.
      k: entries to keep (int or traced), clipped to ``[0, scores.size]``.

    Returns:
      A bool mask of ``scores.shape`` with exactly ``clip(k, 0, size)`` True.

    Example:
      >>> import jax.numpy as jnp
      >>> topk_mask(jnp.array([0.1, 5.0, 0.1, 2.0]), 3).tolist()
      [True, True, False, True]

    References:
      See :func:`topk_masks`.
    """
    return topk_masks([scores], k)[0]
