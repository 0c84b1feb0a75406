"""Dynamic sparse training: RigL and SET."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def make_params():
    return {"a": normal(0, (32, 16)), "b": normal(1, (16, 8))}


RIGL = jc.prune.rigl(0.75, end=40, update_every=4, drop_fraction=0.5, distribution="erk")


def test_rigl_drop_small_grow_large_gradient_exact_counts():
    params = make_params()
    comp = RIGL
    state = comp.init(params)
    erk = jc.prune.erk_sparsities([(32, 16), (16, 8)], 0.75)
    active = {k: params[k].size - int(s * params[k].size) for k, s in zip("ab", erk, strict=True)}
    for k in "ab":
        assert int(state.mask[k].sum()) == active[k]
    step = jax.jit(comp.update)
    params = comp.apply(params, state)
    for c in range(1, 9):
        grads = {k: normal(100 + 10 * c + i, params[k].shape) for i, k in enumerate("ab")}
        old = state.mask
        new_params, state = step(params, state, grads)
        frac = float(optax.cosine_decay_schedule(0.5, 40)(c))
        for k in "ab":
            m, o = np.asarray(state.mask[k]), np.asarray(old[k])
            assert m.sum() == active[k]  # the number of weights never changes
            if c % 4:
                np.testing.assert_array_equal(m, o)  # fixed between updates
                continue
            n_drop = (round(float(np.float32(frac)) * 2**24) * active[k]) >> 24
            w, g = np.abs(np.asarray(params[k])).ravel(), np.abs(np.asarray(grads[k])).ravel()
            o_flat = o.ravel()
            # drop: keep the active - n_drop largest |w| among the active (ties: position)
            order = np.lexsort((np.arange(w.size), -np.where(o_flat, w, -1.0)))
            keep = np.zeros(w.size, bool)
            keep[order[: active[k] - n_drop]] = True
            # grow: the n_drop largest |g| among all the others
            order = np.lexsort((np.arange(g.size), -np.where(keep, -1.0, g)))
            grow = np.zeros(g.size, bool)
            grow[order[:n_drop]] = True
            np.testing.assert_array_equal(m.ravel(), keep | grow)
            assert n_drop > 0
            # weights grown into the mask start at zero; inactive ones are zero
            new = np.asarray(new_params[k])
            assert np.all(new[m & ~o] == 0) and np.all(new[~m] == 0)
            np.testing.assert_array_equal(new[m & o], np.asarray(params[k])[m & o])
        params = jax.tree.map(lambda p, g: p - 0.1 * g, new_params, grads)


def test_rigl_apply_passes_dense_gradients():
    params = make_params()
    comp = RIGL
    state = comp.init(params)  # the same compiled initial-mask function as above
    g = jax.grad(lambda p: sum(jnp.sum(x) for x in jax.tree.leaves(comp.apply(p, state))))(params)
    assert all(bool(jnp.all(x == 1.0)) for x in jax.tree.leaves(g))
    with pytest.raises(ValueError, match="gradient"):
        comp.update(params, state)


def test_set_grows_at_random_without_gradients():
    params = make_params()
    comp = jc.prune.set(0.5, end=10, update_every=1, distribution="uniform", seed=3)
    state = comp.init(params)
    new, state2 = jax.jit(comp.update)(comp.apply(params, state), state)
    for k in "ab":
        assert int(state2.mask[k].sum()) == params[k].size // 2
        grown = np.asarray(state2.mask[k] & ~state.mask[k])
        assert grown.sum() > 0 and np.all(np.asarray(new[k])[grown] == 0)
    # masked (not straight-through) gradients: SET needs none
    g = jax.grad(lambda p: jnp.sum(comp.apply(p, state)["a"]))(params)
    np.testing.assert_array_equal(np.asarray(g["a"]), np.asarray(state.mask["a"], np.float32))


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jc.prune.rigl(1.0, end=10), "sparsity"),
        (lambda: jc.prune.rigl(0.5, end=10, drop_fraction=0.0), "drop_fraction"),
        (lambda: jc.prune.rigl(0.5, end=5, begin=10), "end"),
        (lambda: jc.prune.set(0.5, end=10, update_every=0), "update_every"),
        (lambda: jc.prune.set(0.5, end=10, distribution="er"), "distribution"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_erk_sparsities_budget():
    shapes = [(3, 3, 16, 32), (3, 3, 32, 64), (1024, 10)]
    s = jc.prune.erk_sparsities(shapes, 0.9)
    sizes = [math.prod(x) for x in shapes]
    kept = sum(n * (1 - x) for n, x in zip(sizes, s, strict=True))
    assert kept == pytest.approx(0.1 * sum(sizes), rel=1e-9)
    # ERK: density proportional to sum(shape) / prod(shape) for the layers not capped at 1
    d = [(1 - x) * n / sum(sh) for x, n, sh in zip(s, sizes, shapes, strict=True)]
    assert d[0] == pytest.approx(d[1], rel=1e-9)
