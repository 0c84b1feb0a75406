"""jc.lowrank: truncated SVD, energy rank, the rank-r Compressor, export and the Dense helper."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc

W = jax.random.normal(jax.random.key(0), (24, 16))
S = np.linalg.svd(np.asarray(W, np.float64), compute_uv=False)


@pytest.mark.parametrize("rank", [1, 4, 9, 16])
def test_svd_error_equals_discarded_singular_values(rank):
    f = jc.lowrank.factorize(W, rank)
    assert f.a.shape == (24, rank) and f.b.shape == (rank, 16)
    err = float(jnp.linalg.norm(W - f.a @ f.b))
    expected = float(np.sqrt(np.sum(S[rank:] ** 2)))
    np.testing.assert_allclose(err, expected, rtol=1e-4, atol=2e-5)
    # The factors split the singular values evenly.
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(f.a), axis=0), np.linalg.norm(np.asarray(f.b), axis=1), rtol=1e-4
    )


@pytest.mark.parametrize("energy", [0.3, 0.8, 0.99, 1.0])
def test_energy_rank_is_the_smallest_that_keeps_the_energy(energy):
    r = int(jc.lowrank.energy_rank(jnp.asarray(S, jnp.float32), energy))
    frac = np.cumsum(S**2) / np.sum(S**2)
    assert frac[r - 1] >= energy - 1e-6
    assert r == 1 or frac[r - 2] < energy
    assert jc.lowrank.factorize(W, energy=energy).a.shape[1] == r
    assert int(jc.lowrank.energy_rank(jnp.zeros(4), 0.5)) == 0


def test_max_saving_rank():
    for m, n in [(784, 512), (16, 16), (1, 9), (3, 5), (100, 1)]:
        r = jc.lowrank.max_saving_rank(m, n)
        assert jc.lowrank.saves_bytes(m, n, r) or r == 0
        assert not jc.lowrank.saves_bytes(m, n, r + 1)


def test_lowrank_dense_equals_reconstructed_dense_layer():
    x = jax.random.normal(jax.random.key(1), (5, 24))
    b = jnp.arange(16.0)
    f = jc.lowrank.factorize(W, 6)
    y = jax.jit(jc.lowrank.dense)(x, f, b)
    ref = x @ jc.lowrank.reconstruct(f) + b[None, :]
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # Dense kernels and no bias work too; batch dims are kept.
    y2 = jc.lowrank.dense(x[None], W)
    np.testing.assert_allclose(np.asarray(y2[0]), np.asarray(x @ W), rtol=1e-6, atol=1e-6)


PARAMS = {
    "Dense_0": {"kernel": jax.random.normal(jax.random.key(2), (32, 16))},
    "Dense_1": {"kernel": jax.random.normal(jax.random.key(3), (16, 48))},
    "Dense_2": {"kernel": jax.random.normal(jax.random.key(4), (8, 8))},
}
RANK3 = jc.lowrank.svd(rank=3)
RANK5_EVERY2 = jc.lowrank.svd(rank=5, update_every=2)
ENERGY = jc.lowrank.svd(energy=0.6)


@functools.cache
def _jit(comp):
    def step(params, state, grads):
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return comp.update(params, state, grads)

    return jax.jit(comp.init), jax.jit(comp.apply), jax.jit(step)


def _ranks(tree):
    return {
        k: int(np.linalg.matrix_rank(np.asarray(v["kernel"]), tol=1e-4)) for k, v in tree.items()
    }


def test_view_is_rank_r_and_dense_where_it_saves_nothing():
    init, apply, _ = _jit(RANK3)
    state = init(PARAMS)
    view = apply(PARAMS, state)
    # 8x8 at rank 3: 3 * 16 = 48 < 64 saves bytes; all three are factorized.
    assert _ranks(view) == {"Dense_0": 3, "Dense_1": 3, "Dense_2": 3}
    # The view is the best rank-3 approximation (Eckart-Young).
    f = jc.lowrank.factorize(PARAMS["Dense_0"]["kernel"], 3)
    np.testing.assert_allclose(
        np.asarray(view["Dense_0"]["kernel"]), np.asarray(f.a @ f.b), rtol=1e-4, atol=1e-4
    )
    # rank 5 on 8x8 (5 * 16 = 80 >= 64) saves nothing: that leaf stays dense.
    state5 = _jit(RANK5_EVERY2)[0](PARAMS)
    view5 = _jit(RANK5_EVERY2)[1](PARAMS, state5)
    np.testing.assert_array_equal(
        np.asarray(view5["Dense_2"]["kernel"]), PARAMS["Dense_2"]["kernel"]
    )
    rep = jc.lowrank.report(PARAMS, state5)
    rows = {r.path: r for r in rep.leaves}
    assert rows["Dense_2/kernel"].factorized is False
    assert "saves no bytes" in rows["Dense_2/kernel"].note
    assert rows["Dense_0/kernel"].factorized and rows["Dense_0/kernel"].bytes == 5 * 48 * 4
    assert "dense: rank >= m*n/(m+n) = 4.0 saves no bytes" in str(rep)
    assert rep.dense_bytes == (32 * 16 + 16 * 48 + 64) * 4


def test_gradient_is_straight_through():
    state = _jit(RANK3)[0](PARAMS)
    up = jax.tree.map(lambda p: jnp.full_like(p, 0.5), PARAMS)

    def loss(p):
        view = RANK3.apply(p, state)
        pairs = zip(jax.tree.leaves(view), jax.tree.leaves(up), strict=True)
        return sum(jnp.sum(v * u) for v, u in pairs)

    g = jax.jit(jax.grad(loss))(PARAMS)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(up), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_update_projects_params_on_schedule():
    init, apply, step = _jit(RANK5_EVERY2)
    state = init(PARAMS)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape), PARAMS)
    p1, state = step(PARAMS, state, grads)  # count 1: no refresh, params full rank
    assert _ranks(p1)["Dense_0"] == 16
    assert _ranks(apply(p1, state))["Dense_0"] == 5  # the view stays rank 5 between refreshes
    p2, state = step(p1, state, grads)  # count 2: SVD + projection of the stored params
    assert _ranks(p2) == {"Dense_0": 5, "Dense_1": 5, "Dense_2": 8}
    expect = jc.lowrank.factorize(p1["Dense_0"]["kernel"] - 0.1 * grads["Dense_0"]["kernel"], 5)
    np.testing.assert_allclose(
        np.asarray(p2["Dense_0"]["kernel"]), np.asarray(expect.a @ expect.b), rtol=1e-4, atol=1e-4
    )
    assert int(state.count) == 2


def test_energy_rank_per_leaf_and_export_factors():
    init, apply, _ = _jit(ENERGY)
    state = init(PARAMS)
    for name, leaf in PARAMS.items():
        s = np.linalg.svd(np.asarray(leaf["kernel"]), compute_uv=False)
        want = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), 0.6 - 1e-6) + 1)
        m, n = leaf["kernel"].shape
        got = int(state.rank[name]["kernel"])
        assert got == (want if jc.lowrank.saves_bytes(m, n, want) else min(m, n))
    comp = jc.rules([("Dense_0/kernel", ENERGY), (".*", None)])  # found inside nested states
    cstate = comp.init(PARAMS)
    ex = jc.lowrank.export(comp, PARAMS, cstate)
    view = jc.finalize(comp, PARAMS, cstate)
    assert not isinstance(ex["Dense_1"]["kernel"], jc.lowrank.Factors)
    x = jax.random.normal(jax.random.key(5), (3, 32))
    f = ex["Dense_0"]["kernel"]
    assert isinstance(f, jc.lowrank.Factors)
    assert f.a.shape[1] == int(state.rank["Dense_0"]["kernel"])
    np.testing.assert_allclose(
        np.asarray(jc.lowrank.dense(x, f)),
        np.asarray(x @ view["Dense_0"]["kernel"]),
        rtol=1e-4,
        atol=1e-4,
    )


def test_bfloat16_kernel():
    p = {"k": jax.random.normal(jax.random.key(6), (32, 16)).astype(jnp.bfloat16)}
    state = RANK3.init(p)
    view = RANK3.apply(p, state)["k"]
    assert view.dtype == jnp.bfloat16
    f = jc.lowrank.export(RANK3, p, state)["k"]
    assert f.a.dtype == jnp.bfloat16 and f.a.shape == (32, 3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one of rank= or energy="),
        ({"rank": 2, "energy": 0.5}, "exactly one of rank= or energy="),
        ({"rank": 0}, "rank must be an integer >= 1, got 0"),
        ({"energy": 1.5}, r"energy must be a number in \(0, 1\], got 1.5"),
        ({"energy": 0.0}, "energy must be"),
        ({"rank": 2, "update_every": 0}, "update_every must be an integer >= 1"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.lowrank.svd(**kwargs)


def test_bad_leaves_name_the_path():
    with pytest.raises(
        ValueError, match=r"rank=20 exceeds min\(m, n\)=16 for leaf 'Dense_0/kernel'"
    ):
        jc.lowrank.svd(rank=20).init({"Dense_0": {"kernel": jnp.ones((32, 16))}})
    with pytest.raises(ValueError, match=r"leaf 'Dense_0/bias' has shape \(16,\); only 2-D"):
        jc.lowrank.svd(rank=2).init({"Dense_0": {"bias": jnp.ones(16)}})
    with pytest.raises(ValueError, match=r"leaf 'conv' has shape \(3, 3, 4, 8\)"):
        jc.lowrank.svd(rank=2).init({"conv": jnp.ones((3, 3, 4, 8))})
    with pytest.raises(ValueError, match="'k' has dtype int32"):
        jc.lowrank.svd(rank=2).init({"k": jnp.ones((4, 4), jnp.int32)})
    with pytest.raises(ValueError, match=r"rank=9 exceeds min\(m, n\)=8"):
        jc.lowrank.factorize(jnp.ones((8, 9)), 9)
    with pytest.raises(ValueError, match="must be 2-D"):
        jc.lowrank.factorize(jnp.ones(8), 1)
