"""jc.flax.TrainState (linen): training with rules/chain, update per step, trainable
compression variables, no retrace, and an 8-device sharded mesh."""

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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from learned_scale import learned_scale

import jaxcompress as jc

MODEL = jc.workloads.MLP((16, 8))
PRUNE_AT = 2


def data(n=32, d=16, classes=8, seed=0):
    kx, ky = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, classes)


def init_params(seed=0):
    x, _ = data()
    return MODEL.init(jax.random.key(seed), x[:1])["params"]


def qat_prune():
    return jc.rules(
        [
            (".*/kernel", jc.chain(jc.prune.magnitude(0.5, at_step=PRUNE_AT), jc.quant.qat(8))),
            (".*/bias", None),
        ]
    )


# One compressor and optimizer object shared by the tests: they are static fields of the
# TrainState, so sharing them lets the jitted step compile once.
QAT_PRUNE = qat_prune()
ADAM = optax.adam(1e-2)


def loss_fn(variables, state, x, y):
    logits = state.apply_fn({"params": state.compress(variables)}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_step(state, x, y):
    """The README train step: differentiate state.trainables, apply_gradients."""
    loss, grads = jax.value_and_grad(loss_fn)(state.trainables, state, x, y)
    return state.apply_gradients(grads=grads), loss


def params_train_step(state, x, y):
    """The plain linen form: differentiate the params only."""
    grads = jax.grad(loss_fn)(state.params, state, x, y)
    return state.apply_gradients(grads=grads)


jit_step = jax.jit(train_step)


def make_state(comp, tx=None, params=None):
    return jc.flax.TrainState.create(
        apply_fn=MODEL.apply,
        params=init_params() if params is None else params,
        tx=ADAM if tx is None else tx,
        compressor=comp,
    )


@functools.cache
def reference_run(steps=3):
    """3 jitted steps of qat+prune on one device: (state, losses)."""
    state = make_state(QAT_PRUNE)
    x, y = data()
    losses = []
    for _ in range(steps):
        state, loss = jit_step(state, x, y)
        losses.append(float(loss))
    return state, losses


def test_trains_with_rules_and_chain_and_applies_mask():
    state = make_state(QAT_PRUNE)
    x, y = data()
    losses = []
    for _ in range(25):
        state, loss = jit_step(state, x, y)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses
    # The mask was set at update PRUNE_AT and is applied to the stored params: exactly
    # floor(0.5 * size) zeros per kernel, kept through 23 more adam steps.
    for layer in ("Dense_0", "Dense_1"):
        kernel = state.params[layer]["kernel"]
        assert int(jnp.sum(kernel == 0)) == math.floor(0.5 * kernel.size)
        view = state.compress(state.params)[layer]["kernel"]
        assert int(jnp.sum(view == 0)) >= math.floor(0.5 * kernel.size)
        bias = state.params[layer]["bias"]
        chex.assert_trees_all_equal(state.compress(state.params)[layer]["bias"], bias)
    s = jc.summary(state.compressor, state.params, state.compression)
    kernels = [r for r in s.leaves if r.path.endswith("kernel")]
    assert all(r.bits == 8 and r.sparsity == 0.5 for r in kernels)


def test_apply_gradients_runs_compressor_update_once_per_step():
    state = make_state(QAT_PRUNE)
    x, y = data()
    mask0 = jc.state_fields(state.compression, "mask")[0]
    assert all(bool(jnp.all(m)) for m in jax.tree.leaves(mask0))
    for step in range(1, PRUNE_AT + 2):
        state, _ = jit_step(state, x, y)
        assert int(state.step) == step
        assert [int(c) for c in jc.state_fields(state.compression, "count")] == [step, step]
        mask = jc.state_fields(state.compression, "mask")[0]
        pruned = sum(int(jnp.sum(~m)) for m in jax.tree.leaves(mask))
        expected = sum(math.floor(0.5 * n) for n in (16 * 16, 16 * 8)) if step >= PRUNE_AT else 0
        assert pruned == expected


def test_plain_param_grads_work_without_trainables():
    state = make_state(QAT_PRUNE)
    x, y = data()
    a = jax.jit(params_train_step)(state, x, y)
    b, _ = jit_step(state, x, y)
    chex.assert_trees_all_equal(a.params, b.params)
    chex.assert_trees_all_equal(a.opt_state, b.opt_state)
    chex.assert_trees_all_equal(a.compression, b.compression)


def test_plain_param_grads_with_trainable_compressor_raise():
    state = make_state(jc.rules([(".*/kernel", learned_scale())]))
    x, y = data()
    with pytest.raises(ValueError, match="trainable variables.*state.trainables"):
        jax.jit(params_train_step)(state, x, y)  # raised while tracing


def test_trainable_tree_is_optimized_by_the_optimizer():
    lr = 0.1
    comp = jc.rules([(".*/kernel", learned_scale())])
    state = make_state(comp, tx=optax.sgd(lr))
    x, y = data()
    grads = jax.jit(jax.grad(loss_fn))(state.trainables, state, x, y)
    new, _ = jit_step(state, x, y)
    ls = jc.state_fields(state.compression, "trainable")[0]
    new_ls = jc.state_fields(new.compression, "trainable")[0]
    # jc.trainable(state) puts each trainable value where its state NamedTuple was.
    g_ls = grads.compression.states[0]
    for layer in ("Dense_0", "Dense_1"):
        g = g_ls[layer]["kernel"]
        assert abs(float(g)) > 1e-6  # the scale gets a real gradient
        np.testing.assert_allclose(
            new_ls[layer]["kernel"], ls[layer]["kernel"] - lr * g, rtol=1e-6, atol=1e-7
        )
        assert new_ls[layer]["bias"] is None  # not owned, not trained
    chex.assert_trees_all_close(
        new.params,
        jax.tree.map(lambda p, g: p - lr * g, state.params, grads.params),
        rtol=1e-6,
        atol=1e-7,
    )
    # The optimizer state covers the trainable tree (adam: mu/nu for the scales too).
    adam_state = make_state(comp).opt_state[0]
    assert adam_state.mu.compression.states[0]["Dense_0"]["kernel"].shape == ()
    # compressor.update received the param gradients.
    seen = jc.state_fields(new.compression, "grad_sum")[0]
    kernel_grads = [grads.params[k]["kernel"] for k in ("Dense_0", "Dense_1")]
    np.testing.assert_allclose(seen, sum(jnp.sum(g) for g in kernel_grads), rtol=1e-5)


def test_no_retrace_or_recompile_after_the_first_step(trace_counter):
    counted = trace_counter(train_step)
    step = jax.jit(counted)
    state = make_state(jc.chain(jc.rules([(".*/kernel", learned_scale())]), QAT_PRUNE))
    assert state.step.dtype == jnp.int32  # one type from the start
    x, y = data()
    state, _ = step(state, x, y)
    with count_compiles() as compiles:
        for _ in range(2):
            state, _ = step(state, x, y)
    assert counted.count == 1
    assert compiles.n == 0
    assert int(state.step) == 3


def test_create_rejects_a_non_compressor():
    with pytest.raises(TypeError, match="jc.Compressor"):
        make_state(lambda p: p)


def test_finalized_params_equal_compress_without_gradient_path():
    state, _ = reference_run()
    chex.assert_trees_all_equal(state.finalized_params(), state.compress(state.params))
    g = jax.grad(
        lambda p: sum(
            jnp.sum(v) for v in jax.tree.leaves(jc.finalize(state.compressor, p, state.compression))
        )
    )(state.params)
    assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in jax.tree.leaves(g))


@pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 CPU devices")
def test_sharded_mesh_matches_single_device():
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    shardings = {
        "Dense_0": {"kernel": P("data", "model"), "bias": P("model")},
        "Dense_1": {"kernel": P("data", "model"), "bias": P("model")},
    }
    shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s), shardings, is_leaf=lambda s: isinstance(s, P)
    )
    params = jax.device_put(init_params(), shardings)
    state = make_state(QAT_PRUNE, params=params)
    x, y = data()
    x = jax.device_put(x, NamedSharding(mesh, P("data")))
    y = jax.device_put(y, NamedSharding(mesh, P("data")))
    for _ in range(3):
        state, _ = jit_step(state, x, y)
    ref, _ = reference_run()
    chex.assert_trees_all_close(state.params, ref.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.opt_state, ref.opt_state, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(
        jc.state_fields(state.compression, "mask"), jc.state_fields(ref.compression, "mask")
    )
    # Params stay sharded as they were placed.
    for p, s in zip(jax.tree.leaves(state.params), jax.tree.leaves(shardings)):
        assert p.sharding.is_equivalent_to(s, p.ndim)
