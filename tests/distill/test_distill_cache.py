"""teacher_logits: batched teacher inference over a data set, cached on disk by fingerprint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


class Counting:
    """A linear 'teacher' whose Python body counts how often JAX traces it."""

    def __init__(self):
        self.traces = 0

    def __call__(self, variables, x):
        self.traces += 1
        return x @ variables["w"] + variables["b"][None, :]


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    variables = {
        "w": rng.standard_normal((6, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
    }
    x = rng.standard_normal((23, 6)).astype(np.float32)
    return variables, x


def test_matches_direct_apply_with_a_partial_last_batch():
    variables, x = _setup()
    apply = Counting()
    got = jc.distill.teacher_logits(apply, variables, x, batch_size=5)
    assert got.shape == (23, 4) and got.dtype == np.float32 and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, x @ variables["w"] + variables["b"], rtol=1e-5, atol=1e-5)
    assert apply.traces == 1  # 5 batches, the last one padded: a single compilation
    half = jc.distill.teacher_logits(apply, variables, x, batch_size=64, dtype=np.float16)
    assert half.dtype == np.float16 and half.shape == (23, 4)


def test_cache_is_reused_and_invalidated(tmp_path):
    variables, x = _setup()
    path = tmp_path / "cache" / "teacher.npz"
    apply = Counting()
    first = jc.distill.teacher_logits(apply, variables, x, batch_size=8, cache=path)
    assert path.exists() and apply.traces == 1
    again = Counting()
    second = jc.distill.teacher_logits(again, variables, x, batch_size=8, cache=path)
    assert again.traces == 0  # loaded, the teacher never ran
    np.testing.assert_array_equal(first, second)
    # New teacher weights: a different fingerprint, so the logits are recomputed and stored.
    changed = {"w": variables["w"] * 2, "b": variables["b"]}
    third = jc.distill.teacher_logits(again, changed, x, batch_size=8, cache=path)
    assert again.traces == 1
    np.testing.assert_allclose(third, x @ changed["w"] + changed["b"], rtol=1e-5, atol=1e-5)
    # Different data: recomputed too.
    fourth = jc.distill.teacher_logits(again, changed, x[:10], batch_size=8, cache=path)
    assert fourth.shape == (10, 4)
    np.testing.assert_allclose(fourth, third[:10], rtol=1e-6)


def test_flax_model_and_errors():
    model = jc.workloads.MLP((8, 3))
    x = np.ones((5, 4), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x[:1]))
    variables = jax.tree.map(lambda s: np.full(s.shape, 0.1, np.float32), shapes)
    got = jc.distill.teacher_logits(model.apply, variables, x, batch_size=2)
    np.testing.assert_allclose(got, model.apply(variables, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        jc.distill.teacher_logits(model.apply, variables, x, batch_size=0)
    with pytest.raises(ValueError, match="at least one example"):
        jc.distill.teacher_logits(model.apply, variables, x[:0])
