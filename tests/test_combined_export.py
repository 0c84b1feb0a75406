"""Pruning and quantization exported together: a 75%-pruned, 4-bit kernel is stored as a
bitmask plus 4-bit integer codes of the kept entries (and per-channel scales), round-trips
bit-exactly, and the byte counts of jc.summary and jc.io agree."""

import math

import jax
import jax.numpy as jnp
import numpy as np

import jaxcompress as jc


def test_pruned_int4_kernel_exports_as_bitmask_plus_packed_codes(tmp_path):
    params = {
        "Dense_0": {
            "kernel": jax.random.normal(jax.random.key(0), (64, 32)),
            "bias": jnp.linspace(-1.0, 1.0, 32),
        }
    }
    comp = jc.rules(
        [(".*/kernel", jc.chain(jc.prune.magnitude(0.75), jc.quant.qat(bits=4))), (".*", None)]
    )
    state = jax.jit(comp.init)(params)
    view = jc.finalize(comp, params, state)
    kernel = np.asarray(view["Dense_0"]["kernel"])
    nnz = int(np.count_nonzero(kernel))
    assert nnz == 64 * 32 // 4  # exact sparsity
    # every kept value is on the 4-bit per-channel grid: |w / s| is an integer in [1, 7]
    scale = np.abs(kernel).max(axis=0) / 7
    codes = kernel / scale
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
    assert np.abs(np.round(codes)).max() <= 7

    rows = jc.summary(comp, params, state)
    krow = next(r for r in rows.leaves if r.path == "Dense_0/kernel")
    assert (krow.bits, krow.sparsity) == (4, 0.75)
    assert krow.logical_bytes == 64 * 32 // 8 + math.ceil(nnz * 4 / 8)  # bitmask + codes

    info = jc.io.save_artifact(tmp_path / "model.jca", view)
    leaf = next(r for r in info.leaves if r.path == "Dense_0/kernel")
    assert (leaf.layout, leaf.values, leaf.bits, leaf.nnz) == ("sparse", "grid", 4, nnz)
    # the artifact adds only the per-channel float32 scales to what summary counts
    assert leaf.logical_bytes == krow.logical_bytes + 32 * 4
    back = jc.io.load_artifact(tmp_path / "model.jca", like=view)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), back, view
    )

    # the sparse export of the pruning family carries the same bitmask and kept values
    sp = jc.prune.export(view, state)["Dense_0"]["kernel"]
    assert sp.nbytes == 64 * 32 // 8 + nnz * 4
    np.testing.assert_array_equal(np.asarray(jc.prune.densify(sp)), kernel)
