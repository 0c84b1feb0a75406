"""jc.cluster.kmeans: shared values, sparsity, centroid gradients, schedules, errors."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc
from jaxcompress.cluster import _kmeans1d


def _params(seed=0, shape=(32, 16), sparsity=0.0, dtype=jnp.float32):
    w = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
    if sparsity:
        w = jnp.where(jnp.abs(w) > jnp.quantile(jnp.abs(w), sparsity), w, 0.0)
    return {"Dense_0": {"kernel": w.astype(dtype)}}


# A few shared configurations, each compiled once for the whole file.
KM4 = jc.cluster.kmeans(4, init="linear", update_every=2)
KM4_CH = jc.cluster.kmeans(4, init="density", per_channel=True)
KM16_PP = jc.cluster.kmeans(16, seed=3)
KM32_LATE = jc.cluster.kmeans(32, at_step=2, update_every=2)


@functools.cache
def _jit_init(comp):
    return jax.jit(comp.init)


@functools.cache
def _jit_apply(comp):
    return jax.jit(comp.apply)


@functools.cache
def _jit_step(comp):
    def step(params, state, grads):
        params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
        return comp.update(params, state, grads)

    return jax.jit(step)


@pytest.mark.parametrize("comp,k", [(KM16_PP, 16), (KM4, 4)], ids=["kmeans++16", "linear4"])
def test_distinct_values_at_most_k(comp, k):
    params = _params()
    state = _jit_init(comp)(params)
    view = _jit_apply(comp)(params, state)["Dense_0"]["kernel"]
    assert int(jnp.unique(view).size) <= k
    # Every weight takes its nearest centroid.
    c = state.trainable["Dense_0"]["kernel"]
    w = params["Dense_0"]["kernel"]
    nearest = c[jnp.argmin(jnp.abs(w[..., None] - c[None, None, :]), axis=-1)]
    np.testing.assert_array_equal(np.asarray(view), np.asarray(nearest))
    assert state.assignments["Dense_0"]["kernel"].dtype == jnp.uint8


def test_distinct_values_per_channel():
    k, comp = 4, KM4_CH
    params = _params(shape=(32, 16))
    state = _jit_init(comp)(params)
    assert state.trainable["Dense_0"]["kernel"].shape == (16, k)
    view = np.asarray(_jit_apply(comp)(params, state)["Dense_0"]["kernel"])
    per_col = [np.unique(view[:, j]).size for j in range(16)]
    assert max(per_col) <= k
    # More distinct values than k over the whole leaf: the codebooks differ per channel.
    assert np.unique(view).size > k
    # (channel_axis=0, one codebook per row, is exercised by the export tests.)


def test_lloyd_converges_to_a_fixed_point():
    x = jax.random.normal(jax.random.key(3), (500, 2))
    valid = jnp.ones(x.shape, bool)

    @jax.jit
    def run(x, valid):
        c = _kmeans1d.fit(jax.random.key(0), x, valid, 6, init="linear", iters=50)
        a = _kmeans1d.assign(x, c)
        sums, counts = _kmeans1d.cluster_sums(x, valid, a, 6)
        return c, a, sums / jnp.maximum(counts, 1)

    c, a, means = run(x, valid)
    np.testing.assert_allclose(np.asarray(c), np.asarray(means), rtol=1e-5, atol=1e-6)
    # The assignment is the brute-force nearest centroid (per channel).
    brute = jnp.argmin(jnp.abs(x[:, :, None] - c[None, :, :]), axis=-1)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(brute))
    assert bool(jnp.all(jnp.diff(c, axis=-1) >= 0))  # sorted


def test_binary_search_path_matches_counting_path(monkeypatch):
    """Large k uses a binary search among the midpoints; small k counts them."""
    c = jnp.array([[-1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 2.0, 3.0]])
    # Points on the midpoints (ties go to the smaller centroid), beyond the ends, in between.
    x = jnp.array([-0.5, 0.25, 1.25, -9.0, 9.0, 0.1, 0.3, 1.9])[:, None] * jnp.ones((1, 2))
    counted = np.asarray(_kmeans1d.assign_sorted(x, c))
    monkeypatch.setattr(_kmeans1d, "_COUNT_MAX_K", 0)
    searched = np.asarray(_kmeans1d.assign_sorted(x, c))
    np.testing.assert_array_equal(counted, searched)
    np.testing.assert_array_equal(counted[:, 0], [0, 1, 2, 0, 3, 1, 2, 3])
    np.testing.assert_array_equal(counted[:, 1], [0, 0, 1, 0, 3, 0, 0, 2])


def test_kmeanspp_is_deterministic_given_seed():
    params = _params()
    s1 = _jit_init(KM16_PP)(params)
    s2 = _jit_init(jc.cluster.kmeans(16, seed=3))(params)  # same seed, another closure
    s3 = _jit_init(KM16_PP)(_params(seed=1))
    chex.assert_trees_all_equal(s1.trainable, s2.trainable)
    c1 = np.asarray(s1.trainable["Dense_0"]["kernel"])
    assert not np.array_equal(c1, np.asarray(s3.trainable["Dense_0"]["kernel"]))
    # The seeding itself: k-means++ draws its centroids among the points, per seed.
    x = params["Dense_0"]["kernel"].reshape(-1, 1)
    valid = jnp.ones(x.shape, bool)
    seeds = jax.jit(_kmeans1d.init_kmeanspp, static_argnums=3)
    a = seeds(jax.random.key(0), x, valid, 8)
    b = seeds(jax.random.key(0), x, valid, 8)
    c = seeds(jax.random.key(1), x, valid, 8)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert np.isin(np.asarray(a), np.asarray(x)).all()
    assert np.unique(np.asarray(a)).size == 8


def test_kmeanspp_draws_proportionally_to_squared_distance():
    # 5 points in 2 channels (padded to 3 blocks of 2); channel 1 has an invalid point.
    x = jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, 2.0], [3.0, 3.0], [0.0, 9.0]])
    valid = jnp.array([[True, True], [True, True], [True, False], [True, True], [True, True]])
    keys = jax.random.split(jax.random.key(0), 4000)
    seeds = jax.jit(jax.vmap(lambda key: _kmeans1d.init_kmeanspp(key, x, valid, 2)))(keys)
    seeds = np.asarray(seeds)  # [4000, 2 channels, 2 draws]
    # Channel 1, first draw: uniform over the 4 valid points (never the invalid 2.0).
    first = seeds[:, 1, 0]
    assert not np.isin(2.0, first)
    counts = np.array([np.sum(first == v) for v in (0.0, 1.0, 3.0, 9.0)])
    np.testing.assert_allclose(counts / 4000, 0.25, atol=0.03)
    # Channel 0, second draw given the first at 0.0: P(v) proportional to v**2 over {1, 3, 3}
    # (the duplicate 0.0 has distance 0 and is never drawn).
    second = seeds[seeds[:, 0, 0] == 0.0, 0, 1]
    assert not np.isin(0.0, second)
    np.testing.assert_allclose(np.mean(second == 1.0), 1 / 19, atol=0.02)
    np.testing.assert_allclose(np.mean(second == 3.0), 18 / 19, atol=0.02)


def test_pruned_zeros_preserved():
    params = _params(sparsity=0.75)
    w = params["Dense_0"]["kernel"]
    zeros = np.asarray(w == 0)
    comp = KM4
    state = _jit_init(comp)(params)
    view = np.asarray(_jit_apply(comp)(params, state)["Dense_0"]["kernel"])
    np.testing.assert_array_equal(view == 0, zeros)
    assert np.unique(view[~zeros]).size <= 4
    np.testing.assert_array_equal(np.asarray(state.mask["Dense_0"]["kernel"]), ~zeros)
    # Through updates with gradients: the zeros get no gradient and stay zero in the view.
    g = jax.grad(lambda p: jnp.sum(comp.apply(p, state)["Dense_0"]["kernel"] ** 2))(params)
    assert float(jnp.abs(g["Dense_0"]["kernel"][zeros]).max()) == 0.0
    step = _jit_step(comp)
    for _ in range(3):  # through a reassignment (update_every=2)
        params, state = step(params, state, g)
    view = np.asarray(_jit_apply(comp)(params, state)["Dense_0"]["kernel"])
    np.testing.assert_array_equal(view == 0, zeros)
    # Without preserve_sparsity the zeros are clustered too: one cluster is the mean of all.
    comp2 = jc.cluster.kmeans(1, preserve_sparsity=False, init="linear", iters=1)
    state2 = jax.jit(comp2.init)(params)
    view2 = np.asarray(jax.jit(comp2.apply)(params, state2)["Dense_0"]["kernel"])
    mean = np.mean(np.asarray(params["Dense_0"]["kernel"]))
    np.testing.assert_allclose(view2, np.full(view2.shape, mean), rtol=1e-5)
    assert mean != 0 and state2.mask is None


@pytest.mark.parametrize("per_channel", [False, True])
def test_centroid_gradient_is_sum_of_member_gradients(per_channel):
    k = 4
    comp = KM4_CH if per_channel else KM4
    params = _params(sparsity=0.5)
    state = _jit_init(comp)(params)
    upstream = jax.random.normal(jax.random.key(9), (32, 16))

    def loss(v):
        view = jc.compressed_view(comp, v, state)["Dense_0"]["kernel"]
        return jnp.sum(view * upstream)

    g = jax.jit(jax.grad(loss))(jc.Trainables(params, jc.trainable(state)))
    gc = np.asarray(g.compression["Dense_0"]["kernel"])
    a = np.asarray(state.assignments["Dense_0"]["kernel"]).astype(int)
    nz = np.asarray(params["Dense_0"]["kernel"] != 0)
    up = np.asarray(upstream)
    expected = np.zeros((16, k) if per_channel else (k,), np.float32)
    for i, j in zip(*np.nonzero(nz), strict=True):
        if per_channel:
            expected[j, a[i, j]] += up[i, j]
        else:
            expected[a[i, j]] += up[i, j]
    np.testing.assert_allclose(gc, expected, rtol=1e-5, atol=1e-5)
    # Straight through to the float weights (and zero at the preserved zeros).
    np.testing.assert_array_equal(np.asarray(g.params["Dense_0"]["kernel"]), np.where(nz, up, 0))


def test_update_every_reassigns_on_schedule():
    comp = KM4
    params = _params()
    state = _jit_init(comp)(params)
    a0 = np.asarray(state.assignments["Dense_0"]["kernel"])
    # Move every weight far up: its nearest centroid becomes the largest one.
    grads = {"Dense_0": {"kernel": -100.0 * jnp.ones((32, 16))}}
    step = _jit_step(comp)
    params, state = step(params, state, grads)  # count 1: no refresh
    np.testing.assert_array_equal(np.asarray(state.assignments["Dense_0"]["kernel"]), a0)
    params, state = step(params, state, grads)  # count 2: refresh
    a2 = np.asarray(state.assignments["Dense_0"]["kernel"])
    c = np.asarray(state.trainable["Dense_0"]["kernel"])
    assert (a2 == np.argmax(c)).all()
    # update_every=None: fixed assignments.
    fixed = KM4_CH
    s = _jit_init(fixed)(params)
    a = np.asarray(s.assignments["Dense_0"]["kernel"])
    step = _jit_step(fixed)
    for _ in range(2):
        params, s = step(params, s, grads)
    np.testing.assert_array_equal(np.asarray(s.assignments["Dense_0"]["kernel"]), a)


def test_at_step_clusters_later_and_bits_follow():
    comp = KM32_LATE
    params = _params(shape=(64, 32))
    state = _jit_init(comp)(params)
    assert int(state.bits["Dense_0"]["kernel"]) == 32
    chex.assert_trees_all_equal(_jit_apply(comp)(params, state), params)
    zero = jax.tree.map(jnp.zeros_like, params)
    step = _jit_step(comp)
    params, state = step(params, state, zero)
    assert int(state.bits["Dense_0"]["kernel"]) == 32
    params, state = step(params, state, zero)
    assert int(state.bits["Dense_0"]["kernel"]) == 5
    view = _jit_apply(comp)(params, state)["Dense_0"]["kernel"]
    assert int(jnp.unique(view).size) <= 32
    s = jc.summary(comp, params, state)
    assert s.leaves[0].bits == 5
    assert s.leaves[0].logical_bytes == 64 * 32 * 5 // 8


def test_index_bits():
    got = [jc.cluster.index_bits(k) for k in (1, 2, 3, 4, 5, 16, 17, 32, 256, 257, 300)]
    assert got == [1, 1, 2, 2, 3, 4, 5, 5, 8, 9, 9]


def test_summary_reports_log2_k_bits():
    comp = KM4  # preserve_sparsity: its mask marks the pruned zeros
    params = _params(shape=(32, 16), sparsity=0.5)
    state = _jit_init(comp)(params)
    row = jc.summary(comp, params, state).leaves[0]
    assert row.bits == 2
    assert row.sparsity == 0.5
    # 256 kept weights x 2 bits + a one-bit mask of 512 entries.
    assert row.logical_bytes == 256 * 2 // 8 + 512 // 8


def test_trained_end_to_end_with_train_state():
    """Centroids are trained by jc.flax.TrainState's optimizer with the summed gradients."""
    import flax.linen as nn

    model = nn.Dense(4)
    x = jax.random.normal(jax.random.key(0), (16, 8))
    y = jnp.arange(16) % 4
    params = model.init(jax.random.key(1), x)["params"]
    comp = jc.rules([("kernel", jc.cluster.kmeans(4, init="linear")), ("bias", None)])
    lr = 0.1
    state = jc.flax.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.sgd(lr), compressor=comp
    )

    def loss_fn(v, state):
        logits = state.apply_fn({"params": state.compress(v)}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train_step(state):
        grads = jax.grad(loss_fn)(state.trainables, state)
        return state.apply_gradients(grads=grads), grads

    km = state.compression.states[0]
    c0 = np.asarray(km.trainable["kernel"])
    new, grads = train_step(state)
    c1 = np.asarray(new.compression.states[0].trainable["kernel"])
    gc = np.asarray(grads.compression.states[0]["kernel"])
    np.testing.assert_allclose(c1, c0 - lr * gc, rtol=1e-6, atol=1e-7)
    # Which equals the summed gradient of the weights in each cluster.
    gw = np.asarray(grads.params["kernel"])
    a = np.asarray(km.assignments["kernel"])
    np.testing.assert_allclose(gc, [gw[a == j].sum() for j in range(4)], rtol=1e-5, atol=1e-6)
    losses = [float(loss_fn(state.trainables, state))]
    for _ in range(20):
        state, _ = train_step(state)
    losses.append(float(loss_fn(state.trainables, state)))
    assert losses[1] < losses[0]
    kernel = state.finalized_params()["kernel"]
    assert int(jnp.unique(kernel).size) <= 4


def test_bfloat16_leaves():
    params = _params(dtype=jnp.bfloat16, sparsity=0.5)
    comp = KM4
    state = _jit_init(comp)(params)
    view = _jit_apply(comp)(params, state)["Dense_0"]["kernel"]
    assert view.dtype == jnp.bfloat16
    assert state.trainable["Dense_0"]["kernel"].dtype == jnp.float32
    assert int(state.bits["Dense_0"]["kernel"]) == 2
    assert int(jnp.unique(view).size) <= 5
    np.testing.assert_array_equal(
        np.asarray(view == 0), np.asarray(params["Dense_0"]["kernel"] == 0)
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clusters": 0}, "num_clusters must be an integer >= 1, got 0"),
        ({"num_clusters": 2.5}, "num_clusters"),
        ({"num_clusters": 4, "init": "random"}, "init must be one of"),
        ({"num_clusters": 4, "update_every": 0}, "update_every must be an integer >= 1"),
        ({"num_clusters": 4, "at_step": -1}, "at_step"),
        ({"num_clusters": 4, "iters": -2}, "iters"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jc.cluster.kmeans(**kwargs)


def test_bad_leaves_name_the_path():
    comp = jc.cluster.kmeans(4)
    with pytest.raises(ValueError, match=r"'Dense_0/bias' has shape \(16,\).*route biases"):
        comp.init({"Dense_0": {"bias": jnp.ones(16), "kernel": jnp.ones((4, 4))}})
    with pytest.raises(ValueError, match=r"'w' of shape \(2, 2\) has 4 entries per codebook"):
        jc.cluster.kmeans(8).init({"w": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match=r"'w' has dtype int32"):
        comp.init({"w": jnp.ones((4, 4), jnp.int32)})
    with pytest.raises(ValueError, match="channel_axis=2 is out of range for leaf 'w'"):
        jc.cluster.kmeans(2, per_channel=True, channel_axis=2).init({"w": jnp.ones((4, 4))})
    # Per channel, the codebook size is the channel's length.
    with pytest.raises(ValueError, match="has 4 entries per codebook, fewer than num_clusters=5"):
        jc.cluster.kmeans(5, per_channel=True).init({"w": jnp.ones((4, 8))})


def test_no_retrace_with_schedules(trace_counter):
    comp = KM32_LATE
    params = _params(shape=(64, 32))
    grads = jax.tree.map(jnp.ones_like, params)

    def step(params, state):
        view = comp.apply(params, state)
        params, state = comp.update(params, state, grads)
        return view, params, state

    counted = trace_counter(step)
    jstep = jax.jit(counted)
    state = comp.init(params)
    for _ in range(5):
        _, params, state = jstep(params, state)
    assert counted.count == 1
    assert int(state.count) == 5


def test_kmeanspp_on_a_sharded_mesh_matches_one_device():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    params = _params(sparsity=0.5)
    ref = _jit_init(KM16_PP)(params)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    sharded = jax.device_put(params, NamedSharding(mesh, P("data", "model")))
    out = _jit_init(KM16_PP)(sharded)
    chex.assert_trees_all_close(out.trainable, ref.trainable, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_equal(out.assignments, ref.assignments)
