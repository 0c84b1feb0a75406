"""jc.io artifacts: lossless round trips, codec choice per leaf, sizes, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


def _bits_equal(a, b):
    """Bit-for-bit equality, except that the artifact stores -0.0 as 0.0."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    if jnp.issubdtype(b.dtype, jnp.floating):
        b = np.where(b == 0, np.zeros((), b.dtype), b)
    np.testing.assert_array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))


def _tree_bits_equal(x, y):
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        _bits_equal(a, b)


def _pruned(key, shape, sparsity):
    w = jax.random.normal(jax.random.key(key), shape)
    return jnp.where(jnp.abs(w) > jnp.quantile(jnp.abs(w), sparsity), w, 0.0)


@pytest.mark.parametrize("codec", ["lzma", "zlib", "none"])
def test_round_trip_is_exact_for_mixed_leaves(codec):
    tree = {
        "f32": jax.random.normal(jax.random.key(0), (16, 8)),
        "bf16": jax.random.normal(jax.random.key(1), (4, 8)).astype(jnp.bfloat16),
        "f16_sparse": _pruned(2, (8, 8), 0.7).astype(jnp.float16),
        "i32": jnp.arange(12, dtype=jnp.int32).reshape(3, 4),
        "bool": jnp.array([True, False, True]),
        "scalar": jnp.float32(3.5),
        "empty": jnp.zeros((0, 4)),
        "nan_inf": jnp.array([[jnp.nan, jnp.inf], [-jnp.inf, 1.0]]),
        "nested": [jnp.ones((2, 2)), {"x": jnp.full((3,), -2.0)}],
    }
    data = jc.io.encode_artifact(tree, codec=codec)
    back = jc.io.decode_artifact(data, like=tree)
    _tree_bits_equal(back, tree)
    info = jc.io.artifact_info(data)
    assert info.codec == codec and info.file_bytes == len(data)
    assert [r.path for r in info.leaves] == [
        "bf16", "bool", "empty", "f16_sparse", "f32", "i32", "nan_inf", "nested/0", "nested/1/x",
        "scalar",
    ]  # fmt: skip


def test_negative_zero_loads_as_zero():
    x = jnp.array([[-0.0, 1.0], [0.0, -1.0]])
    back = jc.io.decode_artifact(jc.io.encode_artifact({"w": x}))["w"]
    np.testing.assert_array_equal(np.signbit(np.asarray(back)), [[False, False], [False, True]])
    np.testing.assert_array_equal(np.asarray(back), np.asarray(x))


def _views(seed=0):
    """Compressed views built directly: shared values with pruning, a 4-bit grid, codebooks."""
    rng = np.random.default_rng(seed)
    book = np.sort(rng.normal(size=16)).astype(np.float32)
    shared = book[rng.integers(0, 16, (64, 32))]
    shared[rng.random((64, 32)) < 0.9] = 0.0  # 90% pruned
    w = jax.random.normal(jax.random.key(seed), (64, 32))
    q4 = jc.quant.qat(bits=4)
    quant = q4.apply({"w": w}, q4.init({"w": w}))["w"]  # per-channel symmetric grid
    books = rng.normal(size=(32, 4)).astype(np.float32)
    per_ch = books[np.arange(32)[None, :], rng.integers(0, 4, (64, 32))]
    return {
        "shared": jnp.asarray(shared),
        "quant": quant,
        "per_ch": jnp.asarray(per_ch),
        "bias": jnp.linspace(-1.0, 1.0, 32),
    }


def test_codec_per_leaf_and_logical_bytes():
    view = _views()
    data = jc.io.encode_artifact(view)
    _tree_bits_equal(jc.io.decode_artifact(data), view)
    rows = {r.path: r for r in jc.io.artifact_info(data).leaves}
    shared = np.asarray(view["shared"])
    nnz = int(np.count_nonzero(shared))
    k = np.unique(shared[shared != 0]).size
    r = rows["shared"]
    assert (r.layout, r.values, r.codebook_size, r.nnz) == ("sparse", "codebook", k, nnz)
    assert r.bits == 4 and 8 < k <= 16
    # bitmask + float32 codebook + 4-bit indices of the nonzeros
    assert r.logical_bytes == 2048 // 8 + k * 4 + math.ceil(nnz * 4 / 8)
    r = rows["quant"]
    assert (r.values, r.bits, r.per_channel) == ("grid", 4, True)
    assert r.logical_bytes == 32 * 4 + 2048 * 4 // 8 + (256 if r.layout == "sparse" else 0)
    r = rows["per_ch"]
    assert (r.values, r.per_channel, r.codebook_size, r.bits) == ("codebook", True, 4, 2)
    assert r.logical_bytes == 32 * 4 * 4 + 2048 * 2 // 8
    r = rows["bias"]
    assert (r.layout, r.values, r.logical_bytes) == ("dense", "raw", 128)
    info = jc.io.artifact_info(data)
    assert info.logical_bytes == sum(x.logical_bytes for x in rows.values())
    assert info.float32_bytes == (3 * 2048 + 32) * 4
    assert "sparse" in str(info) and "x smaller" in str(info)


def test_entropy_coding_shrinks_the_file():
    rng = np.random.default_rng(1)
    book = np.sort(rng.normal(size=32)).astype(np.float32)
    w = book[rng.binomial(31, 0.5, (256, 128))]  # bell-shaped use of the centroids
    w[rng.random(w.shape) < 0.9] = 0.0
    data = {c: jc.io.encode_artifact({"w": jnp.asarray(w)}, codec=c) for c in jc.io.CODECS}
    sizes = {c: len(d) for c, d in data.items()}
    assert sizes["lzma"] < sizes["zlib"] < sizes["none"]
    # Below the logical size (packed 5-bit indices + bitmask): the symbols' entropy is < 5 bits.
    info = jc.io.artifact_info(data["lzma"])
    assert info.file_bytes < 0.85 * info.logical_bytes
    for d in data.values():
        _tree_bits_equal(jc.io.decode_artifact(d), {"w": jnp.asarray(w)})


def test_save_load_file_and_like(tmp_path):
    params = {"Dense_0": {"kernel": _pruned(4, (16, 8), 0.5), "bias": jnp.ones(8)}}
    path = tmp_path / "model.jca"
    info = jc.io.save_artifact(path, params)
    assert path.stat().st_size == info.file_bytes
    assert not (tmp_path / "model.jca.tmp").exists()
    _tree_bits_equal(jc.io.load_artifact(path), params)
    assert jc.io.artifact_info(path).file_bytes == info.file_bytes
    # Restored into another container structure with the same paths.
    like = {"Dense_0": {"kernel": 0, "bias": 0}}
    out = jc.io.load_artifact(path, like=like)
    assert set(out["Dense_0"]) == {"kernel", "bias"}
    with pytest.raises(ValueError, match="`like` has leaf paths"):
        jc.io.load_artifact(path, like={"other": 0})


def test_lowrank_factors_travel_with_like():
    comp = jc.lowrank.svd(rank=2)
    params = {"k": jax.random.normal(jax.random.key(5), (16, 8))}
    factors = jc.lowrank.export(comp, params, comp.init(params))
    back = jc.io.decode_artifact(jc.io.encode_artifact(factors), like=factors)
    assert isinstance(back["k"], jc.lowrank.Factors)
    _tree_bits_equal(back, factors)


def test_bad_input_and_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="codec must be one of"):
        jc.io.encode_artifact({"w": jnp.ones(2)}, codec="brotli")
    with pytest.raises(ValueError, match="leaf 'w' is not an array"):
        jc.io.encode_artifact({"w": "hello"})
    data = jc.io.encode_artifact({"w": jnp.arange(100.0)})
    with pytest.raises(ValueError, match="bad magic"):
        jc.io.decode_artifact(b"PK" + data[2:])
    with pytest.raises(ValueError, match="corrupt artifact"):
        jc.io.decode_artifact(data[:-10])
    with pytest.raises(ValueError, match="corrupt artifact"):
        jc.io.decode_artifact(data[:20] + bytes(len(data) - 20))
    with pytest.raises(FileNotFoundError):
        jc.io.load_artifact(tmp_path / "missing.jca")
