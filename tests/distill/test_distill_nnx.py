"""jc.flax.nnx_distiller: the NNX distillation step on nnx.Optimizer, with Compressors."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxcompress as jc

D, B = 16, 8


def numpy_init(seed):
    """A LeCun-normal kernel initializer drawing from numpy (no JAX RNG to compile)."""
    rng = np.random.default_rng(seed)

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]), dtype)

    return init


class MLP(nnx.Module):
    """Linen ``jc.workloads.MLP`` naming (Dense_0, Dense_1), optional dropout, a sown feature."""

    def __init__(self, din, hidden, rngs, dropout=0.0, seed=0):
        init = numpy_init(seed)
        self.Dense_0 = nnx.Linear(din, hidden, kernel_init=init, rngs=rngs)
        self.Dense_1 = nnx.Linear(hidden, 10, kernel_init=init, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None

    def __call__(self, x):
        h = nnx.relu(self.Dense_0(x))
        self.sow(nnx.Intermediate, "hidden", h)
        if self.drop is not None:
            h = self.drop(h)
        return self.Dense_1(h)


def call(model, x):
    """``model(x)`` with its sown values captured (sowing outside nnx.capture is deprecated)."""
    return nnx.capture(model, nnx.Intermediate)(jnp.asarray(x))[0]


def rand(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def batch(seed=0):
    return {"x": rand(seed, (B, D)), "y": np.arange(B, dtype=np.int32) % 10}


def models(dropout=0.0):
    teacher = MLP(D, 32, nnx.Rngs(0), seed=0)
    student = MLP(D, 8, nnx.Rngs(1), dropout=dropout, seed=1)
    return teacher, student


HINT = jc.flax.Hint("Dense_0/__call__", "Dense_0/__call__", weight=0.5)


def test_nnx_step_equals_linen_step():
    """Same weights, same recipe: the NNX and linen helpers take identical steps."""
    teacher, student = models()
    comp = jc.quant.qat(bits=4)
    opt = nnx.Optimizer(student, optax.sgd(0.1), wrt=nnx.Param)
    kd_nnx = jc.flax.nnx_distiller(compressor=comp, temperature=3.0, alpha=0.3, hints=[HINT])
    b = batch()
    st_nnx = kd_nnx.init(student, opt, teacher, sample_x=b["x"], key=jax.random.key(4))

    linen_student, linen_teacher = jc.workloads.MLP((8, 10)), jc.workloads.MLP((32, 10))
    # Take the params before the NNX steps change them (pure dicts are copies).
    t_params = jc.flax.param_dict(teacher)
    state = jc.flax.TrainState.create(
        apply_fn=linen_student.apply,
        params=jc.flax.param_dict(student),
        tx=optax.sgd(0.1),
        compressor=comp,
    )
    kd_linen = jc.flax.distiller(linen_teacher.apply, temperature=3.0, alpha=0.3, hints=[HINT])
    st_linen = kd_linen.init(state, {"params": t_params}, sample_x=b["x"], key=jax.random.key(4))
    chex.assert_trees_all_equal(st_nnx.projections, st_linen.projections)

    for i in range(2):
        st_nnx, m_nnx = kd_nnx.step(student, opt, st_nnx, batch(i), teacher=teacher)
        st_linen, m_linen = kd_linen.step(st_linen, batch(i))
        np.testing.assert_allclose(m_nnx["loss"], m_linen["loss"], rtol=1e-5)
    chex.assert_trees_all_close(
        jc.flax.param_dict(student), st_linen.student.params, rtol=1e-5, atol=1e-6
    )
    chex.assert_trees_all_close(st_nnx.projections, st_linen.projections, rtol=1e-5, atol=1e-6)
    assert int(st_nnx.compression.count) == 2 and int(opt.step[...]) == 2
    # the teacher is never changed
    chex.assert_trees_all_equal(jc.flax.param_dict(teacher), t_params)


def test_nnx_compressed_student_trains_lsq_scales_like_linen():
    """A jc.flax.Compressed student: LSQ step sizes train, as with the linen TrainState."""
    teacher, student = models()
    comp = jc.rules([(".*/kernel", jc.quant.qat(bits=4, learn_scale=True)), (".*", None)])
    t_params, s_params = jc.flax.param_dict(teacher), jc.flax.param_dict(student)
    cmodel = jc.flax.Compressed(student, comp)
    scales0 = jc.trainable(cmodel.compression_state)
    opt = nnx.Optimizer(cmodel, optax.sgd(0.1), wrt=nnx.Param)
    kd_nnx = jc.flax.nnx_distiller(temperature=3.0, alpha=0.3, hints=[HINT])
    b = batch()
    st_nnx = kd_nnx.init(cmodel, opt, teacher, sample_x=b["x"], key=jax.random.key(4))
    assert st_nnx.compression is None  # the state lives in the wrapper

    linen_student, linen_teacher = jc.workloads.MLP((8, 10)), jc.workloads.MLP((32, 10))
    state = jc.flax.TrainState.create(
        apply_fn=linen_student.apply, params=s_params, tx=optax.sgd(0.1), compressor=comp
    )
    kd_linen = jc.flax.distiller(linen_teacher.apply, temperature=3.0, alpha=0.3, hints=[HINT])
    st_linen = kd_linen.init(state, {"params": t_params}, sample_x=b["x"], key=jax.random.key(4))
    for i in range(2):
        st_nnx, m_nnx = kd_nnx.step(cmodel, opt, st_nnx, batch(i), teacher=teacher)
        st_linen, m_linen = kd_linen.step(st_linen, batch(i))
        np.testing.assert_allclose(m_nnx["loss"], m_linen["loss"], rtol=1e-5)
    scales = jc.trainable(cmodel.compression_state)
    assert len(jax.tree.leaves(scales)) == 2  # one step size per kernel
    for before, after in zip(jax.tree.leaves(scales0), jax.tree.leaves(scales), strict=True):
        assert not np.allclose(before, after)  # the step sizes were trained
    chex.assert_trees_all_close(
        scales, jc.trainable(st_linen.student.compression), rtol=1e-5, atol=1e-7
    )
    chex.assert_trees_all_close(cmodel.params, st_linen.student.params, rtol=1e-5, atol=1e-6)
    assert int(opt.step[...]) == 2
    with pytest.raises(ValueError, match="its own compressor"):
        jc.flax.nnx_distiller(compressor=jc.quant.qat(bits=8)).init(cmodel, opt)


class MaskState(NamedTuple):
    count: jax.Array  # int32[]
    mask: Any  # per-leaf bool keep-mask (a checkerboard on kernels, None on biases)


def checkerboard_prune():
    """A test pruner: keeps half of every kernel; update zeroes the rest of the params."""

    def init(params):
        def mask(w):
            if w.ndim < 2:
                return None
            i, j = jnp.meshgrid(jnp.arange(w.shape[0]), jnp.arange(w.shape[1]), indexing="ij")
            return (i + j) % 2 == 0

        return MaskState(jnp.zeros([], jnp.int32), jax.tree.map(mask, params))

    def apply(params, state):
        return jax.tree.map(lambda w, m: w if m is None else w * m, params, state.mask,
                            is_leaf=lambda x: x is None)  # fmt: skip

    def update(params, state, grads=None):
        return apply(params, state), state._replace(count=state.count + 1)

    return jc.Compressor(init, apply, update)


def test_nnx_pruning_dropout_sown_features_no_retrace():
    teacher, student = models(dropout=0.5)
    opt = nnx.Optimizer(student, optax.sgd(0.1), wrt=nnx.Param)
    traces = []

    def augment(key, x):
        traces.append(1)  # runs once per trace of the step
        return x + 0.05 * jax.random.normal(key, x.shape)

    kd = jc.flax.nnx_distiller(
        compressor=checkerboard_prune(),
        temperature=2.0,
        hints=[jc.flax.Hint("hidden", "hidden", metric="cosine")],
        augment=augment,
    )
    state = kd.init(student, opt, teacher, sample_x=batch()["x"], key=jax.random.key(0))
    rng_count0 = int(student.drop.rngs.count[...])
    for i in range(3):
        state, metrics = kd.step(
            student, opt, state, batch(i), teacher=teacher, key=jax.random.key(i)
        )
    assert len(traces) == 1  # no retrace on steps 2 and 3
    kernel = student.Dense_0.kernel[...]
    assert int(jnp.sum(kernel == 0)) == kernel.size // 2  # compressor.update's zeros written back
    assert int(student.drop.rngs.count[...]) == rng_count0 + 3  # dropout rng state written back
    assert "hint/hint_0" in metrics and np.isfinite(float(metrics["loss"]))


def test_nnx_cached_and_self_teachers():
    teacher, student = models()
    opt = nnx.Optimizer(student, optax.sgd(0.1), wrt=nnx.Param)
    b = batch(2)
    comp = jc.quant.qat(bits=2)

    t_def, t_state = nnx.split(teacher)
    s_def, s_state, s_rest = nnx.split(student, nnx.Param, ...)

    @jax.jit
    def reference(t_state, s_state, s_rest, x):
        """Teacher logits, and the KD losses of the cached and self modes, by hand."""
        t_logits = call(nnx.merge(t_def, t_state), x)
        f_logits = call(nnx.merge(s_def, s_state, s_rest), x)
        p = nnx.to_pure_dict(s_state)
        q_state = jax.tree.map(lambda v: v, s_state)
        nnx.replace_by_pure_dict(q_state, comp.apply(p, comp.init(p)))
        q_logits = call(nnx.merge(s_def, q_state, s_rest), x)
        return (
            t_logits,
            jc.distill.kd_loss(f_logits, t_logits, temperature=2.0).mean(),
            jc.distill.kd_loss(q_logits, f_logits, temperature=1.0).mean(),
        )

    s_params = jc.flax.param_dict(student)
    logits, ref_cached, ref_self = reference(t_state, s_state, s_rest, b["x"])
    cached = jc.flax.nnx_distiller(teacher="cached", temperature=2.0)
    _, m = cached.step(student, opt, cached.init(student, opt), {**b, "teacher_logits": logits})
    np.testing.assert_allclose(m["kd"], ref_cached, rtol=1e-5)
    assert not np.allclose(
        jc.flax.param_dict(student)["Dense_0"]["kernel"], s_params["Dense_0"]["kernel"]
    )
    with pytest.raises(ValueError, match="'teacher_logits' entry"):
        cached.step(student, opt, cached.init(student, opt), b)
    # self: the 2-bit view distils from the student's own float params
    _, student = models()
    opt = nnx.Optimizer(student, optax.sgd(0.1), wrt=nnx.Param)
    kd_self = jc.flax.nnx_distiller(teacher="self", compressor=comp, temperature=1.0)
    _, m = kd_self.step(student, opt, kd_self.init(student, opt), b)
    np.testing.assert_allclose(m["kd"], ref_self, rtol=1e-5)
    assert float(m["kd"]) > 0


class ScaleState(NamedTuple):
    count: jax.Array  # int32[]
    trainable: Any  # per-leaf float32[] multiplier


def learned_scale():
    def init(params):
        return ScaleState(jnp.zeros([], jnp.int32), jax.tree.map(lambda _: jnp.ones([]), params))

    def apply(params, state):
        return jax.tree.map(lambda w, s: w * s, params, state.trainable)

    def update(params, state, grads=None):
        return params, state._replace(count=state.count + 1)

    return jc.Compressor(init, apply, update)


def test_nnx_errors():
    teacher, student = models()
    opt = nnx.Optimizer(student, optax.sgd(0.1), wrt=nnx.Param)
    with pytest.raises(ValueError, match="trainable variables"):
        jc.flax.nnx_distiller(compressor=learned_scale()).init(student, opt)
    with pytest.raises(ValueError, match="teacher must be 'module', 'self' or 'cached'"):
        jc.flax.nnx_distiller(teacher="frozen")
    with pytest.raises(TypeError, match="jc.Compressor"):
        jc.flax.nnx_distiller(compressor=object())
    kd = jc.flax.nnx_distiller(num_teachers=2)
    with pytest.raises(ValueError, match="2 nnx.Module teacher"):
        kd.step(student, opt, kd.init(student, opt), batch(), teacher=teacher)
    with pytest.raises(ValueError, match=r"no captured feature 'nope'.*Dense_0/__call__"):
        jc.flax.nnx_distiller(hints=[jc.flax.Hint("nope", "hidden")]).init(
            student, opt, teacher, sample_x=batch()["x"], key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="cached teacher logits do not have"):
        jc.flax.nnx_distiller(teacher="cached", hints=[HINT])
