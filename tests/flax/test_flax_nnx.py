"""jc.flax.Compressed (NNX): same paths and numerics as linen, nnx.Optimizer training of
params and trainable compression variables, pruning through adam, no retrace, the
functional jax.jit form, model state (batch stats, RNG counts), errors, sharded mesh."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compile_count import count_compiles
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from learned_scale import learned_scale

import jaxcompress as jc

PRUNE_AT = 2
LINEN = jc.workloads.MLP((16, 8))
# Shared so that nnx.jit (keyed on the static graph, which holds them) compiles once.
QAT_PRUNE = jc.rules(
    [
        (".*/kernel", jc.chain(jc.prune.magnitude(0.5, at_step=PRUNE_AT), jc.quant.qat(8))),
        (".*/bias", None),
    ]
)
ADAM = optax.adam(1e-2)


def data(n=32, d=16, classes=8, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, classes)


def linen_params(seed=0):
    x, _ = data()
    return LINEN.init(jax.random.key(seed), x[:1])["params"]


def make_model(params=None):
    """MLPNNX(16, (16, 8)), with the linen model's initial weights (or ``params``)."""
    model = jc.workloads.MLPNNX(16, (16, 8), rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, linen_params() if params is None else params)
    nnx.update(model, state)
    return model


def make(comp=QAT_PRUNE, tx=ADAM, params=None):
    cmodel = jc.flax.Compressed(make_model(params), comp)
    return cmodel, nnx.Optimizer(cmodel, tx, wrt=nnx.Param)


def loss_fn(cmodel, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(cmodel(x), y).mean()


def train_step(cmodel, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(cmodel, x, y)
    optimizer.update(cmodel, grads)
    cmodel.update(grads)
    return loss


jit_step = nnx.jit(train_step)


@functools.cache
def linen_reference(steps=3):
    state = jc.flax.TrainState.create(
        apply_fn=LINEN.apply, params=linen_params(), tx=ADAM, compressor=QAT_PRUNE
    )

    @jax.jit
    def step(state, x, y):
        def loss(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        return state.apply_gradients(grads=jax.grad(loss)(state.trainables))

    x, y = data()
    for _ in range(steps):
        state = step(state, x, y)
    return state


def test_paths_and_outputs_match_the_linen_mlp():
    model = make_model()
    params = linen_params()
    cmodel = jc.flax.Compressed(model, jc.identity())
    assert [p for p, _ in jc._src.paths.leaves_with_paths(cmodel.params)] == [
        p for p, _ in jc._src.paths.leaves_with_paths(params)
    ]
    x, _ = data()
    np.testing.assert_allclose(model(x), LINEN.apply({"params": params}, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cmodel(x), model(x), rtol=0, atol=0)


def test_matches_the_linen_train_state():
    cmodel, optimizer = make()
    x, y = data()
    for _ in range(3):
        jit_step(cmodel, optimizer, x, y)
    ref = linen_reference()
    chex.assert_trees_all_close(cmodel.params, ref.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(
        jc.state_fields(cmodel.compression_state, "mask"), jc.state_fields(ref.compression, "mask")
    )
    assert [int(c) for c in jc.state_fields(cmodel.compression_state, "count")] == [3, 3]
    assert int(optimizer.step[...]) == 3


def test_pruned_weights_stay_zero_through_adam():
    cmodel, optimizer = make()
    x, y = data()
    for _ in range(PRUNE_AT + 8):
        jit_step(cmodel, optimizer, x, y)
    mask = jc.state_fields(cmodel.compression_state, "mask")[0]
    mu = nnx.to_pure_dict(nnx.state(optimizer, nnx.OptState))["opt_state"][0]["mu"]["model"]
    for layer in ("Dense_0", "Dense_1"):
        kernel = cmodel.model.__getattribute__(layer).kernel[...]
        m = mask[layer]["kernel"]
        assert int(jnp.sum(~m)) == math.floor(0.5 * kernel.size)
        assert bool(jnp.all(kernel[~m] == 0))
        # adam's first moment is still non-zero at pruned weights (gradients from before the
        # mask decay slowly), so without update() they would drift away from zero.
        assert float(jnp.max(jnp.abs(mu[layer]["kernel"][~m]))) > 0
        assert bool(jnp.all(kernel[m] != 0))
    s = cmodel.summary()
    assert [(r.path, r.bits, r.sparsity) for r in s.leaves if r.path.endswith("kernel")] == [
        ("Dense_0/kernel", 8, 0.5),
        ("Dense_1/kernel", 8, 0.5),
    ]


def test_trainable_compression_variables_are_trained_without_retrace(trace_counter):
    lr = 0.1
    comp = jc.chain(jc.rules([(".*/kernel", learned_scale())]), QAT_PRUNE)
    cmodel, optimizer = make(comp, tx=optax.sgd(lr))
    assert len(cmodel.compression_params) == 2  # one scale per kernel
    assert all(isinstance(v, jc.flax.CompressionParam) for v in cmodel.compression_params)
    assert all(isinstance(v, nnx.Param) for v in cmodel.compression_params)
    assert not any(isinstance(v, nnx.Param) for v in cmodel.compression)
    x, y = data()
    # The functional reference: jax.grad over jc.Trainables of the same params and state.
    state0 = cmodel.compression_state
    params0 = cmodel.params

    def ref_loss(v):
        logits = LINEN.apply({"params": jc.compressed_view(comp, v, state0)}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    ref = jax.jit(jax.grad(ref_loss))(jc.Trainables(params0, jc.trainable(state0)))
    grads = nnx.jit(nnx.grad(loss_fn))(cmodel, x, y)
    g_scale = (
        jax.tree.unflatten(
            cmodel.compression_params_def, jax.tree.leaves(grads["compression_params"])
        )
        .states[0]
        .states[0]
    )
    chex.assert_trees_all_close(g_scale, ref.compression.states[0].states[0], rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(nnx.to_pure_dict(grads["model"]), ref.params, rtol=1e-5, atol=1e-7)
    counted = trace_counter(train_step)
    step = nnx.jit(counted)
    step(cmodel, optimizer, x, y)
    scale0 = jc.trainable(state0).states[0].states[0]
    scale1 = jc.trainable(cmodel.compression_state).states[0].states[0]
    for layer in ("Dense_0", "Dense_1"):
        assert abs(float(g_scale[layer]["kernel"])) > 1e-6
        np.testing.assert_allclose(
            scale1[layer]["kernel"],
            scale0[layer]["kernel"] - lr * g_scale[layer]["kernel"],
            rtol=1e-5,
            atol=1e-7,
        )
    # update() received the model gradients.
    kernel_grad_sum = sum(jnp.sum(ref.params[k]["kernel"]) for k in ("Dense_0", "Dense_1"))
    np.testing.assert_allclose(
        jc.state_fields(cmodel.compression_state, "grad_sum")[0], kernel_grad_sum, rtol=1e-5
    )
    # No retrace or recompile on later steps; every inner count advanced once per step.
    with count_compiles() as compiles:
        for _ in range(2):
            step(cmodel, optimizer, x, y)
    assert counted.count == 1
    assert compiles.n == 0
    assert [int(c) for c in jc.state_fields(cmodel.compression_state, "count")] == [3, 3, 3]
    # An adam optimizer holds moments for the scales too.
    _, adam_opt = make(comp)
    mu = nnx.to_pure_dict(nnx.state(adam_opt, nnx.OptState))["opt_state"][0]["mu"]
    assert [x.shape for x in jax.tree.leaves(mu["compression_params"])] == [(), ()]


def test_functional_jax_jit_of_split_state_matches_nnx_jit(trace_counter):
    x, y = data()
    a_model, a_opt = make()
    for _ in range(3):
        jit_step(a_model, a_opt, x, y)

    b_model, b_opt = make()
    graphdef, state = nnx.split((b_model, b_opt))

    def step(state, x, y):
        cmodel, optimizer = nnx.merge(graphdef, state)
        train_step(cmodel, optimizer, x, y)
        return nnx.state((cmodel, optimizer))

    counted = trace_counter(step)
    jstep = jax.jit(counted)
    for _ in range(3):
        state = jstep(state, x, y)
    assert counted.count == 1
    nnx.update((b_model, b_opt), state)
    chex.assert_trees_all_close(b_model.params, a_model.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(b_model.compression_state, a_model.compression_state)


class _BNDropNet(nnx.Module):
    def __init__(self, rngs):
        self.Dense_0 = nnx.Linear(16, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.25, rngs=rngs)
        self.Dense_1 = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, x):
        return self.Dense_1(self.drop(nnx.relu(self.bn(self.Dense_0(x)))))


def test_batch_stats_and_rng_counts_are_kept():
    model = _BNDropNet(nnx.Rngs(0, dropout=1))
    cmodel = jc.flax.Compressed(model, jc.rules([(".*/kernel", jc.quant.qat(8))]))
    optimizer = nnx.Optimizer(cmodel, ADAM, wrt=nnx.Param)
    x, y = data()
    mean0 = model.bn.mean[...]
    count0 = int(model.drop.rngs.count[...])
    jit_step(cmodel, optimizer, x, y)
    jit_step(cmodel, optimizer, x, y)
    assert cmodel.model is model
    assert float(jnp.max(jnp.abs(model.bn.mean[...] - mean0))) > 0
    assert int(model.drop.rngs.count[...]) == count0 + 2
    # BatchNorm scale/bias are Params too: seen by the compressor, left alone by the rules.
    assert "bn/scale" in [p for p, _ in jc._src.paths.leaves_with_paths(cmodel.params)]
    # Eval mode reaches the wrapped modules; eager calls update the stats in place too.
    cmodel.eval()
    before = model.bn.mean[...]
    a, b = cmodel(x), cmodel(x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.bn.mean[...], before)
    cmodel.train()
    cmodel(x)
    assert float(jnp.max(jnp.abs(model.bn.mean[...] - before))) > 0


def test_finalized_model_matches_the_forward_view():
    cmodel, optimizer = make()
    x, y = data()
    for _ in range(PRUNE_AT):
        jit_step(cmodel, optimizer, x, y)
    np.testing.assert_array_equal(cmodel.finalized_model()(x), cmodel(x))
    kernel = cmodel.finalized_model().Dense_0.kernel[...]
    assert int(jnp.sum(kernel == 0)) >= 128  # pruned
    assert int(jnp.unique(kernel[:, 0]).size) <= 255  # int8 grid per channel
    # The stored params are untouched by building views.
    assert int(jnp.sum(cmodel.model.Dense_0.kernel[...] == 0)) == 128


def test_update_without_grads_and_with_plain_dict_grads():
    cmodel, _ = make(jc.rules([(".*/kernel", learned_scale())]))
    cmodel.update()
    assert int(jc.state_fields(cmodel.compression_state, "count")[0]) == 1
    g = jax.tree.map(jnp.ones_like, cmodel.params)
    cmodel.update(g)
    assert float(jc.state_fields(cmodel.compression_state, "grad_sum")[0]) == 16 * 16 + 16 * 8


def test_errors_are_clear():
    with pytest.raises(TypeError, match="nnx.Module"):
        jc.flax.Compressed({"w": jnp.ones(2)}, QAT_PRUNE)
    with pytest.raises(TypeError, match="jc.Compressor"):
        jc.flax.Compressed(make_model(), lambda p: p)
    with pytest.raises(ValueError, match="matches no leaf.*Dense_0/kernel"):
        jc.flax.Compressed(make_model(), jc.rules([("conv/kernel", jc.quant.qat(8))]))
    cmodel, _ = make()
    with pytest.raises(ValueError, match="grads do not have the structure"):
        cmodel.update({"Dense_0": {"kernel": jnp.ones((16, 16))}})


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 CPU devices")
def test_sharded_mesh_matches_single_device():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    spec = {
        "Dense_0": {"kernel": P("data", "model"), "bias": P("model")},
        "Dense_1": {"kernel": P("data", "model"), "bias": P("model")},
    }
    shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s), spec, is_leaf=lambda s: isinstance(s, P)
    )
    cmodel, optimizer = make(params=jax.device_put(linen_params(), shardings))
    x, y = data()
    x = jax.device_put(x, NamedSharding(mesh, P("data")))
    y = jax.device_put(y, NamedSharding(mesh, P("data")))
    for _ in range(3):
        jit_step(cmodel, optimizer, x, y)
    ref = linen_reference()
    chex.assert_trees_all_close(cmodel.params, ref.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(
        jc.state_fields(cmodel.compression_state, "mask"), jc.state_fields(ref.compression, "mask")
    )
    for p, s in zip(jax.tree.leaves(cmodel.params), jax.tree.leaves(shardings)):
        assert p.sharding.is_equivalent_to(s, p.ndim)
