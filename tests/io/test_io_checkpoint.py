"""jc.io checkpoints: bit-identical resume (linen TrainState and NNX), types/dtypes/shardings
of the template, step bookkeeping, sizes, errors."""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compile_count import count_compiles
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from learned_scale import learned_scale

import jaxcompress as jc

MODEL = jc.workloads.MLP((16, 8))
STEPS, STOP_AT, PRUNE_AT = 6, 3, 5  # the mask is computed after the interruption
COMP = jc.chain(
    jc.rules([(".*/kernel", learned_scale())]),
    jc.rules(
        [
            (".*/kernel", jc.chain(jc.prune.magnitude(0.5, at_step=PRUNE_AT), jc.quant.qat(8))),
            (".*/bias", None),
        ]
    ),
)
ADAM = optax.adam(1e-2)
# numpy data: slicing a batch compiles nothing, so compile counts see only the train step.
X = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 8, size=64).astype(np.int32)


def batch(i):
    j = (i * 8) % 64
    return X[j : j + 8], Y[j : j + 8]


def init_params(seed):
    return MODEL.init(jax.random.key(seed), X[:1])["params"]


def make_state(seed=0, params=None):
    return jc.flax.TrainState.create(
        apply_fn=MODEL.apply,
        params=init_params(seed) if params is None else params,
        tx=ADAM,
        compressor=COMP,
    )


@jax.jit
def linen_step(state, x, y):
    def loss(v):
        logits = state.apply_fn({"params": state.compress(v)}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return state.apply_gradients(grads=jax.grad(loss)(state.trainables))


def run_linen(state, start, stop):
    for i in range(start, stop):
        state = linen_step(state, *batch(i))
    return state


@functools.cache
def uninterrupted_linen():
    return run_linen(make_state(), 0, STEPS)


def mask_pruned(compression):
    mask = jc.state_fields(compression, "mask")[0]
    return sum(int(jnp.sum(~m)) for m in jax.tree.leaves(mask))


def test_linen_resume_is_bit_identical(tmp_path):
    ref = uninterrupted_linen()
    with jc.io.checkpoint_manager(tmp_path) as mngr:
        state = run_linen(make_state(), 0, STOP_AT)
        assert mask_pruned(state.compression) == 0  # nothing pruned yet at the interruption
        assert jc.io.save(mngr, int(state.step), state, extra={"next_batch": STOP_AT})
        del state
    # A new process: a fresh state (other init) as the template, then continue.
    with jc.io.checkpoint_manager(tmp_path) as mngr:
        assert jc.io.latest_step(mngr) == STOP_AT
        template = make_state(seed=7)
        restored = jc.io.restore(mngr, template)
        assert type(restored) is jc.flax.TrainState
        assert restored.compressor is COMP and restored.tx is ADAM
        assert int(restored.step) == STOP_AT
        start = jc.io.restore_extra(mngr)["next_batch"]
    with count_compiles() as compiles:  # restored like the template: no recompile
        resumed = run_linen(restored, start, STEPS)
    assert compiles.n == 0
    assert mask_pruned(resumed.compression) == 128 + 64  # pruned after the resume
    assert int(resumed.step) == int(ref.step) == STEPS
    chex.assert_trees_all_equal(resumed.params, ref.params)
    chex.assert_trees_all_equal(resumed.opt_state, ref.opt_state)
    chex.assert_trees_all_equal(resumed.compression, ref.compression)
    chex.assert_trees_all_equal_dtypes(resumed.params, ref.params)


def test_restore_onto_an_abstract_template(tmp_path):
    ref = uninterrupted_linen()
    mngr = jc.io.checkpoint_manager(tmp_path)
    jc.io.save(mngr, STEPS, ref)
    abstract = jax.eval_shape(make_state)
    restored = jc.io.restore(mngr, abstract)
    assert type(restored) is jc.flax.TrainState
    chex.assert_trees_all_equal(restored.params, ref.params)
    chex.assert_trees_all_equal(restored.compression, ref.compression)
    mngr.close()


def nnx_make(seed=0):
    model = jc.workloads.MLPNNX(16, (16, 8), rngs=nnx.Rngs(seed))
    cmodel = jc.flax.Compressed(model, COMP)
    return cmodel, nnx.Optimizer(cmodel, ADAM, wrt=nnx.Param)


@nnx.jit
def nnx_step(cmodel, optimizer, x, y):
    def loss(cmodel):
        return optax.softmax_cross_entropy_with_integer_labels(cmodel(x), y).mean()

    grads = nnx.grad(loss)(cmodel)
    optimizer.update(cmodel, grads)
    cmodel.update(grads)


def assert_states_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_nnx_resume_is_bit_identical(tmp_path):
    ref = nnx_make()
    for i in range(STEPS):
        nnx_step(*ref, *batch(i))
    a = nnx_make()
    for i in range(STOP_AT):
        nnx_step(*a, *batch(i))
    mngr = jc.io.checkpoint_manager(tmp_path)
    jc.io.save(mngr, STOP_AT, nnx.state(a))
    b = nnx_make(seed=3)
    nnx.update(b, jc.io.restore(mngr, nnx.state(b)))
    assert int(b[1].step[...]) == STOP_AT
    for i in range(STOP_AT, STEPS):
        nnx_step(*b, *batch(i))
    assert mask_pruned(b[0].compression_state) == 128 + 64
    assert_states_equal(nnx.state(b), nnx.state(ref))
    mngr.close()


class _Pair(NamedTuple):
    a: jax.Array
    b: object


def test_plain_pytree_keeps_types_dtypes_and_values(tmp_path):
    tree = {
        "f32": jnp.arange(6.0).reshape(2, 3),
        "bf16": jnp.arange(4, dtype=jnp.bfloat16),
        "i32": jnp.array([1, -2], jnp.int32),
        "mask": jnp.array([True, False]),
        "u8": np.arange(3, dtype=np.uint8),
        "key": jax.random.key(42),
        "pair": _Pair(jnp.ones(2), None),
        "empty": (),
        "step": 7,
        "lr": 0.5,
    }
    mngr = jc.io.checkpoint_manager(tmp_path)
    jc.io.save(mngr, 0, tree)
    template = jax.tree.map(lambda x: jnp.zeros_like(x) if isinstance(x, jax.Array) else x, tree)
    template["key"] = jax.random.key(0)
    template["u8"] = np.zeros(3, np.uint8)
    template["step"], template["lr"] = 0, 0.0
    out = jc.io.restore(mngr, template)
    assert jax.tree.structure(out) == jax.tree.structure(tree)
    assert isinstance(out["pair"], _Pair)
    for k in ("f32", "bf16", "i32", "mask", "u8"):
        assert out[k].dtype == tree[k].dtype
        np.testing.assert_array_equal(out[k], tree[k])
    assert isinstance(out["u8"], np.ndarray)
    np.testing.assert_array_equal(jax.random.key_data(out["key"]), jax.random.key_data(tree["key"]))
    assert out["step"] == 7 and out["lr"] == 0.5
    # The template's dtype wins: a float32 leaf restored onto a bfloat16 template.
    template["f32"] = jnp.zeros((2, 3), jnp.bfloat16)
    assert jc.io.restore(mngr, template)["f32"].dtype == jnp.bfloat16
    mngr.close()


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 CPU devices")
def test_restore_onto_sharded_templates(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))

    def spec_of(path, ndim, kernel_spec, bias_spec):
        if path.startswith("compression"):
            return P()  # per-channel scales etc.: see jc.state_shardings (test_sharding.py)
        if path.endswith("kernel") and ndim == 2:
            return kernel_spec
        return bias_spec if path.endswith("bias") and ndim == 1 else P()

    def abstract_sharded(kernel_spec, bias_spec):
        """A sharded template without materialising it: eval_shape + NamedShardings."""

        def one(path, x):
            if path == "step":
                return x  # no sharding: restored uncommitted, like a fresh counter
            spec = spec_of(path, x.ndim, kernel_spec, bias_spec)
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))

        return jc._src.paths.map_with_path(one, jax.eval_shape(make_state))

    ref = uninterrupted_linen()  # saved from one device
    mngr = jc.io.checkpoint_manager(tmp_path / "single")
    jc.io.save(mngr, STEPS, ref)

    # A concrete sharded template: a fresh state created from sharded params.
    spec = {"kernel": P("data", "model"), "bias": P("model")}
    shardings = {k: {n: NamedSharding(mesh, s) for n, s in spec.items()} for k in ref.params}
    template = make_state(seed=5, params=jax.device_put(init_params(5), shardings))
    restored = jc.io.restore(mngr, template)
    for leaf, t in zip(jax.tree.leaves(restored), jax.tree.leaves(template)):
        assert leaf.sharding.is_equivalent_to(t.sharding, t.ndim)
        assert leaf.dtype == t.dtype
    assert restored.params["Dense_0"]["kernel"].sharding.spec == P("data", "model")
    assert restored.opt_state[0].mu.params["Dense_1"]["kernel"].sharding.spec == P("data", "model")
    chex.assert_trees_all_equal(restored.params, ref.params)
    chex.assert_trees_all_equal(restored.opt_state, ref.opt_state)
    chex.assert_trees_all_equal(restored.compression, ref.compression)

    # A sharded checkpoint restores onto other shardings (each host writes its own shards).
    mngr2 = jc.io.checkpoint_manager(tmp_path / "sharded")
    jc.io.save(mngr2, STEPS, restored)
    for kernel_spec, bias_spec in [(P("model", "data"), P()), (P(None, "model"), P("model"))]:
        again = jc.io.restore(mngr2, abstract_sharded(kernel_spec, bias_spec))
        assert type(again) is jc.flax.TrainState
        for path, leaf in jc._src.paths.leaves_with_paths(again):
            if path != "step":
                assert leaf.sharding.spec == spec_of(path, leaf.ndim, kernel_spec, bias_spec)
        chex.assert_trees_all_equal(again.params, ref.params)
        chex.assert_trees_all_equal(again.compression, ref.compression)

    # Training continues on the mesh (the uncommitted step counter follows the params).
    assert not again.step.committed
    cont = linen_step(again, *batch(STEPS))
    ref_cont = linen_step(ref, *batch(STEPS))
    chex.assert_trees_all_close(cont.params, ref_cont.params, rtol=1e-5, atol=1e-6)
    assert cont.params["Dense_1"]["kernel"].sharding.spec == P(None, "model")
    mngr.close()
    mngr2.close()


def test_steps_keeping_and_interval(tmp_path):
    mngr = jc.io.checkpoint_manager(tmp_path / "a", max_to_keep=2)
    assert jc.io.latest_step(mngr) is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        jc.io.restore(mngr, {"w": jnp.zeros(2)})
    for s in range(5):
        assert jc.io.save(mngr, s, {"w": jnp.full(2, float(s))})
    assert list(mngr.all_steps()) == [3, 4]
    assert jc.io.latest_step(mngr) == 4
    assert float(jc.io.restore(mngr, {"w": jnp.zeros(2)})["w"][0]) == 4.0
    assert float(jc.io.restore(mngr, {"w": jnp.zeros(2)}, step=3)["w"][0]) == 3.0
    with pytest.raises(FileNotFoundError, match=r"no step 1 .*saved steps: \[3, 4\]"):
        jc.io.restore(mngr, {"w": jnp.zeros(2)}, step=1)
    with pytest.raises(ValueError, match="step 4 is already saved"):
        jc.io.save(mngr, 4, {"w": jnp.zeros(2)})
    assert jc.io.restore_extra(mngr) is None
    mngr.close()

    mngr = jc.io.checkpoint_manager(tmp_path / "b", save_interval_steps=2, async_save=True)
    assert jc.io.save(mngr, 0, {"w": jnp.ones(2)})
    assert not jc.io.save(mngr, 1, {"w": jnp.ones(2)})
    assert jc.io.save(mngr, 3, {"w": jnp.full(2, 3.0)}, force=True)
    assert jc.io.latest_step(mngr) == 3  # waits for the asynchronous write
    assert float(jc.io.restore(mngr, {"w": jnp.zeros(2)})["w"][0]) == 3.0
    mngr.close()


def test_disk_and_logical_bytes(tmp_path):
    mngr = jc.io.checkpoint_manager(tmp_path)
    zeros = {"w": jnp.zeros((256, 256)), "m": jnp.zeros((256, 256), bool)}
    jc.io.save(mngr, 0, zeros)
    logical = jc.io.logical_bytes(zeros)
    assert logical == 256 * 256 * 4 + 256 * 256
    step_dir = jc.io.step_directory(mngr, 0)
    assert step_dir.name == "0" and step_dir.is_dir()
    disk = jc.io.disk_bytes(mngr)
    assert disk == jc.io.disk_bytes(step_dir) == jc.io.disk_bytes(mngr, 0)
    assert 0 < disk < logical / 8  # zeros compress
    noise = {"w": jax.random.normal(jax.random.key(0), (256, 256))}
    jc.io.save(mngr, 1, noise)
    assert jc.io.disk_bytes(mngr, 1) > 0.8 * jc.io.logical_bytes(noise)  # noise does not
    assert jc.io.disk_bytes(tmp_path) >= jc.io.disk_bytes(mngr, 0) + jc.io.disk_bytes(mngr, 1)
    # A train state: every data field counts.
    state = make_state()
    expected = sum(
        np.asarray(x).nbytes
        for x in jax.tree.leaves((state.step, state.params, state.opt_state, state.compression))
    )
    assert jc.io.logical_bytes(state) == expected
    assert jc.io.logical_bytes({"k": jax.random.key(0), "step": 3}) == 8 + 8
    with pytest.raises(FileNotFoundError):
        jc.io.disk_bytes(tmp_path / "missing")
    with pytest.raises(ValueError, match="only meaningful with a CheckpointManager"):
        jc.io.disk_bytes(tmp_path, 0)
    mngr.close()


def test_bad_input_is_rejected_clearly(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep must be an integer >= 1 or None, got 0"):
        jc.io.checkpoint_manager(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="save_interval_steps"):
        jc.io.checkpoint_manager(tmp_path, save_interval_steps=0)
    mngr = jc.io.checkpoint_manager(tmp_path)
    with pytest.raises(TypeError, match="CheckpointManager"):
        jc.io.save(str(tmp_path), 0, {"w": jnp.ones(1)})
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        jc.io.save(mngr, -1, {"w": jnp.ones(1)})
    with pytest.raises(ValueError, match=r"leaf .cfg/fn. is a builtin_function_or_method"):
        jc.io.save(mngr, 0, {"w": jnp.ones(1), "cfg": {"fn": len}})
    with pytest.raises(TypeError, match="JSON-serializable"):
        jc.io.save(mngr, 0, {"w": jnp.ones(1)}, extra={"x": jnp.ones(1)})
    assert mngr.all_steps() == []  # nothing half-written
    jc.io.save(mngr, 0, {"w": jnp.ones(1)}, extra={"epoch": 1})
    with pytest.raises(ValueError, match="v"):
        jc.io.restore(mngr, {"v": jnp.ones(1)})  # orbax names the differing paths
    with pytest.raises(ValueError, match=r"leaf 'w' is saved with shape \(1,\).*\(2,\)"):
        jc.io.restore(mngr, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="shape"):  # committed / sharded: orbax checks
        jc.io.restore(mngr, {"w": jax.device_put(jnp.ones(2), jax.devices()[0])})
    assert jc.io.restore_extra(mngr, 0) == {"epoch": 1}
    mngr.close()
