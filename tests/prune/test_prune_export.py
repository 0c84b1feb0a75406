"""Sparse export: bitmask + values, exact round trip, real bytes, BCOO, encoded values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


def make_params():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(13, 7)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(7,)), jnp.float32),
        },
        "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(7, 5)), jnp.bfloat16)},
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.int8])
def test_round_trip_is_bit_exact(dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(9, 11)) * 50, dtype)
    mask = jnp.asarray(rng.uniform(size=(9, 11)) < 0.3)
    sp = jc.prune.sparsify(x, mask)
    assert sp.values.shape == (int(mask.sum()),) and sp.bitmask.shape == (math.ceil(99 / 8),)
    assert sp.nnz == int(mask.sum())
    np.testing.assert_array_equal(np.asarray(jc.prune.mask_of(sp)), np.asarray(mask))
    back = jax.jit(jc.prune.densify)(sp)
    assert back.dtype == x.dtype
    want = jnp.where(mask, x, jnp.zeros_like(x))
    np.testing.assert_array_equal(
        np.asarray(back).view(np.uint8), np.asarray(want).view(np.uint8)
    )  # bit for bit


def test_bitmask_layout_is_packbits_row_major():
    x = jnp.arange(1.0, 11.0).reshape(2, 5)
    mask = jnp.array([[1, 0, 0, 0, 0], [0, 0, 0, 1, 1]], bool)
    sp = jc.prune.sparsify(x, mask)
    assert sp.bitmask.tolist() == [0b10000000, 0b11000000]
    assert sp.values.tolist() == [1.0, 9.0, 10.0]


def test_export_of_a_pruned_model_and_summary_bytes():
    params = make_params()
    comp = jc.rules([(".*/kernel", jc.prune.magnitude(0.75)), (".*", None)])
    state = jax.jit(comp.init)(params)
    params = comp.apply(params, state)  # what update stores: zeros where pruned
    exported = jc.prune.export(params, state)
    assert isinstance(exported["Dense_0"]["kernel"], jc.prune.SparseArray)
    assert not isinstance(exported["Dense_0"]["bias"], jc.prune.SparseArray)
    k0 = exported["Dense_0"]["kernel"]
    assert k0.nnz == 91 - int(0.75 * 91) and k0.values.dtype == jnp.float32
    assert exported["Dense_1"]["kernel"].values.dtype == jnp.bfloat16
    # Real bytes of the export == logical bytes jc.summary reports for the same state.
    assert jc.prune.nbytes(exported) == jc.summary(comp, params, state).logical_bytes
    restored = jc.prune.restore(exported)
    jax.tree.map(np.testing.assert_array_equal, restored, jc.finalize(comp, params, state))


def test_export_inside_chain_and_masks_helper():
    params = make_params()
    comp = jc.chain(
        jc.rules([("Dense_0/kernel", jc.prune.magnitude(0.5)), (".*", None)]),
        jc.rules([(".*/kernel", jc.prune.magnitude(0.25)), (".*", None)]),
    )
    state = comp.init(params)
    m = jc.prune.masks(params, state)
    assert m["Dense_0"]["bias"] is None
    # both masks cover Dense_0/kernel; the second sees the first's zeros (the smallest |w|)
    # and prunes among them, so together they keep what the first keeps
    first = state.states[0].states[0].mask["Dense_0"]["kernel"]
    second = state.states[1].states[0].mask["Dense_0"]["kernel"]
    assert int(second.sum()) == 91 - int(0.25 * 91)
    np.testing.assert_array_equal(np.asarray(m["Dense_0"]["kernel"]), np.asarray(first & second))
    assert int(m["Dense_0"]["kernel"].sum()) == 91 - 45
    assert int(m["Dense_1"]["kernel"].sum()) == 35 - int(0.25 * 35)


def test_bcoo_round_trip():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(6, 4)) < 0.5).at[0, 0].set(True)
    x = x.at[0, 0].set(0.0)  # a kept zero stays a stored entry
    sp = jc.prune.sparsify(x, mask)
    mat = jc.prune.to_bcoo(sp)
    assert mat.nse == int(mask.sum())
    np.testing.assert_array_equal(np.asarray(mat.todense()), np.asarray(jnp.where(mask, x, 0)))
    back = jc.prune.from_bcoo(mat)
    np.testing.assert_array_equal(np.asarray(back.bitmask), np.asarray(sp.bitmask))
    np.testing.assert_array_equal(np.asarray(back.values), np.asarray(sp.values))
    # unsorted indices with a duplicate are summed and ordered
    from jax.experimental import sparse as jsparse

    m2 = jsparse.BCOO(
        (jnp.array([1.0, 2.0, 3.0]), jnp.array([[2, 1], [0, 3], [2, 1]])), shape=(3, 4)
    )
    sp2 = jc.prune.from_bcoo(m2)
    assert sp2.values.tolist() == [2.0, 4.0] and sp2.nnz == 2


def test_encoded_values_hook_for_quantized_codes():
    # Sparse + int4: the kept values are quantized codes packed two per byte by an encoder
    # (what a quantizer's packer provides); densify decodes them back.
    rng = np.random.default_rng(2)
    codes = jnp.asarray(rng.integers(-8, 8, size=(10, 6)), jnp.int8)
    mask = jnp.asarray(rng.uniform(size=(10, 6)) < 0.4)

    def pack4(v):
        v = np.asarray(v, np.int8).astype(np.uint8) & 0xF
        v = np.pad(v, (0, len(v) % 2))
        return jnp.asarray((v[0::2] << 4) | v[1::2], jnp.uint8)

    nnz = int(mask.sum())

    def unpack4(b):
        b = np.asarray(b, np.uint8)
        v = np.stack([b >> 4, b & 0xF], axis=1).reshape(-1)[:nnz].astype(np.int8)
        return jnp.asarray(np.where(v > 7, v - 16, v), jnp.int8)

    sp = jc.prune.sparsify(codes, mask, encode=pack4)
    assert sp.nbytes == math.ceil(60 / 8) + math.ceil(nnz / 2)
    back = jc.prune.densify(sp, decode=unpack4)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(jnp.where(mask, codes, 0)))


def test_sparsify_shape_mismatch():
    with pytest.raises(ValueError, match="mask shape"):
        jc.prune.sparsify(jnp.ones((2, 3)), jnp.ones((3, 2), bool))
