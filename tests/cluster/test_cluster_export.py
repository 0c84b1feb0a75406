"""Bit packing and the export of clustered leaves (packed indices + codebook + bitmask)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcompress as jc


@settings(max_examples=8, deadline=None)
@given(
    bits=st.sampled_from([1, 3, 5, 8, 11, 32]),
    n=st.sampled_from([0, 9, 40]),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_unpack_round_trip(bits, n, seed):
    values = np.random.default_rng(seed).integers(0, 2**bits, n, dtype=np.uint64).astype(np.uint32)
    packed = np.asarray(jc.cluster.pack_bits(values, bits))
    assert packed.dtype == np.uint8 and packed.size == math.ceil(n * bits / 8)
    np.testing.assert_array_equal(np.asarray(jc.cluster.unpack_bits(packed, bits, n)), values)


def test_pack_layout_is_little_endian():
    # 5-bit values 1, 2, 31: bits 10000 01000 11111 -> bytes 0b01000001, 0b01111100
    packed = jc.cluster.pack_bits(jnp.array([1, 2, 31]), 5).tolist()
    assert packed == [0b01000001, 0b01111100]
    mask = jnp.array([[True, False, True], [False, False, True]])
    assert jc.cluster.pack_mask(mask).tolist() == [0b100101]
    np.testing.assert_array_equal(np.asarray(jc.cluster.unpack_mask([0b100101], (2, 3))), mask)


def test_pack_errors():
    with pytest.raises(ValueError, match="bits must be an integer in 1..32, got 0"):
        jc.cluster.pack_bits(jnp.zeros(3), 0)
    with pytest.raises(ValueError, match="fewer than the 2 needed"):
        jc.cluster.unpack_bits(jnp.zeros(1, jnp.uint8), 5, 3)


def _params(sparsity=0.0, shape=(64, 32), seed=0):
    w = jax.random.normal(jax.random.key(seed), shape)
    if sparsity:
        w = jnp.where(jnp.abs(w) > jnp.quantile(jnp.abs(w), sparsity), w, 0.0)
    return {"Dense_0": {"kernel": w, "bias": jnp.linspace(-1.0, 1.0, shape[1])}}


COMP = jc.rules(
    [("Dense_0/kernel", jc.cluster.kmeans(32, init="linear", iters=5)), ("Dense_0/bias", None)]
)


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_export_decodes_to_the_forward_view(sparsity):
    params = _params(sparsity)
    state = jax.jit(COMP.init)(params)
    ex = jc.cluster.export(COMP, params, state)
    ca = ex["Dense_0"]["kernel"]
    assert isinstance(ca, jc.cluster.ClusteredArray)
    assert ca.bits == 5
    nnz = int(jnp.count_nonzero(params["Dense_0"]["kernel"]))
    if sparsity:
        # Bitmask + indices of the nonzeros only.
        assert ca.mask is not None and ca.mask.size == 64 * 32 // 8
        assert ca.num_indices == nnz
        assert ca.indices.size == math.ceil(nnz * 5 / 8)
    else:
        assert ca.mask is None
        assert ca.indices.size == 64 * 32 * 5 // 8
    assert ca.nbytes == ca.indices.size + 32 * 4 + (0 if ca.mask is None else ca.mask.size)
    # The unowned bias is the view itself; decode (jitted) gives the view exactly.
    view = jc.finalize(COMP, params, state)
    decoded = jax.jit(jc.cluster.decode)(ex)
    np.testing.assert_array_equal(
        np.asarray(decoded["Dense_0"]["kernel"]), view["Dense_0"]["kernel"]
    )
    np.testing.assert_array_equal(np.asarray(decoded["Dense_0"]["bias"]), params["Dense_0"]["bias"])


def test_export_per_channel_on_a_square_kernel_finds_the_axis():
    # One codebook per row of a square kernel: the export cannot tell the axis by shape.
    params = {"w": jax.random.normal(jax.random.key(1), (16, 16))}
    comp = jc.cluster.kmeans(3, init="linear", iters=3, per_channel=True, channel_axis=0)
    state = jax.jit(comp.init)(params)
    ca = jc.cluster.export(comp, params, state)["w"]
    assert ca.channel_axis == 0 and ca.codebook.shape == (16, 3) and ca.bits == 2
    view = comp.apply(params, state)["w"]
    assert max(np.unique(np.asarray(view)[i]).size for i in range(16)) <= 3
    np.testing.assert_array_equal(np.asarray(ca.decode()), view)


def test_export_before_at_step_keeps_the_leaf_dense_and_bf16():
    params = {"k": _params(0.5)["Dense_0"]["kernel"].astype(jnp.bfloat16)}
    comp = jc.cluster.kmeans(4, at_step=1, init="linear", iters=2)
    state = comp.init(params)  # at_step=1: no clustering yet
    ex = jc.cluster.export(comp, params, state)
    assert not isinstance(ex["k"], jc.cluster.ClusteredArray)
    _, state = jax.jit(comp.update)(params, state)
    ca = jc.cluster.export(comp, params, state)["k"]
    assert isinstance(ca, jc.cluster.ClusteredArray) and ca.dtype == "bfloat16"
    out = ca.decode()
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out), comp.apply(params, state)["k"])


def test_export_refuses_a_view_changed_after_kmeans():
    params = {"w": jax.random.normal(jax.random.key(2), (16, 8))}
    comp = jc.chain(jc.cluster.kmeans(4, init="linear", iters=3), jc.quant.qat(bits=2))
    with pytest.raises(ValueError, match="leaf 'w'.*a compressor chained after kmeans"):
        jc.cluster.export(comp, params, comp.init(params))
