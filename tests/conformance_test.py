"""The conformance suite every Compressor passes.

Each entry of ``CASES`` is ``(name, factory)``; the factory returns a fresh Compressor.
Every method family adds its compressors here (one or more configurations each). The suite
checks the contract of DESIGN.md §1 and §5: jitted init/apply/update, init on abstract
shapes, structure/shape/dtype preservation (float32 and bfloat16), no retrace on the second
step, composition inside ``chain`` and ``rules``, and equal results on an 8-device mesh.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

# (name, factory). Shapes in the test tree are multiples of 8 so N:M groups, blocks, groups
# and an 8-way sharding all divide.
CASES = [
    ("identity", jc.identity),
    ("qat8", lambda: jc.quant.qat(bits=8)),
    ("qat4_per_tensor", lambda: jc.quant.qat(bits=4, channel_axis=None)),
    ("qat1", lambda: jc.quant.qat(bits=1)),
    ("qat4_asym_group", lambda: jc.quant.qat(bits=4, symmetric=False, group_size=8)),
    ("qat2_lsq", lambda: jc.quant.qat(bits=2, learn_scale=True)),
    ("qat8_ema", lambda: jc.quant.qat(bits=8, calibration="ema", calibrate_every=2)),
    ("magnitude50", lambda: jc.prune.magnitude(0.5)),
    ("magnitude75_at2", lambda: jc.prune.magnitude(0.75, at_step=2)),
    ("kmeans8_linear_refresh2", lambda: jc.cluster.kmeans(8, init="linear", update_every=2)),
    ("lowrank_r4", lambda: jc.lowrank.svd(rank=4)),
    (
        "magnitude_global_poly",
        lambda: jc.prune.magnitude(
            0.75, scope="global", schedule=jc.prune.polynomial(begin=1, end=3, update_every=1)
        ),
    ),
    ("magnitude_nm24", lambda: jc.prune.magnitude(structure=jc.prune.nm(2, 4))),
    ("saliency50", lambda: jc.prune.saliency(0.5)),
    ("movement50", lambda: jc.prune.movement(0.5)),
    ("rigl50", lambda: jc.prune.rigl(0.5, end=3, update_every=1, distribution="uniform")),
]

IDS = [c[0] for c in CASES]
FACTORIES = [c[1] for c in CASES]
_BY_FACTORY = {id(f): n for n, f in CASES}


def make_params(dtype=jnp.float32, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return {
        "Dense_0": {"kernel": jax.random.normal(k1, (32, 16), dtype)},
        "Dense_1": {"kernel": jax.random.normal(k2, (16, 16), dtype)},
        "Dense_2": {"kernel": jax.random.normal(k3, (16, 8), dtype)},
    }


def make_grads(params, seed=1):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    )


def run_steps(comp, params, n=3, jit=True):
    """init, then n times (apply, update with grads); returns (views, params, state)."""
    init = jax.jit(comp.init) if jit else comp.init

    def step(params, state, grads):
        view = comp.apply(params, state)
        # a plain SGD step so params move as in training
        params = jax.tree.map(lambda p, g: p - 0.01 * g.astype(p.dtype), params, grads)
        params, state = comp.update(params, state, grads)
        return view, params, state

    step = jax.jit(step) if jit else step
    state = init(params)
    views = []
    for i in range(n):
        view, params, state = step(params, state, make_grads(params, seed=10 + i))
        views.append(view)
    return views, params, state


@functools.cache
def _reference_by_name(name):
    factory = dict(CASES)[name]
    return run_steps(factory(), make_params())


def reference(factory):
    """The jitted 3-step run of ``factory()`` on float32 params (computed once per case)."""
    return _reference_by_name(_BY_FACTORY[id(factory)])


def shapes_dtypes(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_preserves_structure_shapes_dtypes(factory, dtype):
    comp = factory()
    params = make_params(dtype)
    views, new_params, state = (
        reference(factory) if dtype == jnp.float32 else run_steps(comp, params)
    )
    for view in views:
        chex.assert_trees_all_equal_shapes_and_dtypes(view, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_params, params)
    # The state keeps its structure, shapes and dtypes across updates (needed for lax loops).
    s0 = jax.jit(comp.init)(params)
    chex.assert_trees_all_equal_structs(s0, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(s0, state)
    for x in jax.tree.leaves(views[-1]):
        assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_init_on_abstract_shapes(factory):
    comp = factory()
    params = make_params()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    state_shape = jax.eval_shape(comp.init, abstract)
    concrete = comp.init(params)
    chex.assert_trees_all_equal_structs(state_shape, concrete)
    assert shapes_dtypes(state_shape) == shapes_dtypes(concrete)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_no_retrace_on_second_step(factory, trace_counter):
    comp = factory()
    params = make_params()
    grads = make_grads(params)

    def step(params, state, grads):
        view = comp.apply(params, state)
        params, state = comp.update(params, state, grads)
        return view, params, state

    counted = trace_counter(step)
    jstep = jax.jit(counted)
    state = comp.init(params)
    for _ in range(3):
        _, params, state = jstep(params, state, grads)
    assert counted.count == 1


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_eager_init_buffers_can_be_donated(factory):
    # A train step that donates params and state fails ("donate the same buffer twice") if an
    # eager init put one array in two leaves or aliased a param.
    params = make_params()
    state = factory().init(params)
    arrays = [x for x in jax.tree.leaves((params, state)) if isinstance(x, jax.Array)]
    pointers = [x.unsafe_buffer_pointer() for x in arrays if x.size]
    assert len(set(pointers)) == len(pointers)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_jit_matches_eager(factory):
    params = make_params()
    v_jit, p_jit, _ = run_steps(factory(), params, n=1, jit=True)
    v_eager, p_eager, _ = run_steps(factory(), params, n=1, jit=False)
    chex.assert_trees_all_close(v_jit, v_eager, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(p_jit, p_eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_inside_chain_and_rules(factory):
    params = make_params()
    views, ref_params, _ = reference(factory)
    for wrapped in (
        jc.chain(jc.identity(), factory(), jc.identity()),
        jc.rules([(".*", factory())]),
    ):
        v, p, _ = run_steps(wrapped, params)
        chex.assert_trees_all_close(v, views, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(p, ref_params, rtol=1e-6, atol=1e-6)
    # Routed to one leaf only: the other leaves are untouched by apply.
    comp = jc.rules([("Dense_1/kernel", factory()), (".*", None)])
    state = comp.init(params)
    view = comp.apply(params, state)
    chex.assert_trees_all_equal(view["Dense_0"], params["Dense_0"])
    chex.assert_trees_all_equal(view["Dense_2"], params["Dense_2"])


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_finalize_equals_apply(factory):
    comp = factory()
    params = make_params()
    state = comp.init(params)
    chex.assert_trees_all_equal(jc.finalize(comp, params, state), comp.apply(params, state))


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_update_counts_steps(factory):
    _, _, state = reference(factory)
    counts = jc.state_fields(state, "count")
    assert all(int(c) == 3 for c in counts)


# Methods that accumulate a per-weight float score (e.g. movement pruning) may hold one
# float tensor per param on top of their masks; every other state stays below the size of
# one float copy of the params (masks as bool or packed bits, indices as uint8 ...).
FULL_SIZE_STATE_OK: set[str] = {"movement50"}


@pytest.mark.parametrize("name", IDS)
def test_state_memory(name):
    comp = dict(CASES)[name]()
    params = make_params()
    state = jax.eval_shape(comp.init, params)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    limit = 1.3 if name in FULL_SIZE_STATE_OK else 0.75
    assert state_bytes <= limit * param_bytes, (name, state_bytes, param_bytes)
    # masks are stored as bool or packed bits, never as float: at most 1/4 of f32 params
    for m in jc.state_fields(state, "mask"):
        for leaf in jax.tree.leaves(m):
            assert leaf.dtype in (jnp.bool_, jnp.uint8, jnp.uint32), (name, leaf.dtype)


@functools.cache
def _mesh():
    devices = np.array(jax.devices()[:8]).reshape(4, 2)
    return Mesh(devices, ("data", "model"))


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_sharded_mesh_matches_single_device(factory):
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    params = make_params()
    views, ref_params, ref_state = reference(factory)
    mesh = _mesh()
    # FSDP-style: rows over "data", columns over "model".
    sharding = NamedSharding(mesh, P("data", "model"))
    sharded = jax.device_put(params, sharding)
    s_views, s_params, s_state = run_steps(factory(), sharded)
    chex.assert_trees_all_close(s_views, views, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(s_params, ref_params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(
        jax.tree.map(lambda x: np.asarray(x, np.float32), s_state),
        jax.tree.map(lambda x: np.asarray(x, np.float32), ref_state),
        rtol=1e-5,
        atol=1e-6,
    )
