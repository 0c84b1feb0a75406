"""jc.flax.distiller: the linen distillation step, with Compressors, features and teachers."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

D, B = 16, 8
TEACHER, STUDENT = jc.workloads.MLP((32, 10)), jc.workloads.MLP((8, 10))


def rand(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def init_variables(model, x, seed):
    """LeCun-normal variables from numpy, shaped by ``eval_shape`` (nothing to compile)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if len(leaf.shape) < 2:
            return np.zeros(leaf.shape, np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

    return jax.tree.map(fill, shapes)


@functools.cache
def _params():
    x = jnp.zeros((1, D))
    return init_variables(TEACHER, x, 0), init_variables(STUDENT, x, 1)["params"]


def batch(seed=0, n=B):
    return {"x": rand(seed, (n, D)), "y": np.arange(n, dtype=np.int32) % 10}


def student_state(compressor, tx=None):
    """The student's TrainState; plain SGD by default (it compiles faster than adam)."""
    _, params = _params()
    return jc.flax.TrainState.create(
        apply_fn=STUDENT.apply, params=params, tx=tx or SGD, compressor=compressor
    )


class ScaleState(NamedTuple):
    """State of the test-only ``learned_scale`` compressor."""

    count: jax.Array  # int32[]
    trainable: Any  # per-leaf float32[] multiplier, trained with the params


def learned_scale():
    """A Compressor with a trainable field: each leaf times a learned scalar."""

    def init(params):
        ones = jax.tree.map(lambda _: jnp.ones([], jnp.float32), params)
        return ScaleState(jnp.zeros([], jnp.int32), ones)

    def apply(params, state):
        return jax.tree.map(lambda w, s: w * s.astype(w.dtype), params, state.trainable)

    def update(params, state, grads=None):
        return params, state._replace(count=state.count + 1)

    return jc.Compressor(init, apply, update)


SGD = optax.sgd(0.1)
HINT = jc.flax.Hint("Dense_0/__call__", "Dense_0/__call__", weight=0.5)


@functools.cache
def _first_step():
    """One step of a qat-4 student with a projected hint (shared by two tests)."""
    t_vars, _ = _params()
    state = student_state(jc.quant.qat(bits=4), optax.sgd(0.1, momentum=0.9))
    kd = jc.flax.distiller(TEACHER.apply, temperature=3.0, alpha=0.3, hints=[HINT])
    b = batch(0, n=16)
    dstate = kd.init(state, t_vars, sample_x=b["x"], key=jax.random.key(5))
    new, metrics = kd.step(dstate, b)
    return kd, b, dstate, new, metrics


def test_step_equals_hand_written_step():
    """The helper's update equals a step written by hand with kd_loss / hint_loss."""
    t_vars, _ = _params()
    kd, b, dstate, new, metrics = _first_step()
    state = dstate.student
    assert dstate.projections["hint_0"]["kernel"].shape == (8, 32)  # widths differ: projected

    @jax.jit
    def by_hand(state, proj, proj_opt):
        t_logits, t_inter = TEACHER.apply(
            t_vars, b["x"], capture_intermediates=True, mutable=["intermediates"]
        )
        t_feat = t_inter["intermediates"]["Dense_0"]["__call__"][0]

        def loss_fn(v, proj):
            s_logits, s_inter = state.apply_fn(
                {"params": state.compress(v)},
                b["x"],
                capture_intermediates=True,
                mutable=["intermediates"],
            )
            s_feat = s_inter["intermediates"]["Dense_0"]["__call__"][0]
            kd_term = jc.distill.kd_loss(
                s_logits, t_logits, temperature=3.0, labels=b["y"], alpha=0.3
            ).mean()
            hint = jc.distill.hint_loss(s_feat, t_feat, projection=proj["hint_0"]).mean()
            return kd_term + 0.5 * hint

        loss, (g, gp) = jax.value_and_grad(loss_fn, argnums=(0, 1))(state.trainables, proj)
        upd, proj_opt = state.tx.update(gp, proj_opt, proj)
        return loss, state.apply_gradients(grads=g), optax.apply_updates(proj, upd)

    loss, ref_state, ref_proj = by_hand(state, dstate.projections, dstate.projection_opt_state)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    chex.assert_trees_all_close(new.student.params, ref_state.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(new.projections, ref_proj, rtol=1e-5, atol=1e-6)
    assert int(new.student.step) == 1 and int(new.student.compression.count) == 1
    assert set(metrics) == {
        "loss", "kd", "ce", "alpha", "accuracy", "agreement", "temperature", "hint/hint_0"
    }  # fmt: skip


def test_no_retrace_and_trainable_compression_variables(trace_counter):
    """Trainable compression variables are optimized through state.trainables."""
    t_vars, _ = _params()
    comp = jc.chain(jc.quant.qat(bits=8), learned_scale())
    teacher_apply = trace_counter(TEACHER.apply)
    kd = jc.flax.distiller(teacher_apply, temperature=2.0)
    dstate = kd.init(student_state(comp), t_vars)
    for i in range(3):
        dstate, metrics = kd.step(dstate, {"x": batch(i)["x"]})
    assert teacher_apply.count == 1  # traced once: no retrace on steps 2 and 3
    st = dstate.student
    scale_state = st.compression.states[1]
    assert int(scale_state.count) == 3 and int(st.compression.states[0].count) == 3
    # the learned scales were trained by the optimizer
    scales = np.array(jax.tree.leaves(scale_state.trainable))
    assert scales.shape == (4,) and np.all(np.abs(scales - 1.0) > 1e-6)
    assert set(metrics) == {"loss", "kd", "agreement", "temperature"}  # no labels: pure KD


def test_cached_logits():
    t_vars, params = _params()
    b = batch(3)
    logits = jc.distill.teacher_logits(TEACHER.apply, t_vars, b["x"], batch_size=B)
    cached = jc.flax.distiller(None, temperature=2.0, alpha=0.5)
    new, metrics = cached.step(
        cached.init(student_state(jc.identity())), {**b, "teacher_logits": logits}
    )

    @jax.jit
    def by_hand(params):
        s = STUDENT.apply({"params": params}, b["x"])
        t = TEACHER.apply(t_vars, b["x"])
        return jc.distill.kd_loss(s, t, temperature=2.0, labels=b["y"], alpha=0.5).mean()

    loss, g = jax.value_and_grad(by_hand)(params)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, g)  # SGD(0.1)
    chex.assert_trees_all_close(new.student.params, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'teacher_logits' entry"):
        cached.step(cached.init(student_state(jc.identity())), b)


def test_self_distillation_online_teacher_is_the_float_view():
    _, params = _params()
    comp = jc.quant.qat(bits=2)
    kd = jc.flax.distiller("self", temperature=1.0)
    b = batch(4)
    _, metrics = kd.step(kd.init(student_state(comp)), b)

    @jax.jit
    def reference(state):
        q_logits = STUDENT.apply({"params": state.compress(params)}, b["x"])
        f_logits = STUDENT.apply({"params": params}, b["x"])
        return jc.distill.kd_loss(q_logits, f_logits, temperature=1.0).mean()

    ref = reference(student_state(comp))
    np.testing.assert_allclose(metrics["kd"], ref, rtol=1e-5)
    assert float(metrics["kd"]) > 0  # 2-bit weights do change the outputs


def test_multi_teacher_augment_schedule_and_mask():
    t_vars, _ = _params()
    t2 = jc.workloads.MLP((16, 10))
    t2_vars = init_variables(t2, jnp.zeros((1, D)), 7)
    sched = optax.linear_schedule(4.0, 2.0, 2)

    def augment(key, x):
        return x + 0.1 * jax.random.normal(key, x.shape)

    kd = jc.flax.distiller(
        [TEACHER.apply, t2.apply],
        teacher_weights=[0.7, 0.3],
        temperature=sched,
        alpha=0.25,
        augment=augment,
    )
    dstate = kd.init(student_state(jc.identity()), (t_vars, t2_vars))
    b = batch(5)
    mask = np.array([True] * 6 + [False] * 2)
    key = jax.random.key(11)
    temps = []
    for _ in range(3):
        state0 = dstate
        dstate, metrics = kd.step(dstate, {**b, "mask": mask}, key)
        temps.append(float(metrics["temperature"]))
    np.testing.assert_allclose(temps, [4.0, 3.0, 2.0])

    # Recompute the last step's loss by hand: the same augmented inputs for all three models.
    @jax.jit
    def reference(params):
        _, k_aug = jax.random.split(key)
        x = augment(k_aug, b["x"])
        s = STUDENT.apply({"params": params}, x)
        ts = [TEACHER.apply(t_vars, x), t2.apply(t2_vars, x)]
        per = jc.distill.multi_teacher_kd_loss(
            s, ts, weights=[0.7, 0.3], temperature=2.0, labels=b["y"], alpha=0.25, where=mask
        )
        return per.sum() / 6

    np.testing.assert_allclose(metrics["loss"], reference(state0.student.params), rtol=1e-5)
    with pytest.raises(ValueError, match="need a key"):
        kd.step(dstate, b)


class TinyCNN(nn.Module):
    """Conv feature map, then a linear head; sows its feature map."""

    channels: int

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(self.channels, (3, 3), name="Conv_0")(x))
        self.sow("intermediates", "features", h)
        return nn.Dense(10, name="Dense_0")(h.reshape(h.shape[0], -1))


def test_attention_transfer_and_hint_projection_train():
    x = rand(8, (4, 6, 6, 1))
    y = np.arange(4, dtype=np.int32)
    teacher, student = TinyCNN(8), TinyCNN(2)
    t_vars = init_variables(teacher, x, 0)
    s_params = init_variables(student, x, 1)["params"]
    state = jc.flax.TrainState.create(
        apply_fn=student.apply, params=s_params, tx=optax.adam(3e-2), compressor=jc.identity()
    )
    at = jc.flax.AttentionTransfer("features", "features", weight=100.0, name="at")
    hint = jc.flax.Hint("Conv_0/__call__", "Conv_0/__call__", name="conv")
    kd = jc.flax.distiller(teacher.apply, temperature=2.0, alpha=0.0, hints=[hint], attention=[at])
    dstate = kd.init(state, t_vars, sample_x=x, key=jax.random.key(2))
    assert dstate.projections["conv"]["kernel"].shape == (2, 8)  # a 1x1 conv projection
    proj0 = dstate.projections
    hints, ats = [], []
    for _ in range(30):
        dstate, metrics = kd.step(dstate, {"x": x, "y": y})
        hints.append(float(metrics["hint/conv"]))
        ats.append(float(metrics["attention/at"]))
    # The step's attention term is the loss function's, on the pre-step student.
    assert hints[-1] < 0.5 * hints[0] and ats[-1] < 0.5 * ats[0]
    assert not np.allclose(proj0["conv"]["kernel"], dstate.projections["conv"]["kernel"])


def test_errors_are_clear():
    t_vars, _ = _params()
    state = student_state(jc.identity())
    with pytest.raises(
        ValueError, match=r"no captured feature 'Dense_9/__call__'.*Dense_0/__call__"
    ):
        jc.flax.distiller(TEACHER.apply, hints=[jc.flax.Hint("Dense_9/__call__", "x")]).init(
            state, t_vars, sample_x=batch()["x"], key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="need sample_x"):
        jc.flax.distiller(TEACHER.apply, hints=[HINT]).init(state, t_vars)
    with pytest.raises(ValueError, match="pass key="):
        jc.flax.distiller(TEACHER.apply, hints=[HINT]).init(state, t_vars, sample_x=batch()["x"])
    with pytest.raises(ValueError, match="cached teacher logits do not have"):
        jc.flax.distiller(None, hints=[HINT])
    with pytest.raises(ValueError, match="pass the teacher variables"):
        jc.flax.distiller(TEACHER.apply).init(state)
    with pytest.raises(ValueError, match="temperature must be a scalar > 0"):
        jc.flax.distiller(TEACHER.apply, temperature=optax.linear_schedule(0.0, 1.0, 10))
    with pytest.raises(ValueError, match=r"alpha must be a scalar in \[0.0, 1.0\]"):
        jc.flax.distiller(TEACHER.apply, alpha=2.0)
    with pytest.raises(ValueError, match="teacher_index=1 but there are 1 teachers"):
        jc.flax.distiller(TEACHER.apply, hints=[HINT._replace(teacher_index=1)])
    with pytest.raises(ValueError, match="named 'a'"):
        jc.flax.distiller(TEACHER.apply, hints=[HINT._replace(name="a")] * 2)
    with pytest.raises(TypeError, match="jc.flax.TrainState"):
        jc.flax.distiller(TEACHER.apply).init({"params": 1}, t_vars)
    kd = jc.flax.distiller(TEACHER.apply, alpha=0.5)
    dstate = kd.init(state, t_vars)
    with pytest.raises(ValueError, match=r"got keys \['label', 'x'\]"):
        kd.step(dstate, {"x": batch()["x"], "label": batch()["y"]})
    with pytest.raises(ValueError, match="no labels"):
        kd.step(dstate, {"x": batch()["x"]})


def test_sharded_batch_matches_single_device():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    kd, b, dstate, ref, ref_m = _first_step()
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(b, NamedSharding(mesh, P("data")))
    replicated = jax.device_put(dstate, NamedSharding(mesh, P()))
    got, got_m = kd.step(replicated, sharded)
    assert len(got.student.params["Dense_0"]["kernel"].sharding.device_set) == 8
    chex.assert_trees_all_close(got.student.params, ref.student.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(got.projections, ref.projections, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m["loss"], ref_m["loss"], rtol=1e-5)


def test_self_distillation_recipe_for_qat():
    """Float model -> its own 2-bit copy, taught by the frozen float model (documented recipe)."""
    ds = jc.workloads.load_digits()
    model = jc.workloads.MLP((32, 10))
    params = init_variables(model, jnp.zeros((1, 64)), 3)["params"]
    tx = optax.adam(1e-2)

    @jax.jit
    def train_float(params):
        def body(carry, _):
            p, opt = carry
            g = jax.grad(
                lambda p: optax.softmax_cross_entropy_with_integer_labels(
                    model.apply({"params": p}, ds.x_train), ds.y_train
                ).mean()
            )(p)
            upd, opt = tx.update(g, opt, p)
            return (optax.apply_updates(p, upd), opt), None

        return jax.lax.scan(body, (params, tx.init(params)), None, length=150)[0][0]

    float_params = train_float(params)
    # The recipe: same params, a quantizing compressor, the float model as a frozen teacher.
    student = jc.flax.TrainState.create(
        apply_fn=model.apply, params=float_params, tx=optax.adam(2e-3),
        compressor=jc.quant.qat(bits=2),
    )  # fmt: skip
    kd = jc.flax.distiller(model.apply, temperature=2.0, alpha=0.0)
    dstate = kd.init(student, {"params": float_params})

    @jax.jit
    def gap(state):  # KL(float || 2-bit view) and argmax agreement on the validation split
        q = model.apply({"params": state.finalized_params()}, ds.x_val)
        f = model.apply({"params": float_params}, ds.x_val)
        kl = jc.distill.kd_loss(q, f, temperature=1.0).mean()
        return kl, jnp.mean(jnp.argmax(q, -1) == jnp.argmax(f, -1))

    kl0, agree0 = gap(dstate.student)
    for i, (xb, _) in enumerate(jc.workloads.batches(ds.x_train, ds.y_train, 128, seed=1)):
        if i == 60:
            break
        dstate, _ = kd.step(dstate, {"x": xb})
    kl1, agree1 = gap(dstate.student)
    assert float(kl0) > 0.05  # 2-bit weights change the model noticeably ...
    assert float(kl1) < 0.5 * float(kl0)  # ... and distillation closes most of the gap
    assert float(agree1) >= float(agree0)
