"""hint_loss (FitNets, with a trainable projection) and attention transfer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc

hint_loss = jax.jit(jc.distill.hint_loss, static_argnames=("metric", "axis"))
at_loss = jax.jit(jc.distill.attention_transfer_loss, static_argnames=("p", "channel_axis"))


def rand(seed, shape, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_hint_metrics_hand_computed():
    s = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    t = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    np.testing.assert_allclose(hint_loss(s, t, metric="mse"), [12.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(hint_loss(s, t, metric="l2"), [5.0, math.sqrt(2.0)], rtol=1e-6)
    # cos([3, 4], [0, 0]) = 0 (zero vector); cos([1, 0], [0, 1]) = 0
    np.testing.assert_allclose(hint_loss(s, t, metric="cosine"), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(hint_loss(s, 2 * s, metric="cosine"), [0.0, 0.0], atol=1e-6)
    # axis=None reduces everything (mean over 4 entries)
    np.testing.assert_allclose(hint_loss(s, t, axis=None), 27.0 / 4, rtol=1e-6)
    # where: excluded positions are 0
    got = jc.distill.hint_loss(s, t, where=np.array([True, False]))
    np.testing.assert_allclose(got, [12.5, 0.0])


@pytest.mark.parametrize("metric", ["mse", "l2", "cosine"])
def test_hint_gradients_finite_and_teacher_gets_none(metric):
    s = rand(0, (4, 6))
    t = rand(1, (4, 6))
    gs, gt = jax.jit(jax.grad(lambda s, t: hint_loss(s, t, metric=metric).sum(), argnums=(0, 1)))(
        s, t
    )
    assert np.all(np.isfinite(gs)) and np.all(np.asarray(gt) == 0)
    # At s == t: zero gradient, not NaN (the L2 norm has no derivative at 0).
    g0 = jax.jit(jax.grad(lambda s: hint_loss(s, s + 0.0, metric=metric).sum()))(s)
    np.testing.assert_allclose(g0, 0.0, atol=1e-6)


def test_hint_shape_errors_suggest_projection():
    s, t = np.ones((8, 32), np.float32), np.ones((8, 64), np.float32)
    with pytest.raises(ValueError, match=r"\(8, 32\).*\(8, 64\).*init_projection\(key, 32, 64\)"):
        jc.distill.hint_loss(s, t)
    with pytest.raises(ValueError, match=r"\(8, 32\).*\(4, 64\)"):
        jc.distill.hint_loss(s, np.ones((4, 64), np.float32))
    proj = jc.distill.init_projection(jax.random.key(0), 16, 64)
    with pytest.raises(ValueError, match=r"width 32 but the projection kernel is \(16, 64\)"):
        jc.distill.hint_loss(s, t, projection=proj)
    with pytest.raises(ValueError, match="metric must be one of"):
        jc.distill.hint_loss(s, s, metric="kl")
    with pytest.raises(ValueError, match="positive integer"):
        jc.distill.init_projection(jax.random.key(0), 0, 4)
    with pytest.raises(ValueError, match=r"where must be a boolean mask of shape \(8,\)"):
        jc.distill.hint_loss(s, s, where=np.ones(8))
    with pytest.raises(TypeError, match="floating"):
        jc.distill.hint_loss(np.ones((8, 32), np.int32), s)


def test_hint_projection_trains():
    # The teacher features are an exact affine function of the (narrower) student features.
    s = rand(2, (64, 8))
    a, b = rand(3, (8, 16)), rand(4, (16,))
    t = s @ a + b
    proj = jc.distill.init_projection(jax.random.key(1), 8, 16)
    assert proj["kernel"].shape == (8, 16) and proj["bias"].shape == (16,)
    tx = optax.adam(0.05)

    @jax.jit
    def train(proj):
        def body(carry, _):
            proj, opt = carry
            loss, g = jax.value_and_grad(lambda p: hint_loss(s, t, projection=p).mean())(proj)
            upd, opt = tx.update(g, opt, proj)
            return (optax.apply_updates(proj, upd), opt), loss

        (proj, _), losses = jax.lax.scan(body, (proj, tx.init(proj)), None, length=300)
        return proj, losses

    proj, losses = train(proj)
    assert float(losses[-1]) < 1e-3 * float(losses[0])
    np.testing.assert_allclose(proj["kernel"], a, atol=2e-2)
    np.testing.assert_allclose(proj["bias"], b, atol=2e-2)


def test_attention_map_hand_computed():
    # [batch=1, h=2, w=1, c=2]: channel means of squares are (1+9)/2 = 5 and (4+0)/2 = 2.
    a = np.array([[[[1.0, 3.0]], [[2.0, 0.0]]]], np.float32)
    q = jc.distill.attention_map(a)
    np.testing.assert_allclose(q, [[5 / math.sqrt(29), 2 / math.sqrt(29)]], rtol=1e-6)
    # p = 1: mean |a| = 2 and 1
    np.testing.assert_allclose(
        jc.distill.attention_map(-a, p=1), [[2 / math.sqrt(5), 1 / math.sqrt(5)]], rtol=1e-6
    )
    # channels first
    np.testing.assert_allclose(
        jc.distill.attention_map(np.moveaxis(a, -1, 1), channel_axis=1), q, rtol=1e-6
    )
    # an all-zero map stays zero, with finite gradients
    z = np.zeros((1, 2, 2, 3), np.float32)
    assert np.all(np.asarray(jc.distill.attention_map(z)) == 0)
    g = jax.jit(jax.grad(lambda x: jc.distill.attention_map(x).sum()))(z)
    assert np.all(np.isfinite(g))


def test_attention_transfer_matches_reference_and_widths_may_differ():
    s = rand(5, (3, 4, 4, 8))
    t = rand(6, (3, 4, 4, 32))

    def at(x):  # the authors' reference: F.normalize(x.pow(2).mean(1).view(n, -1))
        q = (x.astype(np.float64) ** 2).mean(-1).reshape(x.shape[0], -1)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    ref = ((at(s) - at(t)) ** 2).mean(-1)
    np.testing.assert_allclose(at_loss(s, t), ref, rtol=1e-5)
    gs, gt = jax.jit(jax.grad(lambda s, t: at_loss(s, t).sum(), argnums=(0, 1)))(s, t)
    assert np.all(np.isfinite(gs)) and np.all(np.asarray(gt) == 0) and np.any(gs != 0)
    np.testing.assert_allclose(at_loss(t, t), 0.0, atol=1e-7)
    # sequences [batch, length, channels] work too
    assert at_loss(rand(7, (2, 5, 3)), rand(8, (2, 5, 6))).shape == (2,)


def test_attention_transfer_errors():
    with pytest.raises(ValueError, match=r"\(4, 8\); attention transfer needs spatial axes"):
        jc.distill.attention_transfer_loss(np.ones((4, 8)), np.ones((4, 8)))
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 8\).*\(2, 8, 8, 8\).*batch and spatial"):
        jc.distill.attention_transfer_loss(np.ones((2, 4, 4, 8)), np.ones((2, 8, 8, 8)))
    with pytest.raises(ValueError, match="p must be a number >= 1"):
        jc.distill.attention_map(np.ones((2, 4, 4, 8)), p=0.5)
    with pytest.raises(ValueError, match="batch axis"):
        jc.distill.attention_map(np.ones((2, 4, 4, 8)), channel_axis=0)
    with pytest.raises(ValueError, match=r"where must be a boolean mask of shape \(2,\)"):
        jc.distill.attention_transfer_loss(
            np.ones((2, 4, 4, 8)), np.ones((2, 4, 4, 8)), where=np.ones(3, bool)
        )


def test_bfloat16_features_compute_in_float32():
    s = jnp.asarray(rand(9, (2, 4, 4, 8)), jnp.bfloat16)
    t = jnp.asarray(rand(10, (2, 4, 4, 8)), jnp.bfloat16)
    assert at_loss(s, t).dtype == jnp.float32
    assert hint_loss(s, t).dtype == jnp.float32
    np.testing.assert_allclose(
        hint_loss(s, t), hint_loss(np.asarray(s, np.float32), np.asarray(t, np.float32)), rtol=1e-6
    )
