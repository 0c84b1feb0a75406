"""Pieces of the run: batches, evaluation, optimizers, models, artifacts, checkpoints."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import jaxcompress as jc
from jaxcompress import io as ckpt
from jaxcompress.cli import _artifact, _config, _train
from jaxcompress.cli._errors import UsageError


def test_batch_source_matches_workloads_batches():
    x = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    y = np.arange(23, dtype=np.int32)
    src = _train.BatchSource(x, y, 5, seed=7)
    stream = jc.workloads.batches(x, y, 5, seed=7)
    for step in range(13):  # 4 batches per epoch: crosses three epoch boundaries
        xb, yb = next(stream)
        sx, sy = src(step)
        np.testing.assert_array_equal(sx, xb)
        np.testing.assert_array_equal(sy, yb)
    # random access (a resumed run starting at step 9) gives the same batch
    np.testing.assert_array_equal(_train.BatchSource(x, y, 5, seed=7)(9)[1], src(9)[1])
    with pytest.raises(UsageError, match="batch_size must be in 1..23"):
        _train.BatchSource(x, y, 24, seed=0)


def test_num_steps():
    cfg = _config.defaults()
    cfg.train.steps = 7
    assert _train.num_steps(cfg.train, 1000) == 7
    _config.set_value(cfg, "train.epochs", 2.5)
    cfg.train.batch_size = 64
    assert _train.num_steps(cfg.train, 1000) == 38  # ceil(2.5 * 15)


@pytest.fixture(scope="module")
def tiny_classifier():
    model = jc.workloads.MLP((8, 3))
    params = _train.init_params(model, np.zeros((1, 5), np.float32), 0, 3)
    return model, params


@pytest.mark.parametrize("batch_size", [4, 7, 50])
def test_evaluator_matches_direct_computation(tiny_classifier, batch_size):
    model, params = tiny_classifier
    rng = np.random.default_rng(0)
    x = rng.normal(size=(17, 5)).astype(np.float32)
    y = rng.integers(0, 3, 17).astype(np.int32)
    logits = jax.jit(model.apply)({"params": params}, x)
    want_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
    want_correct = int((np.argmax(logits, -1) == y).sum())
    got = _train.Evaluator(model, _train.CLASSIFICATION, batch_size, None)(params, x, y)
    assert got["examples"] == 17
    np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-5)
    assert got["accuracy"] == want_correct / 17
    capped = _train.Evaluator(model, _train.CLASSIFICATION, batch_size, 6)(params, x, y)
    assert capped["examples"] == 6


def test_evaluator_language_model_counts_every_position():
    model = jc.workloads.CharTransformer(
        vocab_size=5, d_model=8, num_heads=2, num_layers=1, max_len=4
    )
    x = np.random.default_rng(1).integers(0, 5, (3, 4)).astype(np.int32)
    # random params from the shapes alone (compiling a transformer init costs seconds)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(s.dtype), shapes)
    got = _train.Evaluator(model, _train.LANGUAGE_MODEL, 2, None)(params, x, x)
    logits = jax.jit(model.apply)({"params": params}, x)
    want = float(optax.softmax_cross_entropy_with_integer_labels(logits, x).mean())
    np.testing.assert_allclose(got["loss"], want, rtol=1e-5)
    np.testing.assert_allclose(got["perplexity"], np.exp(want), rtol=1e-5)


def test_build_model_errors():
    with pytest.raises(
        UsageError, match="not a model of jc.workloads; known: CharTransformer, LeNet, MLP"
    ):
        _train.build_model("ResNet", {}, 10)
    with pytest.raises(UsageError, match="has no attribute\\(s\\) widht; it has: features"):
        _train.build_model("MLP", {"widht": 3}, 10)
    model, kw = _train.build_model("LeNet", {"features": [4, 8]}, 10)
    assert kw["num_classes"] == 10 and model.features == (4, 8)
    mlp, _ = _train.build_model("MLP", {"features": (8, 4)}, 10)
    with pytest.raises(UsageError, match="gives 4 outputs but the data set has 10 classes"):
        _train.init_params(mlp, np.zeros((1, 5), np.float32), 0, 10)


def test_make_optimizer():
    cfg = _config.defaults()
    cfg.train.optimizer = "sgd"
    cfg.train.optimizer_kwargs = {"momentum": 0.9}
    assert isinstance(_train.make_optimizer(cfg.train, 10), optax.GradientTransformation)
    for sched in _config.SCHEDULES:
        cfg.train.schedule = sched
        cfg.train.warmup_steps = 3
        s = _train.make_schedule(cfg.train, 10)
        assert float(s(0)) <= cfg.train.lr * (1 + 1e-6) and np.isfinite(float(s(10)))
    cfg.train.optimizer = "adamm"
    with pytest.raises(UsageError, match="'adamm' is not an optax optimizer"):
        _train.make_optimizer(cfg.train, 10)
    cfg.train.optimizer = "sgd"
    cfg.train.optimizer_kwargs = {"momentumm": 0.9}
    with pytest.raises(UsageError, match="train.optimizer sgd: .*momentumm"):
        _train.make_optimizer(cfg.train, 10)


def test_artifact_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    pruned = rng.normal(size=(16, 8)).astype(np.float32)
    pruned[rng.random((16, 8)) < 0.75] = 0
    params = {
        "Dense_0": {"kernel": jnp.asarray(pruned), "bias": jnp.arange(8, dtype=jnp.float32)},
        "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(8, 4)), jnp.bfloat16)},
    }
    _artifact.save(tmp_path / "artifact", params, {"model": {"name": "MLP"}})
    for where in (tmp_path, tmp_path / "artifact"):  # run folder or artifact folder
        back, meta = _artifact.load(where)
        assert jax.tree.structure(back) == jax.tree.structure(params)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
        assert meta["model"] == {"name": "MLP"}
    assert back["Dense_1"]["kernel"].dtype == ml_dtypes.bfloat16


def test_artifact_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no jaxcompress artifact"):
        _artifact.load(tmp_path)
    _artifact.save(tmp_path, {"w": jnp.ones(3)}, {})
    data = (tmp_path / "params.jca").read_bytes()
    (tmp_path / "params.jca").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="params.jca: corrupt artifact"):
        _artifact.load(tmp_path)
    (tmp_path / "params.jca").unlink()
    with pytest.raises(FileNotFoundError, match="params file params.jca is missing"):
        _artifact.load(tmp_path)
    meta = json.loads((tmp_path / "artifact.json").read_text())
    meta["version"] = 1  # the folder format with params.npz, before jc.io artifacts
    (tmp_path / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="version 1 is not supported"):
        _artifact.load(tmp_path)
    (tmp_path / "artifact.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a jaxcompress artifact"):
        _artifact.load(tmp_path)


def test_checkpoint_roundtrip_keeps_state_structure(tmp_path, tiny_classifier):
    model, params = tiny_classifier
    comp = jc.rules(
        [(".*kernel", jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(4))), (".*bias", None)]
    )
    tx = optax.adam(0.1)

    @jax.jit
    def create_and_step(params):
        state = jc.flax.TrainState.create(
            apply_fn=model.apply, params=params, tx=tx, compressor=comp
        )
        return state, state.apply_gradients(grads=jax.tree.map(jnp.ones_like, params))

    fresh, state = create_and_step(params)
    mgr = ckpt.checkpoint_manager(tmp_path / "ck", max_to_keep=2)
    try:
        assert ckpt.latest_step(mgr) is None
        ckpt.save(mgr, 1, state)
        back = ckpt.restore(mgr, fresh)
        assert ckpt.latest_step(mgr) == 1 and int(back.step) == 1
        assert jax.tree.structure(back.compression) == jax.tree.structure(state.compression)
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        mgr.close()
    assert ckpt.disk_bytes(tmp_path / "ck") > 0


@pytest.fixture(scope="module")
def distill_setup(tiny_classifier):
    model, params = tiny_classifier
    tx = optax.adam(0.1)
    state = jax.jit(
        lambda p: jc.flax.TrainState.create(
            apply_fn=model.apply, params=p, tx=tx, compressor=jc.identity()
        )
    )(params)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6).astype(np.int32)
    return state, params, x, y


def test_distillation_term_and_no_retrace(distill_setup):
    state, params, x, y = distill_setup
    plain = _train.make_train_step()
    want, want_loss = plain(state, x, y)
    # weight=1 and the teacher equal to the student: the logit-matching loss and its gradient
    # are exactly zero, so Adam leaves the params as they are
    kd = _train.make_train_step(optax.losses.squared_error, weight=1.0)
    new, loss = kd(state, x, y, params)
    assert float(loss) == 0.0
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    # without a teacher the same step is the plain cross-entropy step
    got, got_loss = kd(state, x, y)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # the jitted step is traced once: no retrace on later steps
    for _ in range(2):
        want, want_loss = plain(want, x, y)
    assert plain._cache_size() == 1
    assert int(want.step) == 3 and np.isfinite(float(want_loss))
