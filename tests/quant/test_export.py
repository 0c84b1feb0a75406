"""Export: QArray, bit packing, quantize/dequantize == training forward, nesting, orbax."""

import dataclasses

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

W = jax.random.normal(jax.random.key(0), (32, 16))
PARAMS = {"Dense_0": {"kernel": W, "bias": jnp.linspace(-1, 1, 16)}, "Dense_1": {"kernel": W[:16]}}

_PACK = {b: jax.jit(lambda c, b=b: jc.quant.pack(c, b)) for b in range(1, 9)}
_UNPACK = {
    b: jax.jit(lambda p, n, b=b: jc.quant.unpack(p, b, n), static_argnums=1) for b in range(1, 9)
}


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.sampled_from([1, 7, 37]), st.data())
def test_packing_round_trips_for_every_bit_width(bits, n, data):
    codes = data.draw(hnp.arrays(np.uint8, (n,), elements=st.integers(0, 2**bits - 1)))
    packed = _PACK[bits](jnp.asarray(codes))
    assert packed.dtype == jnp.uint8 and packed.size == -(-n * bits // 8)
    np.testing.assert_array_equal(np.asarray(_UNPACK[bits](packed, n)), codes)


def test_pack_is_dense_little_endian():
    assert jc.quant.pack(jnp.array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10001101, 1]
    assert jc.quant.pack(jnp.array([0xA, 0x3]), 4).tolist() == [0x3A]


CONFIGS = {
    "int8": dict(bits=8),
    "int8_asym": dict(bits=8, symmetric=False),
    "int4_group": dict(bits=4, group_size=8),
    "int3_tensor": dict(bits=3, channel_axis=None),
    "int2_lsq": dict(bits=2, learn_scale=True),
    "int1_asym": dict(bits=1, symmetric=False),
    "binary": dict(bits="binary"),
    "ternary": dict(bits="ternary"),
    "int6_percentile": dict(bits=6, calibration="percentile", percentile=99.0),
}


_CASES = [(n, jnp.float32) for n in CONFIGS] + [
    (n, jnp.bfloat16) for n in ("int8", "int4_group", "binary", "ternary")
]


@pytest.mark.parametrize("name,dtype", _CASES, ids=[f"{n}-{jnp.dtype(d).name}" for n, d in _CASES])
def test_export_equals_training_forward(name, dtype):
    params = jax.tree.map(lambda x: x.astype(dtype), PARAMS)
    comp = jc.rules([(".*/kernel", jc.quant.qat(**CONFIGS[name])), (".*", None)])
    state = jax.jit(comp.init)(params)
    view = jax.jit(comp.apply)(params, state)
    qp = jc.quant.quantize(params, state, comp)
    # float weights are not kept: kernels are QArrays holding integers only
    k = qp["Dense_0"]["kernel"]
    assert isinstance(k, jc.quant.QArray)
    assert k.values.dtype in (jnp.int8, jnp.uint8)
    bits = int(state.states[0].bits["Dense_0"]["kernel"])
    assert k.bits == bits and k.nbytes == -(-W.size * bits // 8)
    assert qp["Dense_0"]["bias"] is params["Dense_0"]["bias"]
    dq = jax.jit(jc.quant.dequantize)(qp)
    chex.assert_trees_all_equal_shapes_and_dtypes(dq, params)
    chex.assert_trees_all_equal(dq, view)  # bit-exact


def test_levels_are_the_integers_of_the_grid():
    comp = jc.quant.qat(bits=4)
    qp = jc.quant.quantize({"w": W}, comp.init({"w": W}), comp)
    q = np.asarray(qp["w"].levels())
    assert (
        q.min() >= -7 and q.max() <= 7 and set(np.abs(q[np.argmax(np.abs(W), 0), range(16)])) == {7}
    )


def test_nested_chain_prune_then_quant_exports_zeros():
    comp = jc.rules(
        [(".*/kernel", jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=4))), (".*", None)]
    )
    state = jax.jit(comp.init)(PARAMS)
    qp = jc.quant.quantize(PARAMS, state, comp)
    mask = state.states[0].states[0].mask["Dense_0"]["kernel"]
    q = qp["Dense_0"]["kernel"].levels()
    assert int(jnp.sum(q == 0)) >= W.size // 2
    assert bool(jnp.all(jnp.where(mask, True, q == 0)))
    view = jc.finalize(comp, PARAMS, state)
    chex.assert_trees_all_equal(jc.quant.dequantize(qp), view)
    # the finalized view gives the same export
    chex.assert_trees_all_equal(jc.quant.quantize(view, state), qp)


def test_quantize_lone_qat_from_stored_params_equals_from_view():
    comp = jc.quant.qat(bits=3, symmetric=False)
    state = comp.init({"w": W})
    a = jc.quant.quantize({"w": W}, state)
    b = jc.quant.quantize({"w": W}, state, comp)
    chex.assert_trees_all_equal(a, b)


def test_quantize_errors():
    with pytest.raises(ValueError, match="no jc.quant.qat state"):
        jc.quant.quantize({"w": W}, jc.identity().init({"w": W}))
    comp = jc.quant.qat(bits=8)
    state = comp.init({"w": W})
    with pytest.raises(ValueError, match="'w'.*non-finite"):
        jc.quant.quantize({"w": W.at[0, 0].set(jnp.nan)}, state)


def test_qarray_is_a_pytree_that_jits_and_shards():
    comp = jc.quant.qat(bits=4, group_size=8)
    state = comp.init({"w": W})
    qp = jax.jit(jc.quant.quantize)({"w": W}, state)  # static bit widths: jittable
    leaves, treedef = jax.tree.flatten(qp)
    assert len(leaves) == 2  # values, scale (no zero point)
    if len(jax.devices()) >= 8:
        mesh = Mesh(np.array(jax.devices()[:8]), ("x",))
        q = qp["w"]
        sharded = {
            "w": dataclasses.replace(
                q,
                values=jax.device_put(q.values, NamedSharding(mesh, P("x"))),
                scale=jax.device_put(q.scale, NamedSharding(mesh, P())),
            )
        }
        assert len(sharded["w"].values.sharding.device_set) == 8
        np.testing.assert_array_equal(
            np.asarray(jax.jit(jc.quant.dequantize)(sharded)["w"]),
            np.asarray(jc.quant.dequantize(qp)["w"]),
        )


def test_orbax_save_and_load_round_trip(tmp_path):
    comp = jc.rules(
        [
            ("Dense_0/kernel", jc.quant.qat(bits=4, symmetric=False)),
            ("Dense_1/kernel", jc.quant.qat(bits=8)),
            (".*", None),
        ]
    )
    state = comp.init(PARAMS)
    qp = jc.quant.quantize(PARAMS, state, comp)
    jc.quant.save(tmp_path / "q", qp)
    back = jc.quant.load(tmp_path / "q")
    assert jax.tree.structure(back) == jax.tree.structure(qp)
    chex.assert_trees_all_equal(back, qp)
    with pytest.raises(ValueError, match="already exists"):
        jc.quant.save(tmp_path / "q", qp)
    with pytest.raises(ValueError, match="tree of dicts"):
        jc.quant.save(tmp_path / "r", [qp])


def test_ptq_with_mse_and_rules():
    comp = jc.rules([(".*/kernel", jc.quant.qat(bits=4, calibration="mse")), (".*", None)])
    qp = jc.quant.ptq(PARAMS, comp)
    assert isinstance(qp["Dense_1"]["kernel"], jc.quant.QArray)
    qp2 = jc.quant.ptq({"w": W}, bits=2, calibration="percentile", percentile=99.0)
    assert qp2["w"].bits == 2
    with pytest.raises(ValueError, match="either"):
        jc.quant.ptq(PARAMS, comp, bits=4)
