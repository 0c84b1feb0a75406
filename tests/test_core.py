"""The core contract: identity, chain, rules, trainable convention, summary, finalize, errors."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcompress as jc


def mlp_params():
    k = jax.random.split(jax.random.key(0), 2)
    return {
        "params": {
            "Dense_0": {"kernel": jax.random.normal(k[0], (8, 4)), "bias": jnp.zeros(4)},
            "Dense_1": {"kernel": jax.random.normal(k[1], (4, 2)), "bias": jnp.zeros(2)},
        }
    }


# --- a test-only compressor with a trainable field, to exercise the convention -------------


class _ScaleState(NamedTuple):
    count: jax.Array  # int32[]
    trainable: Any  # per-leaf float32[] learned multiplier


def _learned_scale() -> jc.Compressor:
    def init(params):
        return _ScaleState(jnp.zeros([], jnp.int32), jax.tree.map(lambda _: jnp.ones([]), params))

    def apply(params, state):
        return jax.tree.map(lambda w, s: w * s, params, state.trainable)

    def update(params, state, grads=None):
        return params, state._replace(count=state.count + 1)

    return jc.Compressor(init, apply, update)


def test_identity_is_identity():
    p = mlp_params()
    comp = jc.identity()
    s = comp.init(p)
    chex.assert_trees_all_equal(comp.apply(p, s), p)
    p2, s2 = comp.update(p, s, p)
    chex.assert_trees_all_equal(p2, p)
    assert s2 == s


def test_rules_routes_by_full_path_first_match_wins():
    p = mlp_params()
    comp = jc.rules(
        [
            ("params/Dense_0/kernel", jc.prune.magnitude(0.5)),
            (".*/kernel", jc.quant.qat(bits=2)),
            (".*/bias", None),
        ]
    )
    s = comp.init(p)
    v = comp.apply(p, s)
    k0 = v["params"]["Dense_0"]["kernel"]
    assert int((k0 == 0).sum()) == 16  # pruned, not quantized
    k1 = v["params"]["Dense_1"]["kernel"]
    # 2-bit symmetric per channel: levels {-1, 0, 1} * scale per column
    for c in range(2):
        assert np.unique(np.asarray(k1[:, c])).size <= 3
    chex.assert_trees_all_equal(v["params"]["Dense_0"]["bias"], p["params"]["Dense_0"]["bias"])
    # fullmatch: "Dense_0" alone does not match "params/Dense_0/kernel"
    with pytest.raises(ValueError, match="matches no leaf"):
        jc.rules([("Dense_0", jc.identity())]).init(p)


def test_rules_error_lists_paths():
    p = mlp_params()
    with pytest.raises(ValueError) as e:
        jc.rules([(".*/embedding", jc.quant.qat(8))]).init(p)
    msg = str(e.value)
    assert (
        "'.*/embedding'" in msg and "params/Dense_0/kernel" in msg and "params/Dense_1/bias" in msg
    )


def test_rules_shadowed_rule_is_an_error():
    p = mlp_params()
    with pytest.raises(ValueError, match="only leaves taken by earlier rules"):
        jc.rules([(".*", None), (".*/kernel", jc.quant.qat(8))]).init(p)


@pytest.mark.parametrize(
    "bad, exc, pattern",
    [
        ([("(", jc.identity())], ValueError, "does not compile"),
        ([(".*", "qat")], TypeError, "not a jc.Compressor"),
        (["x"], TypeError, "pair"),
    ],
)
def test_rules_bad_construction(bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        jc.rules(bad)


def test_chain_rejects_non_compressor():
    with pytest.raises(TypeError, match="argument 1"):
        jc.chain(jc.identity(), lambda p: p)


def test_chain_order_prune_then_quantize():
    p = {"w": jnp.array([[0.1, 4.0], [-2.0, 0.2], [3.0, -0.05], [1.0, 2.0]])}
    comp = jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=8))
    s = comp.init(p)
    v = comp.apply(p, s)
    pruned = jc.prune.magnitude(0.5)
    ps = pruned.init(p)
    q = jc.quant.qat(bits=8)
    pv = pruned.apply(p, ps)
    expected = q.apply(pv, q.init(pv))
    chex.assert_trees_all_close(v, expected)
    assert int((v["w"] == 0).sum()) == 4


def test_update_of_chain_sees_rewritten_params():
    p = {"w": jnp.arange(1.0, 9.0).reshape(4, 2)}
    comp = jc.chain(jc.prune.magnitude(0.5), jc.identity())
    s = comp.init(p)
    p2, _ = comp.update(p, s)
    assert int((p2["w"] == 0).sum()) == 4  # update zeroes pruned stored params


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"a": {"w": jnp.ones((2, 2)), "lr": 0.1}}, r"'a/lr' is not an array .*float: 0\.1"),
        ({"a": {"w": jnp.ones((2, 2)), "name": "x"}}, r"'a/name' is not an array"),
    ],
)
def test_non_array_leaves_are_rejected(params, pattern):
    for comp in (jc.quant.qat(8), jc.prune.magnitude(0.5), jc.rules([(".*", jc.identity())])):
        with pytest.raises(ValueError, match=pattern):
            comp.init(params)


def test_integer_leaf_routed_to_float_method():
    p = {"emb": {"ids": jnp.arange(6, dtype=jnp.int32).reshape(2, 3)}, "w": jnp.ones((2, 2))}
    for comp in (jc.quant.qat(8), jc.prune.magnitude(0.5)):
        with pytest.raises(ValueError, match=r"'emb/ids' has dtype int32"):
            jc.rules([(".*", comp)]).init(p)
    # routed to None it is fine
    jc.rules([("emb/.*", None), ("w", jc.quant.qat(8))]).init(p)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_bad_sparsity(sparsity):
    with pytest.raises(ValueError, match=re.escape(repr(sparsity))):
        jc.prune.magnitude(sparsity)


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, "8"])
def test_bad_bits(bits):
    with pytest.raises(ValueError, match=re.escape(repr(bits))):
        jc.quant.qat(bits=bits)


def test_trainable_roundtrip_and_nesting():
    p = mlp_params()
    comp = jc.rules([(".*/kernel", jc.chain(_learned_scale(), jc.quant.qat(8))), (".*", None)])
    s = comp.init(p)
    t = jc.trainable(s)
    leaves = jax.tree.leaves(t)
    assert len(leaves) == 2 and all(x.shape == () for x in leaves)
    doubled = jax.tree.map(lambda x: 2 * x, t)
    s2 = jc.with_trainable(s, doubled)
    chex.assert_trees_all_equal(jc.trainable(s2), doubled)
    # other state leaves untouched
    assert jc.state_fields(s2, "count") == jc.state_fields(s, "count")


def test_compressed_view_differentiates_trainables():
    p = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    comp = _learned_scale()
    s = comp.init(p)

    def loss(v):
        return jnp.sum(jc.compressed_view(comp, v, s)["w"])

    g = jax.grad(loss)(jc.Trainables(p, jc.trainable(s)))
    chex.assert_trees_all_close(g.params["w"], jnp.ones((2, 2)))
    chex.assert_trees_all_close(g.compression["w"], jnp.asarray(10.0))


def test_summary_counts_bits_sparsity_bytes_exactly():
    p = mlp_params()
    comp = jc.rules(
        [
            ("params/Dense_0/kernel", jc.chain(jc.prune.magnitude(0.75), jc.quant.qat(4))),
            ("params/Dense_1/kernel", jc.quant.qat(8)),
            (".*", None),
        ]
    )
    s = comp.init(p)
    summ = jc.summary(comp, p, s)
    rows = {r.path: r for r in summ.leaves}
    r0 = rows["params/Dense_0/kernel"]
    assert (r0.bits, r0.sparsity) == (4, 0.75)
    assert r0.logical_bytes == 8 * 4 // 8 + 32 // 8  # 8 kept at 4 bits + 32-bit mask
    r1 = rows["params/Dense_1/kernel"]
    assert (r1.bits, r1.sparsity, r1.logical_bytes) == (8, 0.0, 8)
    rb = rows["params/Dense_0/bias"]
    assert (rb.bits, rb.logical_bytes) == (32, 16)
    assert summ.float32_bytes == 4 * (32 + 4 + 8 + 2)
    assert summ.logical_bytes == 8 + 8 + 16 + 8
    assert summ.ratio == pytest.approx(summ.float32_bytes / summ.logical_bytes)
    text = str(summ)
    assert "params/Dense_0/kernel" in text and "75.0%" in text and "smaller" in text
    d = summ.to_dict()
    assert d["num_params"] == 46 and len(d["leaves"]) == 4
    # state: every array of the nested state (the 32-entry bool mask, scales, counts ...)
    expected_state = sum(np.asarray(x).nbytes for x in jax.tree.leaves(s))
    assert summ.state_bytes == expected_state and expected_state >= 32
    assert summ.param_bytes == 46 * 4
    assert summ.state_ratio == pytest.approx(expected_state / 184)
    assert "of the stored params" in text


def test_finalize_has_no_gradient_path():
    p = {"w": jnp.array([[1.0, -3.0], [0.5, 2.0]])}
    comp = jc.quant.qat(8)
    s = comp.init(p)
    g = jax.grad(lambda q: jnp.sum(jc.finalize(comp, q, s)["w"]))(p)
    chex.assert_trees_all_equal(g["w"], jnp.zeros((2, 2)))
    g2 = jax.grad(lambda q: jnp.sum(comp.apply(q, s)["w"]))(p)
    chex.assert_trees_all_equal(g2["w"], jnp.ones((2, 2)))


def test_public_api_is_exported():
    for name in jc.__all__:
        assert getattr(jc, name) is not None, name
