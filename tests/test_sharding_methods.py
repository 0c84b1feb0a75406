"""Compressed train steps on a 2-D (data x model) mesh of 8 CPU devices, against one device.

A tiny linen MLP (16 -> 32 -> 8) trains for a few steps under ``jax.jit`` with FSDP-style
parameter sharding: ``Dense_0/kernel`` split over ``model`` on its input axis, ``Dense_1/kernel``
on its output axis, the batch split over ``data``. The compressor state is placed by
``jc.state_shardings``. The sharded run must give the single-device params (to float rounding),
integer and boolean state exactly, keep every state leaf on the sharding derived from its param
(masks, scales, assignments of sharded kernels stay sharded), and not recompile on later steps.

The second half compiles a global-pruning mask update on the mesh and reads the compiled HLO:
global thresholds must reduce counts across devices, never gather a whole parameter.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc
from jaxcompress.workloads import MLP

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 CPU devices")

STEPS = 4
BATCH = 16
# float32 params after STEPS SGD steps: sharded reductions sum in another order.
RTOL, ATOL = 1e-5, 1e-6

SPECS = {
    # Specs in the canonical form jit gives its outputs (no trailing None), so that step 2
    # finds step 1's executable.
    "Dense_0": {"kernel": P("model"), "bias": P("model")},  # FSDP: split the input axis
    "Dense_1": {"kernel": P(None, "model"), "bias": P("model")},  # split the output axis
}
TEACHER_SPECS = {
    "Dense_0": {"kernel": P("model"), "bias": P("model")},
    "Dense_1": {"kernel": P(None, "model"), "bias": P("model")},
}

STUDENT = MLP((32, 8))
TEACHER = MLP((64, 8))


def _kernels(comp):
    return jc.rules([(".*/kernel", comp), (".*", None)])


def _poly():
    # masks recomputed on the mesh at update counts 1, 2, 3 (sparsity 0, ~0.65, 0.75); init
    # keeps everything, so no mask search is compiled outside the step
    return jc.prune.polynomial(begin=1, end=3, update_every=1)


# name -> (compressor factory, distill?, state paths that must stay sharded like their kernel)
CASES = {
    # stored scales (refreshed by update): they must stay sharded like their kernel
    "qat_channel": (lambda: _kernels(jc.quant.qat(4, live_scale=False)), False, ["Dense_1"]),
    # group 4 along Dense_0's input axis: each of the 4 shards holds one group row
    "qat_group_in_shard": (
        lambda: _kernels(jc.quant.qat(4, group_size=4, live_scale=False)),
        False,
        ["Dense_0", "Dense_1"],
    ),
    # group 8: every group spans two shards of Dense_0 (4 rows each), so its scales are
    # replicated; Dense_1's groups run along its unsharded axis
    "qat_group_across": (
        lambda: _kernels(jc.quant.qat(4, group_size=8, live_scale=False)),
        False,
        ["Dense_1"],
    ),
    # live scales (the default): computed in the forward on the mesh, none in the state
    "qat_channel_live": (lambda: _kernels(jc.quant.qat(4)), False, []),
    "qat_group_live": (lambda: _kernels(jc.quant.qat(4, group_size=8)), False, []),
    "magnitude_layer": (
        lambda: _kernels(jc.prune.magnitude(0.75, schedule=_poly())),
        False,
        ["Dense_0", "Dense_1"],
    ),
    "magnitude_global": (
        lambda: _kernels(jc.prune.magnitude(0.75, schedule=_poly(), scope="global")),
        False,
        ["Dense_0", "Dense_1"],
    ),
    "kmeans": (
        lambda: _kernels(jc.cluster.kmeans(4, init="linear", update_every=2)),
        False,
        ["Dense_0", "Dense_1"],
    ),
    "kd_qat": (lambda: _kernels(jc.quant.qat(4)), True, []),
}


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))


@pytest.fixture(scope="module")
def data():
    kx, ky, ks, kt = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (BATCH, 16))
    y = jax.random.randint(ky, (BATCH,), 0, 8)
    student = STUDENT.init(ks, x)["params"]
    teacher = TEACHER.init(kt, x)["params"]
    return x, y, student, teacher


def _step(state, teacher, x, y):
    def loss_fn(v):
        logits = state.apply_fn({"params": state.compress(v)}, x)
        if teacher is None:
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        t = TEACHER.apply({"params": teacher}, x)
        return jc.distill.kd_loss(logits, t, temperature=2.0, labels=y, alpha=0.5).mean()

    return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))


# One jitted step shared by every case (each compressor is a static field of the state).
train_step = jax.jit(_step)


def _named(mesh, specs):
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs)


def _run(comp, params, teacher, x, y, *, mesh=None):
    """STEPS train steps; returns the final TrainState and the jit cache growth after step 1."""
    if mesh is None:
        compression = jax.jit(comp.init)(params)
    else:
        params = jax.device_put(params, _named(mesh, SPECS))
        if teacher is not None:
            teacher = jax.device_put(teacher, _named(mesh, TEACHER_SPECS))
        x = jax.device_put(x, NamedSharding(mesh, P("data")))
        y = jax.device_put(y, NamedSharding(mesh, P("data")))
        compression = jax.jit(comp.init, out_shardings=jc.state_shardings(comp, params))(params)
    state = jc.flax.TrainState.create(
        apply_fn=STUDENT.apply,
        params=params,
        tx=optax.sgd(0.1, momentum=0.9),
        compressor=comp,
        compression=compression,
    )
    if mesh is not None:  # create() replicates the step counter on the params' mesh
        assert state.step.sharding.is_equivalent_to(NamedSharding(mesh, P()), 0)
    state = train_step(state, teacher, x, y)
    cache = train_step._cache_size()
    for _ in range(STEPS - 1):
        state = train_step(state, teacher, x, y)
    return state, train_step._cache_size() - cache


def _assert_close(path, a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (path, a.dtype, b.dtype)
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=path)
    else:
        np.testing.assert_array_equal(a, b, err_msg=path)


def _leaves(tree):
    return [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]


@pytest.mark.parametrize("name", list(CASES))
def test_mesh_train_step_matches_one_device(name, mesh, data):
    factory, distill, sharded_state = CASES[name]
    x, y, params, teacher = data
    teacher = teacher if distill else None
    comp = factory()
    ref, _ = _run(comp, params, teacher, x, y)
    out, recompiles = _run(comp, params, teacher, x, y, mesh=mesh)
    assert recompiles == 0, "the step recompiled: output shardings differ from the inputs'"

    # same params and state as on one device
    for (path, a), (_, b) in zip(_leaves(out.params), _leaves(ref.params), strict=True):
        _assert_close("params" + path, a, b)
    assert jax.tree.structure(out.compression) == jax.tree.structure(ref.compression)
    for (path, a), (_, b) in zip(_leaves(out.compression), _leaves(ref.compression), strict=True):
        _assert_close("compression" + path, a, b)

    # params keep their sharding; every state leaf has the sharding derived from its param
    for (path, a), s in zip(_leaves(out.params), jax.tree.leaves(_named(mesh, SPECS)), strict=True):
        assert a.sharding.is_equivalent_to(s, a.ndim), (path, a.sharding)
    expected = jc.state_shardings(comp, out.params)
    got = _leaves(out.compression)
    want = jax.tree.leaves(expected)
    assert len(got) == len(want)
    for (path, a), s in zip(got, want, strict=True):
        assert a.sharding.is_equivalent_to(s, a.ndim), (path, a.sharding.spec, s.spec)

    # masks / scales / assignments of sharded kernels are split over devices, not replicated
    owned = [
        (path, a)
        for path, a in got
        if a.ndim >= 2 and any(f"['{layer}']['kernel']" in path for layer in sharded_state)
    ]
    assert owned or not sharded_state, f"{name}: no per-leaf state array of {sharded_state}"
    for layer in sharded_state:
        arrays = [a for path, a in owned if f"['{layer}']['kernel']" in path]
        assert any(not a.sharding.is_fully_replicated for a in arrays), (name, layer)
        for a in arrays:
            if not a.sharding.is_fully_replicated:
                assert len(a.addressable_shards) == 8
                assert a.addressable_shards[0].data.size < a.size

    if name == "magnitude_global":  # the masks really were recomputed to the target
        masks = jax.tree.leaves(out.compression.states[0].mask)
        total = sum(m.size for m in masks)
        assert sum(int(m.sum()) for m in masks) == total - int(0.75 * total)
        per_layer = [float(m.mean()) for m in masks]
        assert per_layer[0] != per_layer[1]  # one global threshold, not 25% of each layer


def test_grouped_state_follows_the_split_axis(mesh):
    """Per-group scales ``(in // g, 1, out)`` keep the partitioning of the grouped axis."""
    s = NamedSharding(mesh, P("model", "data"))
    assert jc.derive_sharding(s, (16, 32), (4, 1, 32)).spec == P("model", None, "data")
    assert jc.derive_sharding(s, (16, 32), (4, 4, 32)).spec == P("model", None, "data")
    assert jc.derive_sharding(s, (16, 32), (2, 1, 32)).spec == P(None, None, "data")  # 4 ∤ 2
    assert jc.derive_sharding(s, (16, 32), (2, 1, 1)).spec == P()
    assert jc.derive_sharding(s, (16, 32), (3, 1, 32)).spec == P()  # no axis explains it
    conv = NamedSharding(mesh, P(None, None, "model", "data"))
    assert jc.derive_sharding(conv, (3, 3, 16, 8), (1, 1, 4, 1, 8)).spec == P(
        None, None, "model", None, "data"
    )
    # canonical form (no trailing None), as jit returns its outputs
    assert jc.derive_sharding(s, (16, 32), (16, 1)).spec == P("model")


# ---------------------------------------------------------------------------------------
# Global-pruning mask update: the compiled HLO gathers no whole parameter.

_COLLECTIVE = re.compile(
    r"=\s*(?:\(([^)]*)\)|(\w+\[[\d,]*\])\S*)\s+"
    r"(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\("
)
_SHAPE = re.compile(r"\w+\[([\d,]*)\]")


def collectives(hlo: str) -> list[tuple[str, int]]:
    """``(op, elements)`` of every cross-device collective in compiled HLO text."""
    out = []
    for m in _COLLECTIVE.finditer(hlo):
        shapes = m.group(1) if m.group(1) is not None else m.group(2)
        n = 0
        for dims in _SHAPE.findall(shapes):
            n = max(n, int(np.prod([int(d) for d in dims.split(",") if d] or [1])))
        out.append((m.group(3), n))
    return out


def _big_params(mesh):
    # kernels large enough that the search's strided sample (<= 1024 keys) is far smaller
    params = {
        "a": {"kernel": jax.random.normal(jax.random.key(1), (128, 256))},
        "b": {"kernel": jax.random.normal(jax.random.key(2), (256, 64))},
    }
    specs = {"a": {"kernel": P("model", "data")}, "b": {"kernel": P("data", "model")}}
    return jax.device_put(params, _named(mesh, specs)), _named(mesh, specs)


def _compiled_update_hlo(comp, params, shardings):
    state_sh = jc.state_shardings(comp, params)
    state = jax.jit(comp.init, out_shardings=state_sh)(params)
    update = jax.jit(comp.update, out_shardings=(shardings, state_sh))
    return update.lower(params, state).compile().as_text(), update, state


def test_global_mask_update_gathers_no_parameter(mesh):
    params, shardings = _big_params(mesh)
    smallest = min(x.size for x in jax.tree.leaves(params))
    comp = jc.prune.magnitude(0.9, scope="global", schedule=jc.prune.constant(update_every=1))
    hlo, update, state = _compiled_update_hlo(comp, params, shardings)
    ops = collectives(hlo)
    # The search's per-device partial results (counts, neighbouring keys: one value per
    # device) and the small strided sample cross devices; XLA partitions the variadic
    # reduction as a gather of those partials, so count both kinds of collective.
    assert ops, "expected the threshold search to combine per-device counts"
    big = [(op, n) for op, n in ops if n >= smallest // 8]
    assert not big, f"collectives of a parameter shard or more in the global mask update: {big}"
    # and the compiled update computes the exact global mask
    _, new = update(params, state)
    kept = sum(int(m.sum()) for m in jax.tree.leaves(new.mask))
    total = sum(x.size for x in jax.tree.leaves(params))
    assert kept == total - int(0.9 * total)


@pytest.mark.parametrize("kwargs", [{}, {"group_size": 16}, {"group_size": 64}])
def test_live_scales_gather_no_parameter(mesh, kwargs):
    """Live per-channel / per-group scales reduce on each shard; only scales cross devices."""
    params, shardings = _big_params(mesh)
    smallest = min(x.size for x in jax.tree.leaves(params))
    comp = jc.quant.qat(8, **kwargs)
    state = comp.init(params)
    fn = jax.jit(comp.apply, out_shardings=shardings)
    ops = collectives(fn.lower(params, state).compile().as_text())
    big = [(op, n) for op, n in ops if n >= smallest // 8]
    assert not big, f"collectives of a parameter shard or more in the live forward: {big}"
    np.testing.assert_array_equal(
        np.asarray(fn(params, state)["a"]["kernel"]),
        np.asarray(comp.apply(jax.device_get(params), state)["a"]["kernel"]),
    )


def test_gather_detector_sees_a_gathering_threshold(mesh):
    """The check above can fail: a sort-based global threshold gathers every parameter."""
    params, shardings = _big_params(mesh)
    smallest = min(x.size for x in jax.tree.leaves(params))

    def sorted_threshold(p):
        flat = jnp.concatenate([jnp.abs(x).reshape(-1) for x in jax.tree.leaves(p)])
        t = jnp.sort(flat)[int(0.9 * flat.size)]
        return jax.tree.map(lambda x: jnp.abs(x) >= t, p)

    fn = jax.jit(sorted_threshold, out_shardings=shardings)
    ops = collectives(fn.lower(params).compile().as_text())
    assert any(op == "all-gather" and n >= smallest for op, n in ops), ops


def test_collectives_parser():
    hlo = (
        "  %all-gather.1 = f32[128,256]{1,0} all-gather(f32[32,256]{1,0} %p), dimensions={0}\n"
        "  %ar = (s32[3]{0}, u32[3]{0}) all-reduce(s32[3]{0} %a, u32[3]{0} %b), to_apply=%s\n"
        "  %ags = (f32[4]{0}, f32[16]{0}) all-gather-start(f32[4]{0} %c), dimensions={0}\n"
        "  %add = f32[8]{0} add(f32[8]{0} %x, f32[8]{0} %y)\n"
    )
    assert collectives(hlo) == [("all-gather", 128 * 256), ("all-reduce", 3), ("all-gather", 16)]


def _w8a8_step(residuals):
    def step(state, x, y):
        def loss_fn(v):
            with jc.flax.quantize_activations(8, residuals=residuals):
                logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))

    return jax.jit(step)


@pytest.mark.parametrize("residuals", ["original", "quantized"])
def test_w8a8_mesh_train_step_matches_one_device(residuals, mesh, data):
    # w8a8 with dynamic per-token scales (a reduction over the features of activations the
    # compiler lays out over the mesh): the sharded step gives the single-device params
    x, y, params, _ = data
    comp = _kernels(jc.quant.qat(8))
    step = _w8a8_step(residuals)

    def run(params, x, y):
        state = jc.flax.TrainState.create(
            apply_fn=STUDENT.apply, params=params, tx=optax.sgd(0.1), compressor=comp
        )
        for _ in range(STEPS):
            state = step(state, x, y)
        return state

    ref = run(params, x, y)
    out = run(
        jax.device_put(params, _named(mesh, SPECS)),
        jax.device_put(x, NamedSharding(mesh, P("data"))),
        jax.device_put(y, NamedSharding(mesh, P("data"))),
    )
    for (path, a), (_, b) in zip(_leaves(out.params), _leaves(ref.params), strict=True):
        _assert_close("params" + path, a, b)
    for (path, a), s in zip(_leaves(out.params), jax.tree.leaves(_named(mesh, SPECS)), strict=True):
        assert a.sharding.is_equivalent_to(s, a.ndim), (path, a.sharding)
