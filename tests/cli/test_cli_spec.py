"""Method specs: parsed with ast, resolved by attribute lookup, never evaluated."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcompress as jc
from jaxcompress.cli import _spec
from jaxcompress.cli._errors import UsageError

PARAMS = {"Dense_0": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4), "bias": jnp.ones(4)}}


def test_resolve_public_factories():
    assert _spec.resolve("quant.qat") is jc.quant.qat
    assert _spec.resolve("jc.prune.magnitude") is jc.prune.magnitude
    assert _spec.resolve("jaxcompress.chain") is jc.chain
    assert _spec.resolve("optax.linear_schedule") is optax.linear_schedule


def test_build_matches_direct_construction():
    comp = _spec.build(
        "chain(prune.magnitude(sparsity), quant.qat(bits=bits, channel_axis=-1))",
        {"bits": 4, "sparsity": 0.5},
    )
    ref = jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(bits=4, channel_axis=-1))
    p = {"w": PARAMS["Dense_0"]["kernel"]}
    views = jax.jit(lambda p: [c.apply(p, c.init(p))["w"] for c in (comp, ref)])(p)
    np.testing.assert_array_equal(views[0], views[1])
    assert int((views[0] == 0).sum()) == 8


def test_literals_and_nested_calls():
    # tuples, dicts, negative numbers, None, and an optax schedule as an argument
    sched = _spec.build("optax.piecewise_constant_schedule(0.5, {10: 2.0, -1: 1.0})")
    assert float(sched(20)) == 1.0
    assert _spec.build("quant.qat(bits=8, channel_axis=None)") is not None
    assert _spec.build(None) is None
    assert _spec.build("None") is None
    ident = jc.identity()
    assert _spec.build(ident) is ident  # an object built in the recipe passes through


def test_hparams_are_tracked():
    comp, used = _spec.build_compressor(
        [(".*/kernel", "quant.qat(bits=bits)"), (".*/bias", None)], {"bits": 8, "unused": 3}
    )
    assert used == {"bits"}
    state = comp.init(PARAMS)
    assert jc.summary(comp, PARAMS, state).leaves[1].bits == 8


@pytest.mark.parametrize(
    "spec, match",
    [
        ("quant.qat(bits=", "does not parse"),
        ("quant.qat", "must be a call"),
        ("quant.nope(bits=8)", "has no attribute 'nope'.*qat"),
        ("quant._qat.qat(bits=8)", "private name"),
        ("quant(bits=8)", "not callable"),
        ("quant.qat(bits=1 + 1)", "BinOp is not allowed"),
        ("quant.qat(bits=(lambda: 8)())", "only calls of dotted names"),
        ("quant.qat(*[8])", "'\\*' arguments"),
        ("quant.qat(**{'bits': 8})", "'\\*\\*' arguments"),
        ("quant.qat(bits=nbits)", "unknown hyper-parameter 'nbits'.*bits"),
        ("quant.qat(bits=12)", "bits must be an integer in 1..8, 'binary' or 'ternary', got 12"),
        ("quant.qat(bits=8, colour=1)", "unexpected keyword"),
        ("quant.qat(bits=-'a')", "sign applies to numbers"),
        ("__import__('os').system('true')", "only calls of dotted names|has no attribute"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(UsageError, match=match) as e:
        _spec.build(spec, {"bits": 8}, where="compress.rules[0]")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith("compress.rules[0]")


def test_names_outside_the_packages_are_refused(monkeypatch):
    # a public attribute that leads to another package (here numpy) cannot be called
    monkeypatch.setattr(jc.quant, "numpy_alias", np, raising=False)
    with pytest.raises(UsageError, match="outside jaxcompress/optax"):
        _spec.build("quant.numpy_alias.save('x', 1)")


def test_rule_list_errors():
    with pytest.raises(UsageError, match="must be a \\(regex, spec\\) pair"):
        _spec.build_compressor([".*"])
    with pytest.raises(UsageError, match="builds a .*not a jc.Compressor"):
        _spec.build_compressor([(".*", "optax.constant_schedule(1.0)")])
    with pytest.raises(UsageError, match="does not compile"):
        _spec.build_compressor([("(", "quant.qat(bits=8)")])


def test_rule_matching_nothing_is_reported_at_init():
    comp, _ = _spec.build_compressor([("Conv_.*", "quant.qat(bits=8)")])
    with pytest.raises(ValueError, match="matches no leaf.*Dense_0/kernel"):
        jax.eval_shape(comp.init, PARAMS)
