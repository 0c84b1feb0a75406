"""Quantization-aware training: fake-quantized weights with straight-through / LSQ gradients.

Two ways to hold the quantization parameters:

* *Live* min-max scales (the default for symmetric integer grids with ``calibration="minmax"``
  refreshed every step): ``apply`` computes ``max|w| / qmax`` per channel / group from the
  weights it is given, in the forward (as Qwix and AQT do); the state holds no scale. Every
  weight then lies inside its range, so the clipped straight-through estimator is the
  identity and no mask is computed. Export reads the same scales back from the weights (see
  ``_fake_quant.symmetric_scale``: exact from the fake-quantized view too).
* *Stored* parameters (percentile, MSE, EMA, ``calibrate_every > 1``, asymmetric, binary,
  ternary, bit-width schedules, or ``live_scale=False``): the scale, zero point and ternary
  threshold live in the state and ``update`` refreshes them from the params after the
  optimizer step; ``apply`` is a pure elementwise quantize-dequantize.

Either way ``apply``, :func:`jaxcompress.quant.quantize` (export) and the integer matmul use
the same numbers: a model run on the exported integers gives the training forward exactly.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcompress._src import paths as paths_lib
from jaxcompress._src.base import Compressor
from jaxcompress.quant import _calibration, _fake_quant, _grid

_LSQ_EPS = 1e-8  # smallest step size the forward uses (an optimizer may push a step size <= 0)


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """The static description of a :func:`qat` grid, carried in its state (no arrays).

    Registered as a static pytree node: it travels through ``jit`` in the tree structure, and
    lets :func:`jaxcompress.quant.quantize` export any (nested) QAT state without the
    Compressor.
    """

    kind: str  # "grid" (integer levels), "sign" (1-bit symmetric / binary), "ternary"
    symmetric: bool  # no zero point
    narrow_range: bool  # symmetric grid without -2**(b-1)
    granularity: str  # "tensor", "channel" or "group"
    channel_axis: int | tuple[int, ...] | None  # axes with one scale per index
    group_size: int | None  # entries per group along contraction_axis ("group" only)
    contraction_axis: int  # axis groups run along
    ste: str  # "clipped" or "identity"
    learn_scale: bool  # LSQ: the step size is in the state's ``trainable`` field
    bits: int | None  # static bit width (storage bits); None when bits follow a schedule
    live: bool = False  # min-max scales computed in ``apply`` from the weights (none stored)

    @property
    def scheduled(self) -> bool:
        return self.bits is None

    def layout(self, shape: Sequence[int], path: str = "x") -> _grid.Layout:
        return _grid.layout(
            shape,
            granularity=self.granularity,
            channel_axis=self.channel_axis,
            group_size=self.group_size,
            contraction_axis=self.contraction_axis,
            path=path,
        )

    def bounds(self, bits: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
        """``(qmin, qmax)`` as float32 scalars for a (possibly traced) bit width."""
        if self.kind == "sign":
            return jnp.float32(-1.0), jnp.float32(1.0)
        if self.kind == "ternary":
            return jnp.float32(-1.0), jnp.float32(1.0)
        if self.scheduled:
            return _grid.qrange_traced(
                bits, symmetric=self.symmetric, narrow_range=self.narrow_range
            )
        lo, hi = _grid.qrange(self.bits, symmetric=self.symmetric, narrow_range=self.narrow_range)
        return jnp.float32(lo), jnp.float32(hi)


jax.tree_util.register_static(QuantSpec)


class QATState(NamedTuple):
    """State of :func:`qat`. Per-leaf trees have the params structure, ``None`` where not owned.

    Scale-shaped arrays have the shape of the leaf's grouped view with size-1 reduced axes:
    per tensor ``(1, 1)`` for a kernel, per channel ``(1, out)``, per group ``(in // g, 1, out)``.
    """

    count: jax.Array  # int32[]: number of update calls
    bits: Any  # per-leaf int32[] bit width (storage bits: binary 1, ternary 2)
    scale: Any  # per-leaf float32[scale shape] step size; None with learn_scale or live scales
    zero_point: Any  # per-leaf float32[scale shape] integer zero point; None when symmetric
    threshold: Any  # per-leaf float32[scale shape] ternary threshold; None unless ternary
    range_min: Any  # per-leaf float32[scale shape] EMA of the range minimum; None unless asym. EMA
    range_max: Any  # per-leaf float32[scale shape] EMA of max|w| (sym.) or max(w); None unless EMA
    trainable: Any  # learn_scale: per-leaf float32[scale shape] LSQ step sizes; else None
    spec: QuantSpec  # static grid description (no arrays)


def forward_scale(state: QATState) -> Any:
    """The per-leaf scale tree the forward stores (LSQ step sizes; None with live scales)."""
    return state.trainable if state.spec.learn_scale else state.scale


def live_scale_of(spec: QuantSpec, xg: jax.Array, lay: _grid.Layout) -> jax.Array:
    """A live spec's scale of one leaf's grouped float32 view (``apply`` and export share it)."""
    _, qmax = _grid.qrange(spec.bits, symmetric=True, narrow_range=spec.narrow_range)
    absmax = jnp.max(jnp.abs(lax.stop_gradient(xg)), axis=lay.reduce_axes, keepdims=True)
    return _fake_quant.symmetric_scale(absmax, qmax)


_LIVE_SCALES: contextvars.ContextVar[dict[str, jax.Array] | None] = contextvars.ContextVar(
    "jaxcompress_live_scales", default=None
)


@contextlib.contextmanager
def recording_live_scales():
    """Collects ``{leaf path: scale}`` of the live-scale ``apply`` calls run inside.

    Export runs the compressor's forward inside it, to read the scales a live ``qat`` computed
    from *its* input (which a chain may have rewritten before it) instead of reconstructing
    them from the output. When two live ``qat`` own a leaf the later call wins, as in export.
    """
    rec: dict[str, jax.Array] = {}
    token = _LIVE_SCALES.set(rec)
    try:
        yield rec
    finally:
        _LIVE_SCALES.reset(token)


def _check_positive_int(value: Any, name: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"qat: {name} must be an integer >= {minimum}, got {value!r}")


def _schedule_bits(schedule: Callable[[Any], Any], count: jax.Array) -> jax.Array:
    b = jnp.round(jnp.asarray(schedule(count), jnp.float32))
    return jnp.clip(b, 2, 8).astype(jnp.int32)


def qat(
    bits: int | str | Callable[[Any], Any] = 8,
    *,
    symmetric: bool = True,
    granularity: str | None = None,
    channel_axis: int | Sequence[int] | None = -1,
    group_size: int | None = None,
    contraction_axis: int = -2,
    calibration: str = "minmax",
    percentile: float = 99.9,
    mse_grid: int = 32,
    ema_decay: float = 0.99,
    calibrate_every: int = 1,
    learn_scale: bool = False,
    ste: str = "clipped",
    narrow_range: bool | None = None,
    live_scale: bool | None = None,
) -> Compressor:
    """Quantization-aware training: fake-quantized weights with straight-through gradients.

    ``apply`` returns ``(clip(round(w / s) + z, qmin, qmax) - z) * s`` per leaf, computed in
    float32 and cast back to the leaf dtype, with ``s`` (and ``z``) read from the state.
    ``update`` (after the optimizer step) refreshes them from the new params every
    ``calibrate_every`` steps, so the training forward, :func:`~jaxcompress.quant.quantize`
    and the integer matmul all use the same numbers.

    Live scales (default where they apply: symmetric integer grid, static bits, min-max
    calibration every step, no LSQ): ``apply`` computes ``s = max|w| / qmax`` per channel /
    group from the weights it receives, in the forward, as Qwix and AQT do, and the state
    holds no scale (``state.scale`` is None). This is the same quantization as refreshing a
    stored scale after every step, without a second pass over the new params in ``update``;
    and since every weight then lies inside its range, the clipped estimator is the identity
    (no mask is computed). :func:`~jaxcompress.quant.quantize` takes the scales from the
    forward when given the compressor, else recomputes them from the weights it is given
    (exactly, from the stored params or a float32 forward view). ``live_scale=False`` keeps
    stored, ``update``-refreshed scales.

    Granularity (``granularity=None`` infers it: ``"group"`` if ``group_size`` is set,
    ``"tensor"`` if ``channel_axis`` is None, else ``"channel"``):

    * ``"tensor"``: one scale per leaf.
    * ``"channel"``: one scale per index of ``channel_axis`` (int or tuple; ``-1`` is the
      output channel of a Flax kernel).
    * ``"group"``: one scale per ``group_size`` consecutive entries along
      ``contraction_axis`` (``-2``: the input axis of ``Dense`` ``[in, out]`` and ``Conv``
      ``[..., in, out]`` kernels), per index of ``channel_axis``. A size that does not divide
      the axis is an error at ``init``, naming the leaf.

    Leaves of rank < 2 (biases, norms) get one scale; route them to ``None`` in
    :func:`jaxcompress.rules` to keep them float.

    Calibration (integer grids; ``binary``/``ternary`` use their closed forms):

    * ``"minmax"``: ``max|w|`` (symmetric) or ``[min(w, 0), max(w, 0)]``.
    * ``"percentile"``: the ``percentile``-th percentile of ``|w|`` (or both tails), found by
      a sort-free bisection.
    * ``"mse"``: the clipping of the min-max range (``mse_grid`` candidates) minimising the
      squared quantization error, per channel / group.
    * ``"ema"``: an exponential moving average (``ema_decay``) of the min-max range, kept in
      the state (``range_min``/``range_max``), updated at each calibration step.

    LSQ (``learn_scale=True``, Esser et al. 2019): the step sizes are in the state's
    ``trainable`` field (one per channel / group / tensor, per the granularity), initialised
    to ``2 mean|w| / sqrt(Qp)`` (asymmetric: the min-max scale, with the min-max zero point
    held fixed), and trained by the optimizer with the params (``jc.flax.TrainState`` does it;
    by hand: differentiate ``jc.Trainables(params, jc.trainable(state))``). Their gradient is
    the paper's, times ``g = 1 / sqrt(N * Qp)`` with ``N`` the entries sharing a step size.
    LSQ uses the paper's full signed grid (``narrow_range=False``: 2 bits are ``{-2..1}``)
    unless ``narrow_range`` says otherwise.

    Bit-width schedules: pass an optax schedule as ``bits`` (e.g.
    ``optax.linear_schedule(8, 4, 1000)``); its value at each step is rounded and clipped to
    2..8. A change of bit width recalibrates (LSQ: rescales the step size to keep its range).

    Non-finite weights: ``init`` raises a ValueError naming the leaf when the params are
    concrete. Inside a jitted step (where nothing can be raised), a channel / group holding a
    non-finite weight falls back to a finite scale (1; EMA: its previous range), the other
    channels are unaffected and no NaN enters the state; a NaN entry stays NaN in the view,
    so the loss shows the divergence instead of hiding it (an infinite one is clipped to the
    end of the grid).

    Args:
      bits: 1..8, ``"binary"`` (``sign(w) * s``, ``s = mean|w|``, XNOR-Net), ``"ternary"``
        (``{-s, 0, s}``, threshold ``0.7 mean|w|``, TWN) or an optax schedule of the bit width.
        1 bit symmetric is the sign grid with a calibrated (or learned) scale.
      symmetric: symmetric grid, or asymmetric with an integer zero point.
      granularity: ``"tensor"``, ``"channel"``, ``"group"`` or None (inferred).
      channel_axis: the axis (or axes) with one scale per index; None for none.
      group_size: entries per group along ``contraction_axis``.
      contraction_axis: the axis that groups run along.
      calibration: ``"minmax"``, ``"percentile"``, ``"mse"`` or ``"ema"``.
      percentile: for ``"percentile"``, in ``(0, 100]``.
      mse_grid: for ``"mse"``, the number of clipping candidates (>= 2).
      ema_decay: for ``"ema"``, in ``[0, 1)``.
      calibrate_every: recalibrate every this many updates (>= 1).
      learn_scale: LSQ step sizes, trained by the optimizer.
      ste: ``"clipped"`` (0 outside the range, decided on the rounded level) or ``"identity"``.
      narrow_range: symmetric grid without ``-2**(b-1)``; default True, False with LSQ.
      live_scale: compute min-max scales in ``apply`` (None: wherever they apply, see above;
        True where they do not is an error; False: stored scales refreshed by ``update``).

    Returns:
      A Compressor with a :class:`QATState`.

    Raises:
      ValueError: for bad hyper-parameters (at the call), or at ``init`` a non-floating or
        non-finite leaf, or a ``group_size`` that does not divide its axis (naming the path).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcompress as jc
      >>> comp = jc.quant.qat(bits=4, group_size=8)
      >>> params = {"kernel": jax.random.normal(jax.random.key(0), (16, 8))}
      >>> state = comp.init(params)
      >>> state.spec.live, state.scale  # live min-max scales: computed by apply
      (True, None)
      >>> view = comp.apply(params, state)
      >>> int(jnp.unique(view["kernel"][:8, 0]).size) <= 15
      True
      >>> stored = jc.quant.qat(bits=4, group_size=8, live_scale=False)
      >>> stored.init(params).scale["kernel"].shape
      (2, 1, 8)

    References:
      Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference"; Esser et al. 2019, "Learned Step Size
      Quantization"; Rastegari et al. 2016 (XNOR-Net); Li et al. 2016 (Ternary Weight
      Networks); Bengio et al. 2013 (straight-through estimator).
    """
    schedule = bits if callable(bits) else None
    if schedule is not None:
        kind, static_bits = "grid", None
    else:
        kind, static_bits = _grid.parse_bits(bits, where="qat: bits")
    if kind == "grid" and static_bits == 1 and symmetric:
        kind = "sign"
    if not isinstance(symmetric, bool):
        raise ValueError(f"qat: symmetric must be a bool, got {symmetric!r}")
    if kind in ("sign", "ternary") and not symmetric:
        raise ValueError(f"qat: bits={bits!r} is a symmetric grid; drop symmetric=False")
    if granularity is None:
        if group_size is not None:
            granularity = "group"
        else:
            granularity = "tensor" if channel_axis is None else "channel"
    if granularity not in _grid.GRANULARITIES:
        raise ValueError(
            f"qat: granularity must be one of {_grid.GRANULARITIES}, got {granularity!r}"
        )
    if granularity == "group":
        if group_size is None:
            raise ValueError("qat: granularity='group' needs group_size")
        _check_positive_int(group_size, "group_size")
    elif group_size is not None:
        raise ValueError(f"qat: group_size={group_size!r} needs granularity='group'")
    if isinstance(channel_axis, list):
        channel_axis = tuple(channel_axis)
    if calibration not in _calibration.CALIBRATIONS:
        raise ValueError(
            f"qat: calibration must be one of {_calibration.CALIBRATIONS}, got {calibration!r}"
        )
    if kind != "grid" and calibration != "minmax":
        raise ValueError(
            f"qat: bits={bits!r} uses its closed-form scale; calibration={calibration!r} "
            "applies to integer grids (bits 2..8, or 1 with symmetric=False)"
        )
    if not (isinstance(percentile, (int, float)) and 0.0 < percentile <= 100.0):
        raise ValueError(f"qat: percentile must be in (0, 100], got {percentile!r}")
    _check_positive_int(mse_grid, "mse_grid", minimum=2)
    if not (isinstance(ema_decay, (int, float)) and 0.0 <= ema_decay < 1.0):
        raise ValueError(f"qat: ema_decay must be in [0, 1), got {ema_decay!r}")
    _check_positive_int(calibrate_every, "calibrate_every")
    if ste not in _grid.STES:
        raise ValueError(f"qat: ste must be one of {_grid.STES}, got {ste!r}")
    if learn_scale and kind == "ternary":
        raise ValueError("qat: learn_scale supports integer grids and binary, not ternary")
    if learn_scale and calibration != "minmax":
        raise ValueError(
            f"qat: learn_scale=True learns the step size; calibration={calibration!r} would "
            "be ignored (leave it 'minmax')"
        )
    if narrow_range is None:
        narrow_range = not learn_scale
    live_ok = (
        kind == "grid"
        and symmetric
        and schedule is None
        and calibration == "minmax"
        and calibrate_every == 1
        and not learn_scale
    )
    if live_scale not in (None, True, False):
        raise ValueError(f"qat: live_scale must be None, True or False, got {live_scale!r}")
    if live_scale and not live_ok:
        raise ValueError(
            "qat: live_scale=True needs a symmetric integer grid with static bits, "
            "calibration='minmax', calibrate_every=1 and learn_scale=False"
        )
    live = live_ok if live_scale is None else bool(live_scale)

    spec = QuantSpec(
        kind=kind,
        symmetric=symmetric,
        narrow_range=bool(narrow_range),
        granularity=granularity,
        channel_axis=channel_axis,
        group_size=group_size,
        contraction_axis=contraction_axis,
        ste=ste,
        learn_scale=bool(learn_scale),
        bits=static_bits,
        live=live,
    )
    name = f"qat(bits={bits!r})"
    # static symmetric min-max scales use the same (export-recoverable) numbers as live ones
    recoverable_qmax = (
        _grid.qrange(static_bits, symmetric=True, narrow_range=bool(narrow_range))[1]
        if kind == "grid" and symmetric and static_bits is not None
        else None
    )
    use_ema = calibration == "ema"

    def bits_at(count):
        if schedule is None:
            return jnp.asarray(static_bits, jnp.int32)
        return _schedule_bits(schedule, count)

    def calibrate(path, w, b):
        """(scale, zp, thr, stat_min, stat_max) of one leaf from its current values."""
        lay = spec.layout(w.shape, path)
        xg = lay.to_grouped(w.astype(jnp.float32))
        axes = lay.reduce_axes
        qmin, qmax = spec.bounds(b)
        if calibration == "percentile":
            s, z, t = _calibration.percentile_params(
                xg, axes, percentile=percentile, symmetric=symmetric, qmin=qmin, qmax=qmax
            )
        elif calibration == "mse":
            s, z, t = _calibration.mse_params(
                xg, axes, grid=mse_grid, symmetric=symmetric, qmin=qmin, qmax=qmax
            )
        else:
            s, z, t = _fake_quant.minmax_params(
                xg,
                axes,
                kind=kind,
                symmetric=symmetric,
                qmin=qmin,
                qmax=qmax,
                recoverable=recoverable_qmax,
            )
        if not use_ema:
            return s, z, t, None, None
        xf = lax.stop_gradient(xg)
        if symmetric:
            return s, z, t, None, jnp.max(jnp.abs(xf), axis=axes, keepdims=True)
        lo = jnp.minimum(jnp.min(xf, axis=axes, keepdims=True), 0.0)
        hi = jnp.maximum(jnp.max(xf, axis=axes, keepdims=True), 0.0)
        return s, z, t, lo, hi

    def from_ema_range(lo, hi, b):
        qmin, qmax = spec.bounds(b)
        if symmetric:
            if recoverable_qmax is not None:
                return _fake_quant.symmetric_scale(hi, recoverable_qmax), None
            return _fake_quant.safe_scale(hi / qmax), None
        s, z, _ = _fake_quant.range_params(lo, hi, qmin=qmin, qmax=qmax)
        return s, z

    def lsq_init(path, w, b):
        lay = spec.layout(w.shape, path)
        xg = _fake_quant.finite_or_zero(lay.to_grouped(w.astype(jnp.float32)))
        qmin, qmax = spec.bounds(b)
        if kind == "sign":
            s = jnp.mean(jnp.abs(xg), axis=lay.reduce_axes, keepdims=True)
            return jnp.maximum(s, _LSQ_EPS), None
        if symmetric:
            s = 2.0 * jnp.mean(jnp.abs(xg), axis=lay.reduce_axes, keepdims=True)
            return _fake_quant.safe_scale(s / jnp.sqrt(qmax)), None
        s, z, _ = _fake_quant.minmax_params(
            xg, lay.reduce_axes, kind=kind, symmetric=False, qmin=qmin, qmax=qmax
        )
        return s, z

    def flat(params):
        leaves_p, treedef = jax.tree_util.tree_flatten_with_path(params)
        return [(paths_lib.path_str(p), w) for p, w in leaves_p], treedef

    def unflat(treedef, values):
        return jax.tree_util.tree_unflatten(treedef, values)

    def up_to(treedef, tree, n):
        return [None] * n if tree is None else treedef.flatten_up_to(tree)

    def init_fn(params):
        paths_lib.check_float_leaves(params, method=f"quant.{name}")
        leaves, treedef = flat(params)
        for path, w in leaves:
            spec.layout(w.shape, path)  # raises for a bad group size / axis, naming the path
            _fake_quant.check_finite(w, path=f"quant.{name}: leaf {path!r}")
        b = bits_at(jnp.zeros([], jnp.int32))
        cols = {k: [] for k in ("scale", "zp", "thr", "rmin", "rmax", "lsq")}
        for path, w in leaves:
            if learn_scale:
                s, z = lsq_init(path, w, b)
                cols["lsq"].append(s)
                cols["zp"].append(z)
                continue
            if live:
                continue  # scales are computed by ``apply``
            s, z, t, lo, hi = calibrate(path, w, b)
            lo = None if lo is None else _fake_quant.finite_or(lo, 0.0)
            hi = None if hi is None else _fake_quant.finite_or(hi, 0.0)
            for k, v in zip(("scale", "zp", "thr", "rmin", "rmax"), (s, z, t, lo, hi), strict=True):
                cols[k].append(v)
        n = len(leaves)

        def tree_or_none(k, present):
            return unflat(treedef, cols[k]) if present else None

        return QATState(
            count=jnp.zeros([], jnp.int32),
            # one array per leaf (never the same buffer twice: ``update`` passes static bits
            # through, and a donated state may not hold one buffer in two leaves)
            bits=unflat(treedef, [jnp.array(b) for _ in range(n)]),
            scale=tree_or_none("scale", not (learn_scale or live)),
            zero_point=tree_or_none("zp", not symmetric),
            threshold=tree_or_none("thr", kind == "ternary"),
            range_min=tree_or_none("rmin", use_ema and not symmetric),
            range_max=tree_or_none("rmax", use_ema),
            trainable=tree_or_none("lsq", learn_scale),
            spec=spec,
        )

    def quantize_leaf(path, w, b, s, z, t):
        lay = spec.layout(w.shape, path)
        xg = lay.to_grouped(w.astype(jnp.float32))
        if live:
            # every weight is inside the range s * qmax: the clipped STE is the identity
            s = live_scale_of(spec, xg, lay)
            rec = _LIVE_SCALES.get()
            if rec is not None:
                rec[path] = s
            qmin, qmax = spec.bounds(b)
            if spec.narrow_range:
                out = _fake_quant.fq_symmetric(xg, s, qmax, "identity")
            else:
                out = _fake_quant.fq_grid(xg, s, None, qmin, qmax, "identity")
            return lay.from_grouped(out).astype(w.dtype)
        if learn_scale:
            s = jnp.maximum(s.astype(jnp.float32), _LSQ_EPS)
        else:
            s = lax.stop_gradient(s)
        z = None if z is None else lax.stop_gradient(z)
        if kind == "sign":
            out = _fake_quant.fq_sign(xg, s, ste, learn_scale)
        elif kind == "ternary":
            out = _fake_quant.fq_ternary(xg, s, lax.stop_gradient(t), ste)
        else:
            qmin, qmax = spec.bounds(b)
            if learn_scale:
                out = _fake_quant.fq_grid_lsq(xg, s, z, qmin, qmax, ste)
            elif spec.symmetric and spec.narrow_range:
                out = _fake_quant.fq_symmetric(xg, s, qmax, ste)  # qmin == -qmax
            else:
                out = _fake_quant.fq_grid(xg, s, z, qmin, qmax, ste)
        return lay.from_grouped(out).astype(w.dtype)

    def apply_fn(params, state):
        leaves, treedef = flat(params)
        n = len(leaves)
        cols = [
            up_to(treedef, t, n)
            for t in (state.bits, forward_scale(state), state.zero_point, state.threshold)
        ]
        out = [quantize_leaf(path, w, *c) for (path, w), *c in zip(leaves, *cols, strict=True)]
        return unflat(treedef, out)

    def recalibrate(params, state, b):
        leaves, treedef = flat(params)
        n = len(leaves)
        olds = [up_to(treedef, t, n) for t in (state.range_min, state.range_max)]
        cols = {k: [] for k in ("scale", "zp", "thr", "rmin", "rmax")}
        for (path, w), old_lo, old_hi in zip(leaves, *olds, strict=True):
            s, z, t, lo, hi = calibrate(path, w, b)
            if use_ema:
                # a slice with a non-finite weight keeps its old range (never a NaN state)
                hi = _calibration.ema(old_hi, _fake_quant.finite_or(hi, old_hi), ema_decay)
                if not symmetric:
                    lo = _calibration.ema(old_lo, _fake_quant.finite_or(lo, old_lo), ema_decay)
                s, z = from_ema_range(lo, hi, b)
            for k, v in zip(cols, (s, z, t, lo, hi), strict=True):
                cols[k].append(v)
        return state._replace(
            scale=unflat(treedef, cols["scale"]),
            zero_point=state.zero_point if symmetric else unflat(treedef, cols["zp"]),
            threshold=unflat(treedef, cols["thr"]) if kind == "ternary" else None,
            range_min=unflat(treedef, cols["rmin"]) if use_ema and not symmetric else None,
            range_max=unflat(treedef, cols["rmax"]) if use_ema else None,
        )

    def update_fn(params, state, grads=None):
        del grads
        count = state.count + 1
        new_b = bits_at(count)
        leaves, treedef = flat(params)
        n = len(leaves)
        old_bits = up_to(treedef, state.bits, n)
        if schedule is None:
            # static bits pass through: no constant re-written per leaf and step (each one a
            # kernel launch on GPU)
            new_state = state._replace(count=count)
        else:
            new_state = state._replace(count=count, bits=unflat(treedef, [new_b] * n))
        if live:
            return params, new_state  # scales are computed by ``apply``
        if learn_scale:
            if schedule is None or spec.kind == "sign":
                return params, new_state

            def rescale(s, ob):
                # keep the clipping range s * qmax when the bit width changes
                return s * (spec.bounds(ob)[1] / spec.bounds(new_b)[1])

            scales = up_to(treedef, state.trainable, n)
            new_s = [rescale(s, ob) for s, ob in zip(scales, old_bits, strict=True)]
            return params, new_state._replace(trainable=unflat(treedef, new_s))
        if calibrate_every == 1 and schedule is None:
            return params, recalibrate(params, new_state, new_b)
        due = count % calibrate_every == 0
        if schedule is not None and old_bits:
            due = due | (old_bits[0] != new_b)
        new_state = lax.cond(due, lambda: recalibrate(params, new_state, new_b), lambda: new_state)
        return params, new_state

    return Compressor(init_fn, apply_fn, update_fn)
