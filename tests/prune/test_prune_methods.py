"""The pruning methods: exact counts, scope, distributions, schedules, criteria, structure."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


def normal(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def make_params(seed=0, scale1=1.0):
    return {
        "Dense_0": {"kernel": normal(seed, (32, 16)), "bias": normal(seed + 1, (16,))},
        "Dense_1": {"kernel": normal(seed + 2, (16, 8), scale1), "bias": normal(seed + 3, (8,))},
    }


def random_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(
        treedef, [normal(seed * 100 + i, x.shape) for i, x in enumerate(leaves)]
    )


KERNELS = [("Dense_0", "kernel"), ("Dense_1", "kernel")]


def kernels_only(comp):
    return jc.rules([(".*/kernel", comp), (".*", None)])


def inner(state):
    return state.states[0]


def kept(x):
    return int(np.asarray(x).sum())


def top_abs_mask(x, k):
    """Reference: k largest |x|, ties by position (stable sort on the host)."""
    a = np.abs(np.asarray(x, np.float32)).ravel()
    order = np.lexsort((np.arange(a.size), -a))
    m = np.zeros(a.size, bool)
    m[order[:k]] = True
    return m.reshape(np.shape(x))


def test_layerwise_magnitude_exact():
    params = make_params()
    comp = kernels_only(jc.prune.magnitude(0.7))
    state = jax.jit(comp.init)(params)
    for layer, leaf in KERNELS:
        w = params[layer][leaf]
        m = inner(state).mask[layer][leaf]
        n = w.size
        assert kept(m) == n - math.floor(0.7 * n)
        np.testing.assert_array_equal(np.asarray(m), top_abs_mask(w, n - math.floor(0.7 * n)))
    assert inner(state).mask["Dense_0"]["bias"] is None


def test_global_scope_one_threshold_across_layers():
    params = make_params(scale1=10.0)  # Dense_1 weights are 10x larger
    glob = jax.jit(kernels_only(jc.prune.magnitude(0.7, scope="global")).init)(params)
    layer = jax.jit(kernels_only(jc.prune.magnitude(0.7)).init)(params)
    gm = [inner(glob).mask[a][b] for a, b in KERNELS]
    lm = [inner(layer).mask[a][b] for a, b in KERNELS]
    total = sum(params[a][b].size for a, b in KERNELS)
    assert sum(kept(m) for m in gm) == total - math.floor(0.7 * total)
    # One threshold: every kept |w| is >= every pruned |w|, over both layers.
    ws = [np.abs(np.asarray(params[a][b])) for a, b in KERNELS]
    kept_min = min(w[np.asarray(m)].min() for w, m in zip(ws, gm, strict=True))
    pruned_max = max(w[~np.asarray(m)].max() for w, m in zip(ws, gm, strict=True))
    assert kept_min >= pruned_max
    # ... so the layer with large weights keeps more than its layer-wise share.
    assert kept(gm[1]) > kept(lm[1]) and kept(gm[0]) < kept(lm[0])
    np.testing.assert_array_equal(
        np.asarray(gm[1]).sum(), min(params["Dense_1"]["kernel"].size, kept(gm[1]))
    )


def test_erk_and_explicit_map_distributions():
    params = make_params()
    shapes = [params[a][b].shape for a, b in KERNELS]
    erk = jc.prune.erk_sparsities(shapes, 0.8)
    st = jax.jit(kernels_only(jc.prune.magnitude(0.8, distribution="erk")).init)(params)
    for (a, b), s in zip(KERNELS, erk, strict=True):
        n = params[a][b].size
        assert kept(inner(st).mask[a][b]) == n - int(s * n)
    assert erk[0] > erk[1]  # the larger layer is pruned more
    # Kept-weight budget matches the overall target (up to rounding per layer).
    total = sum(math.prod(s) for s in shapes)
    assert abs(sum(kept(inner(st).mask[a][b]) for a, b in KERNELS) - 0.2 * total) <= len(shapes)

    comp = kernels_only(jc.prune.magnitude({"Dense_0/.*": 0.25, "Dense_1/kernel": 0.5}))
    st = comp.init(params)
    assert kept(inner(st).mask["Dense_0"]["kernel"]) == 512 - 128
    assert kept(inner(st).mask["Dense_1"]["kernel"]) == 64


def test_schedule_masks_change_only_on_update_steps():
    params = make_params()
    sched = jc.prune.polynomial(begin=2, end=8, update_every=2)
    comp = kernels_only(jc.prune.magnitude(0.9, schedule=sched))
    opt = jax.jit(lambda p, g: jax.tree.map(lambda a, b: a - 0.05 * b, p, g))
    step = jax.jit(comp.update)
    state = comp.init(params)
    prev = inner(state).mask
    for c in range(1, 12):
        grads = random_like(params, c)
        params, state = step(opt(params, grads), state, grads)
        mask = inner(state).mask
        for a, b in KERNELS:
            n = params[a][b].size
            s = float(sched.sparsity(c, 0.9))
            want = n - ((round(float(np.float32(s)) * 2**24) * n) >> 24)
            if bool(sched.is_update(c)):
                assert kept(mask[a][b]) == want, (c, a)
            else:
                np.testing.assert_array_equal(np.asarray(mask[a][b]), np.asarray(prev[a][b]))
            # Pruned params are zero after every update.
            assert not np.any(np.asarray(params[a][b])[~np.asarray(mask[a][b])])
        prev = mask
    assert kept(mask["Dense_0"]["kernel"]) == 512 - int(0.9 * 512)


def test_saliency_uses_the_gradients():
    params = make_params()
    grads = random_like(params, 9)
    comp = kernels_only(jc.prune.saliency(0.5))
    new, state = jax.jit(comp.update)(params, comp.init(params), grads)
    for a, b in KERNELS:
        sal = np.asarray(params[a][b]) * np.asarray(grads[a][b])
        np.testing.assert_array_equal(
            np.asarray(inner(state).mask[a][b]), top_abs_mask(sal, params[a][b].size // 2)
        )
    with pytest.raises(ValueError, match="gradients"):
        comp.update(params, comp.init(params))
    with pytest.raises(ValueError, match="begin"):
        jc.prune.saliency(0.5, at_step=0)


def test_movement_accumulates_minus_w_times_g():
    params = make_params()
    comp = jc.prune.movement(0.5, schedule=jc.prune.constant(begin=3, update_every=3))
    state = comp.init(params)
    want = jax.tree.map(jnp.zeros_like, params)
    step = jax.jit(comp.update)
    for c in range(1, 4):
        grads = random_like(params, c)
        want = jax.tree.map(lambda s, w, g: s - w * g, want, params, grads)
        params, state = step(params, state, grads)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), state.score, want
    )
    w = want["Dense_0"]["kernel"]
    a = -np.asarray(w)  # keep the largest scores: rank -score ascending
    order = np.lexsort((np.arange(a.size), a.ravel()))
    ref = np.zeros(a.size, bool)
    ref[order[: a.size // 2]] = True
    np.testing.assert_array_equal(np.asarray(state.mask["Dense_0"]["kernel"]).ravel(), ref)


def test_random_is_exact_and_seeded():
    params = make_params()
    init = jax.jit(jc.prune.random(0.6, seed=0).init)
    a, b = init(params), init(params)
    for layer in ("Dense_0", "Dense_1"):
        for leaf in ("kernel", "bias"):
            n = params[layer][leaf].size
            assert kept(a.mask[layer][leaf]) == n - int(0.6 * n)
            np.testing.assert_array_equal(a.mask[layer][leaf], b.mask[layer][leaf])
    # The scores are hash bits of (seed, update count, leaf, position): they differ with each
    # of them, and never tie within a leaf.
    from jaxcompress.prune import _random

    def bits(seed, count, leaf):
        return np.asarray(_random.bits((32, 16), _random.salt(seed, count, leaf)))

    ref = bits(0, 0, 0)
    assert len(np.unique(ref)) == ref.size
    for other in (bits(1, 0, 0), bits(0, 1, 0), bits(0, 0, 1)):
        assert np.mean(other == ref) < 0.01
    # the selection is the top of those bits (Dense_0/kernel is leaf 1 in flatten order)
    w, k1 = a.mask["Dense_0"]["kernel"], bits(0, 0, 1)
    np.testing.assert_array_equal(np.asarray(w), k1 >= np.sort(k1.ravel())[-int(w.sum())])


@pytest.mark.parametrize("n,m", [(2, 4), (1, 8)])
def test_nm_every_group_valid(n, m):
    params = make_params()
    comp = kernels_only(jc.prune.magnitude(structure=jc.prune.nm(n, m)))
    state = comp.init(params)
    for a, b in KERNELS:
        w = np.abs(np.asarray(params[a][b]))
        mask = np.asarray(inner(state).mask[a][b])
        groups_w = w.reshape(w.shape[0] // m, m, w.shape[1])
        groups_m = mask.reshape(groups_w.shape)
        assert np.all(groups_m.sum(axis=1) == n)  # every group: exactly n
        # the kept entries are the n largest of their group
        kept_min = np.where(groups_m, groups_w, np.inf).min(axis=1)
        pruned_max = np.where(groups_m, -np.inf, groups_w).max(axis=1)
        assert np.all(kept_min >= pruned_max)


def test_block_and_channel_structure():
    params = make_params()
    st = kernels_only(jc.prune.magnitude(0.5, structure=jc.prune.block(4, 2))).init(params)
    m = np.asarray(inner(st).mask["Dense_0"]["kernel"]).reshape(8, 4, 8, 2)
    assert np.all(m.all(axis=(1, 3)) | ~m.any(axis=(1, 3)))  # blocks all-or-none
    assert m.all(axis=(1, 3)).sum() == 32  # half of the 64 blocks

    comp = jc.prune.magnitude(0.5, structure=jc.prune.channel())  # kernel + bias per layer
    st = comp.init(params)
    for layer, units in (("Dense_0", 16), ("Dense_1", 8)):
        km = np.asarray(st.mask[layer]["kernel"])
        bm = np.asarray(st.mask[layer]["bias"])
        assert np.all(km.all(axis=0) == km.any(axis=0))  # whole columns
        np.testing.assert_array_equal(km[0], bm)  # the unit's bias goes with it
        assert bm.sum() == units // 2
        # scored by the norm over kernel column and bias together
        norms = (np.asarray(params[layer]["kernel"]) ** 2).sum(0) + np.asarray(
            params[layer]["bias"]
        ) ** 2
        assert norms[bm].min() >= norms[~bm].max()


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jc.prune.magnitude(1.0), "sparsity"),
        (lambda: jc.prune.magnitude(-0.1), "sparsity"),
        (lambda: jc.prune.magnitude("0.5"), "sparsity"),
        (lambda: jc.prune.magnitude(), "required"),
        (lambda: jc.prune.nm(4, 2), "n \\(4\\) must be <= m"),
        (lambda: jc.prune.magnitude(0.5, structure=jc.prune.nm(2, 4)), "N:M"),
        (lambda: jc.prune.magnitude(0.5, scope="model"), "scope"),
        (lambda: jc.prune.magnitude(0.5, distribution="erk", scope="global"), "global"),
        (lambda: jc.prune.magnitude(0.5, at_step=2, schedule=jc.prune.one_shot()), "either"),
        (lambda: jc.prune.block(0, 2), "block: h"),
        (lambda: jc.prune.movement(0.5, schedule=jc.prune.constant()), "begin"),
        (lambda: jc.prune.random(0.5, seed=1.5), "seed"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "comp,match",
    [
        (kernels_only(jc.prune.magnitude(0.5, structure=jc.prune.block(5, 2))), "Dense_0/kernel"),
        (kernels_only(jc.prune.magnitude(structure=jc.prune.nm(2, 3))), "Dense_0/kernel"),
        (jc.prune.magnitude(structure=jc.prune.nm(2, 4)), "Dense_0/bias"),
        (jc.prune.magnitude({"Dense_0/.*": 0.5}), "Dense_1/bias"),
        (jc.prune.magnitude({".*": 0.5, "nothing": 0.1}), "nothing"),
    ],
)
def test_bad_leaves_name_the_path(comp, match):
    with pytest.raises(ValueError, match=match):
        comp.init(make_params())


def test_integer_leaf_is_rejected_with_its_path():
    with pytest.raises(ValueError, match="steps"):
        jc.prune.magnitude(0.5).init({"steps": jnp.zeros(4, jnp.int32)})


def test_structure_type_is_checked():
    with pytest.raises(TypeError, match="structure"):
        jc.prune.magnitude(0.5, structure="2:4")
