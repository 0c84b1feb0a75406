"""Sort-free exact top-k selection: exact counts, tie order, many problems, sharding."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc
from jaxcompress.prune import _threshold
from jaxcompress.prune._schedule import floor_mul

SHAPES = [(24, 16), (7,), (3, 5, 2)]  # one fixed set of shapes: one compile for all cases


def reference_masks(arrays, k):
    """Keep the k largest, ties by global position (arrays in order): via a stable numpy sort."""
    flat = np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays])
    keys = np.asarray(jc.prune.ordered_key(jnp.asarray(flat))).astype(np.int64)
    order = np.lexsort((np.arange(flat.size), -keys))  # descending key, ascending index
    keep = np.zeros(flat.size, bool)
    keep[order[: int(np.clip(k, 0, flat.size))]] = True
    out, off = [], 0
    for a in arrays:
        out.append(keep[off : off + a.size].reshape(a.shape))
        off += a.size
    return out


@functools.cache
def global_fn():
    return jax.jit(lambda arrays, k: jc.prune.topk_masks(arrays, k))


@functools.cache
def layer_fn():
    def f(arrays, ks):
        problems = [[(lambda a=a: jc.prune.ordered_key(a), a.shape)] for a in arrays]
        return [m[0] for m in jc.prune.select_top(problems, ks)]

    return jax.jit(f)


def make_arrays(kind, seed):
    rng = np.random.default_rng(seed)
    out = []
    for s in SHAPES:
        n = int(np.prod(s))
        if kind == "normal":
            x = rng.normal(size=n)
        elif kind == "ties":  # few distinct values: large tie blocks straddle k
            x = rng.integers(-2, 3, size=n).astype(float)
        elif kind == "bf16":
            x = np.asarray(jnp.asarray(rng.normal(size=n), jnp.bfloat16).astype(jnp.float32))
        elif kind == "zeros":  # half exactly zero, signed zeros included
            x = np.where(
                rng.uniform(size=n) < 0.5, rng.choice([0.0, -0.0], size=n), rng.normal(size=n)
            )
        elif kind == "const":
            x = np.full(n, 3.0)
        else:  # "wide": magnitudes over many binades
            x = rng.normal(size=n) * 10.0 ** rng.integers(-30, 30, size=n)
        out.append(jnp.asarray(x.reshape(s), jnp.float32))
    return out


KINDS = ["normal", "ties", "bf16", "zeros", "const", "wide"]


@pytest.mark.parametrize("kind", KINDS)
def test_global_topk_is_exact_with_position_ties(kind):
    arrays = make_arrays(kind, seed=len(kind))
    total = sum(a.size for a in arrays)
    for k in [0, 1, 2, 17, total // 2, total - 1, total, total + 5, -3]:
        got = global_fn()(arrays, k)
        want = reference_masks(arrays, k)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(g), w, err_msg=f"{kind} k={k}")
        assert sum(int(g.sum()) for g in got) == int(np.clip(k, 0, total))


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_many_problems_at_once_equal_one_at_a_time(kind):
    arrays = make_arrays(kind, seed=3)
    ks = jnp.array([100, 3, 30], jnp.int32)
    got = layer_fn()(arrays, ks)
    for a, k, g in zip(arrays, ks, got, strict=True):
        np.testing.assert_array_equal(np.asarray(g), reference_masks([a], int(k))[0])


@settings(max_examples=30, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-30, -3e20, 7.0, 0.25]),
        min_size=sum(int(np.prod(s)) for s in SHAPES),
        max_size=sum(int(np.prod(s)) for s in SHAPES),
    ),
    k=st.integers(-2, 410),
)
def test_property_exact_top_k_against_stable_sort(data, k):
    flat = np.asarray(data, np.float32)
    arrays, off = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        arrays.append(jnp.asarray(flat[off : off + n].reshape(s)))
        off += n
    got = global_fn()(arrays, k)
    for g, w in zip(got, reference_masks(arrays, k), strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)


_ordered_key_jit = jax.jit(jc.prune.ordered_key)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=2, max_size=40))
def test_ordered_key_preserves_order(values):
    x = np.asarray(values + [0.0] * (40 - len(values)), np.float32)  # one shape: one compile
    keys = np.asarray(_ordered_key_jit(jnp.asarray(x))).astype(np.int64)
    for i in range(len(x) - 1):
        if x[i] < x[i + 1]:
            assert keys[i] < keys[i + 1]
        elif x[i] > x[i + 1]:
            assert keys[i] > keys[i + 1]


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 1.0, width=32), st.integers(0, 2**31 - 1))
def test_floor_mul_is_exact(fraction, n):
    m = round(float(np.float32(fraction)) * 2**24)
    assert int(floor_mul(jnp.float32(fraction), n)) == (m * n) >> 24


def test_no_sort_in_the_mask_path():
    arrays = make_arrays("normal", 0)
    jaxpr = str(jax.make_jaxpr(lambda a: jc.prune.topk_masks(a, 40))(arrays))
    for prim in ("sort", "top_k", "argsort", "cumsum"):
        assert not re.search(rf"\b{prim}\b", jaxpr), prim


def test_search_takes_few_passes():
    # The sample-guided interpolation search: a handful of passes, not one per key bit.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(784, 512)), jnp.float32)
    k = x.size - int(0.9 * x.size)
    f = jax.jit(
        lambda x: _threshold._select_top([[(lambda: jc.prune.ordered_key(jnp.abs(x)), x.shape)]], k)
    )
    masks, passes = f(x)
    assert int(masks[0][0].sum()) == k
    assert int(passes[0]) <= 12


def test_too_large_is_an_error():
    problem = [[(lambda: jnp.zeros(1, jnp.uint32), (2**16, 2**15))]]
    with pytest.raises(ValueError, match="2\\*\\*31"):
        jc.prune.select_top(problem, 1)


@functools.cache
def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def test_sharded_global_selection_matches_and_gathers_nothing_big():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 32)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(2).normal(size=(32, 16)), jnp.float32)
    f = jax.jit(lambda x, y: jc.prune.topk_masks([jnp.abs(x), jnp.abs(y)], 700))
    ref = f(x, y)
    mesh = _mesh()
    xs = jax.device_put(x, NamedSharding(mesh, P("data", "model")))
    ys = jax.device_put(y, NamedSharding(mesh, P("model", "data")))
    compiled = f.lower(xs, ys).compile()
    got = compiled(xs, ys)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(r))
    # Collectives move scalars, partial reductions and the small sample, never a full leaf.
    hlo = compiled.as_text()
    for line in hlo.splitlines():
        m = re.search(r"= (\w+)\[([\d,]*)\][^=]*\b(all-gather|all-to-all|all-reduce)\(", line)
        if m:
            size = int(np.prod([int(d) for d in m.group(2).split(",") if d])) if m.group(2) else 1
            assert size < 512, line.strip()[:160]
