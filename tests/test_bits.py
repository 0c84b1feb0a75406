"""The shared bit packing (jaxcompress._src.bits): round trips, layout, NumPy == jax, errors."""

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcompress._src import bits as bits_lib

# One jitted function per (bits, bitorder): shapes vary only over a few sizes, so few compiles.
_PACK = {}
_UNPACK = {}


def _jit_pack(bits, order):
    key = (bits, order)
    if key not in _PACK:
        _PACK[key] = jax.jit(lambda v: bits_lib.pack(v, bits, bitorder=order))
        _UNPACK[key] = jax.jit(
            lambda p, n: bits_lib.unpack(p, bits, n, bitorder=order, dtype=jnp.uint32),
            static_argnums=1,
        )
    return _PACK[key], _UNPACK[key]


_WIDTHS = st.sampled_from([1, 2, 3, 4, 5, 8, 11, 16, 32])


@settings(max_examples=40, deadline=None)
@given(
    _WIDTHS, st.sampled_from(["little", "big"]), st.sampled_from([(1,), (7,), (3, 5)]), st.data()
)
def test_round_trip_numpy_and_jit(bits, order, shape, data):
    hi = 2**bits - 1
    values = data.draw(hnp.arrays(np.uint32, shape, elements=st.integers(0, hi)))
    packed_np = bits_lib.pack(values, bits, bitorder=order)
    assert isinstance(packed_np, np.ndarray) and packed_np.dtype == np.uint8
    assert packed_np.shape == (*shape[:-1], math.ceil(shape[-1] * bits / 8))
    back = bits_lib.unpack(packed_np, bits, shape[-1], bitorder=order)
    assert isinstance(back, np.ndarray) and back.dtype == bits_lib.value_dtype(bits)
    np.testing.assert_array_equal(back, values)
    # The jitted jax.numpy path gives the same bytes and the same values back.
    pack, unpack = _jit_pack(bits, order)
    packed_jax = pack(jnp.asarray(values))
    np.testing.assert_array_equal(np.asarray(packed_jax), packed_np)
    np.testing.assert_array_equal(np.asarray(unpack(packed_jax, shape[-1])), values)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["little", "big"]), hnp.arrays(np.bool_, st.sampled_from([(9,), (2, 3)])))
def test_mask_round_trip(order, mask):
    packed = bits_lib.pack_mask(mask, bitorder=order)
    assert packed.shape == (math.ceil(mask.size / 8),)
    np.testing.assert_array_equal(np.packbits(mask.reshape(-1), bitorder=order), packed)
    np.testing.assert_array_equal(bits_lib.unpack_mask(packed, mask.shape, bitorder=order), mask)


def test_layout_little_and_big():
    # 5-bit values 1, 2, 31: stream 10000 01000 11111 (LSB first).
    assert bits_lib.pack(np.array([1, 2, 31]), 5).tolist() == [0b01000001, 0b01111100]
    assert bits_lib.pack(np.array([1, 0, 1, 1]), 1, bitorder="big").tolist() == [0b10110000]
    assert bits_lib.pack(np.array([0xA, 0x3]), 4).tolist() == [0x3A]
    # 8 bits, little order: the bytes are the values.
    assert bits_lib.pack(np.array([7, 255]), 8).tolist() == [7, 255]
    # 32 bits round trip at the extremes.
    v = np.array([0, 1, 2**31, 2**32 - 1], np.uint32)
    np.testing.assert_array_equal(bits_lib.unpack(bits_lib.pack(v, 32), 32, 4), v)


def test_batched_rows_pack_independently():
    v = np.array([[1, 2, 3], [3, 0, 1]])
    rows = bits_lib.pack(v, 2)
    assert rows.shape == (2, 1)
    np.testing.assert_array_equal(rows[1], bits_lib.pack(v[1], 2))


@pytest.mark.parametrize("bits", [0, 33, 2.0, True])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match="bits must be an integer in 1..32"):
        bits_lib.pack(np.zeros(3, np.uint8), bits)


def test_bad_input():
    with pytest.raises(ValueError, match="bitorder"):
        bits_lib.pack(np.zeros(3, np.uint8), 2, bitorder="middle")
    with pytest.raises(ValueError, match="fewer than the 2 needed for 3 values of 5 bits"):
        bits_lib.unpack(np.zeros(1, np.uint8), 5, 3)
    with pytest.raises(ValueError, match="at least one axis"):
        bits_lib.pack(np.uint8(3), 2)
