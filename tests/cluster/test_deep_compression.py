"""The Deep Compression recipe end to end: prune -> share -> encode -> one file -> same outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc


def test_recipe_structure_and_schedule():
    comp = jc.cluster.deep_compression(
        [("Dense_0/kernel", 0.75), ("Dense_1/kernel", 0.5)], num_clusters=4, share_at=2
    )
    params = {
        "Dense_0": {"kernel": jax.random.normal(jax.random.key(0), (32, 16)), "bias": jnp.ones(16)},
        "Dense_1": {"kernel": jax.random.normal(jax.random.key(1), (16, 8)), "bias": jnp.ones(8)},
    }
    state = comp.init(params)
    s = {r.path: r for r in jc.summary(comp, params, state).leaves}
    assert s["Dense_0/kernel"].sparsity == 0.75 and s["Dense_0/kernel"].bits == 32
    assert s["Dense_1/kernel"].sparsity == 0.5
    assert s["Dense_0/bias"].bits == 32 and s["Dense_0/bias"].sparsity == 0.0
    step = jax.jit(comp.update)
    params, state = step(params, state)
    params, state = step(params, state)  # share_at=2: clustered now
    s = {r.path: r for r in jc.summary(comp, params, state).leaves}
    assert s["Dense_0/kernel"].bits == 2 and s["Dense_0/kernel"].sparsity == 0.75
    # 512 entries: 128 kept x 2 bits + a 512-bit mask.
    assert s["Dense_0/kernel"].logical_bytes == 128 * 2 // 8 + 512 // 8
    view = jc.finalize(comp, params, state)
    k0 = np.asarray(view["Dense_0"]["kernel"])
    assert np.unique(k0[k0 != 0]).size <= 4 and np.mean(k0 == 0) == 0.75
    np.testing.assert_array_equal(np.asarray(view["Dense_0"]["bias"]), 1.0)


def test_recipe_quantize_branch():
    comp = jc.cluster.deep_compression(0.5, num_clusters=None, bits=5)
    params = {"Dense_0": {"kernel": jax.random.normal(jax.random.key(2), (32, 16))}}
    state = comp.init(params)
    row = jc.summary(comp, params, state).leaves[0]
    assert (row.bits, row.sparsity) == (5, 0.5)
    info = jc.io.artifact_info(jc.io.encode_artifact(jc.finalize(comp, params, state)))
    assert (info.leaves[0].values, info.leaves[0].bits, info.leaves[0].layout) == (
        "grid",
        5,
        "sparse",
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clusters": 32, "bits": 5}, "exactly one of num_clusters= or bits="),
        ({"num_clusters": None}, "exactly one of num_clusters= or bits="),
        ({"num_clusters": None, "bits": 4, "share_at": 3}, "share_at applies to weight sharing"),
        ({"prune_at": 5, "share_at": 2}, "share_at must be an integer >= prune_at=5"),
        ({"sparsity": [("a", 0.5, 1)]}, "sparsity rule 0 must be a"),
        ({"sparsity": [("(", 0.5)]}, "does not compile"),
        ({"sparsity": 1.5}, r"sparsity must be in \[0, 1\)"),
        ({"num_clusters": 0}, "num_clusters must be an integer >= 1"),
    ],
)
def test_recipe_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.cluster.deep_compression(**kwargs)


def test_pipeline_on_digits_round_trips_to_the_same_outputs(tmp_path):
    """Train, prune 80% at step 40, share 16 values at step 70, fine-tune, save, load."""
    ds = jc.workloads.load_digits()
    model = jc.workloads.MLP((32, 10))
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    params = model.init(jax.random.key(0), x[:1])["params"]
    comp = jc.cluster.deep_compression(0.8, num_clusters=16, prune_at=40, share_at=70)
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-2), compressor=comp
    )

    @jax.jit
    def train_step(state, xb, yb):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.trainables))

    for i in range(100):
        sl = slice((i * 128) % 1152, (i * 128) % 1152 + 128)
        state = train_step(state, x[sl], y[sl])
    final = state.finalized_params()
    path = tmp_path / "digits.jca"
    info = jc.io.save_artifact(path, final)
    loaded = jc.io.load_artifact(path)
    xt = jnp.asarray(ds.x_test)
    out_final = model.apply({"params": final}, xt)
    out_loaded = model.apply({"params": loaded}, xt)
    np.testing.assert_array_equal(np.asarray(out_loaded), np.asarray(out_final))
    acc = float(jnp.mean(jnp.argmax(out_loaded, -1) == jnp.asarray(ds.y_test)))
    assert acc > 0.85
    rows = {r.path: r for r in info.leaves}
    assert rows["Dense_0/kernel"].layout == "sparse"
    assert rows["Dense_0/kernel"].values == "codebook" and rows["Dense_0/kernel"].bits <= 4
    assert rows["Dense_0/kernel"].nnz == round(0.2 * 64 * 32)
    assert info.ratio > 8  # <= 4-bit shared values of 20% of the kernels, biases in float32
