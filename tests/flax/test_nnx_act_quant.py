"""NNX activation quantization on a whole model: quantize / calibrate_nnx_activations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax

import jaxcompress as jc

X = jax.random.normal(jax.random.key(0), (4, 6, 6, 2)) * 2.0
Y = jnp.array([0, 1, 2, 1])


class Net(nnx.Module):
    def __init__(self, seed=0):
        rngs = nnx.Rngs(seed)
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.mlp = nnx.Sequential(
            nnx.Linear(4, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 3, rngs=rngs)
        )

    def __call__(self, x):
        return self.mlp(jax.nn.relu(self.conv(x)).mean(axis=(1, 2)))


PATHS = ["conv", "mlp/layers/0", "mlp/layers/2"]


def _manual(net, x, bits=8, absmax=None):
    """The forward with every layer input fake-quantized by hand (per token over features)."""
    a = absmax or {}

    def fq(v, path):
        return jc.quant.fake_quant_activation(v, bits, absmax=a.get(path))

    h = lax.conv_general_dilated(
        fq(x, "conv"),
        net.conv.kernel[...],
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    h = jax.nn.relu(h + net.conv.bias[...].reshape(1, 1, 1, -1)).mean(axis=(1, 2))
    l0, l2 = net.mlp.layers[0], net.mlp.layers[2]
    h = jax.nn.relu(fq(h, "mlp/layers/0") @ l0.kernel[...] + l0.bias[...][None])
    return fq(h, "mlp/layers/2") @ l2.kernel[...] + l2.bias[...][None]


def test_hooks_every_layer_matches_the_manual_forward_and_restores():
    net = Net()
    plain = net(X)
    assert jc.flax.quantize_nnx_activations(net, 4) == PATHS
    got = net(X)
    np.testing.assert_allclose(np.asarray(got), np.asarray(_manual(net, X, 4)), atol=1e-5)
    assert not np.allclose(np.asarray(got), np.asarray(plain), atol=1e-3)
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, x: m(x))(net, X)), got, atol=1e-6)
    # calling again replaces the hooks (no double quantization)
    jc.flax.quantize_nnx_activations(net, 4)
    np.testing.assert_allclose(np.asarray(net(X)), np.asarray(got), atol=1e-6)
    # bits=None: the float model again, bit for bit
    assert jc.flax.quantize_nnx_activations(net, None) == PATHS
    assert net.conv.conv_general_dilated is lax.conv_general_dilated
    np.testing.assert_array_equal(np.asarray(net(X)), np.asarray(plain))


def test_calibrated_static_ranges():
    net = Net()
    batches = [X[:2], X[2:]]
    before = net(X)
    ranges = jc.flax.calibrate_nnx_activations(net, batches)
    assert list(ranges) == PATHS
    # the model is left as it was
    assert net.mlp.layers[0].dot_general is lax.dot_general
    np.testing.assert_array_equal(np.asarray(net(X)), np.asarray(before))
    # minmax: max |input| of each layer over the batches
    h0 = jax.nn.relu(net.conv(X)).mean(axis=(1, 2))
    h2 = jax.nn.relu(net.mlp.layers[0](h0))
    for path, inp in (("conv", X), ("mlp/layers/0", h0), ("mlp/layers/2", h2)):
        np.testing.assert_allclose(float(ranges[path]), float(jnp.max(jnp.abs(inp))), rtol=1e-6)
    # ema combines the per-batch maxima
    ema = jc.flax.calibrate_nnx_activations(net, batches, method="ema", ema_decay=0.5)
    m0, m1 = (float(jnp.max(jnp.abs(b))) for b in batches)
    np.testing.assert_allclose(float(ema["conv"]), 0.5 * m0 + 0.5 * m1, rtol=1e-6)
    pct = jc.flax.calibrate_nnx_activations(net, batches, method="percentile", percentile=50.0)
    assert float(pct["conv"]) < float(ranges["conv"])
    # static ranges clip: a range below the data changes the outputs as the manual forward does
    small = {p: 0.5 * r for p, r in ranges.items()}
    jc.flax.quantize_nnx_activations(net, 8, ranges=small)
    want = _manual(net, X, 8, small)
    np.testing.assert_allclose(np.asarray(net(X)), np.asarray(want), atol=1e-5)


def test_exclude_and_errors():
    net = Net()
    assert jc.flax.quantize_nnx_activations(net, 8, exclude="mlp/layers/2") == PATHS[:2]
    assert net.mlp.layers[2].dot_general is lax.dot_general
    with pytest.raises(ValueError, match=r"no static range for layer\(s\) \['mlp/layers/2'\]"):
        jc.flax.quantize_nnx_activations(Net(), 8, ranges={"conv": 1.0, "mlp/layers/0": 1.0})
    full = {p: 1.0 for p in PATHS}
    for bad in (-1.0, 0.0, float("nan"), jnp.ones(2)):
        fresh = Net()
        with pytest.raises(ValueError, match="'mlp/layers/0' must be a finite positive scalar"):
            jc.flax.quantize_nnx_activations(fresh, 8, ranges={**full, "mlp/layers/0": bad})
        assert fresh.conv.conv_general_dilated is lax.conv_general_dilated  # nothing half-done
    with pytest.raises(ValueError, match="bits"):
        jc.flax.quantize_nnx_activations(Net(), 1)
    with pytest.raises(ValueError, match="residuals"):
        jc.flax.quantize_nnx_activations(Net(), 8, residuals="both")
    with pytest.raises(ValueError, match="no layer"):
        jc.flax.quantize_nnx_activations(Net(), 8, exclude=".*")
    with pytest.raises(ValueError, match="no dot_general / conv_general_dilated hook"):
        jc.flax.quantize_nnx_activations(Net(), 8, types=(nnx.BatchNorm,))
    with pytest.raises(ValueError, match="method"):
        jc.flax.calibrate_nnx_activations(Net(), [X], method="kl")
    with pytest.raises(ValueError, match="no calibration batch"):
        jc.flax.calibrate_nnx_activations(Net(), [])
    own = Net()
    own.mlp.layers[0].dot_general = lambda *a, **k: lax.dot_general(*a, **k)
    with pytest.raises(ValueError, match="'mlp/layers/0' has its own dot_general"):
        jc.flax.quantize_nnx_activations(own, 8)
    assert own.conv.conv_general_dilated is lax.conv_general_dilated  # nothing half-done
    # bits=None restores only the hooks this function set
    paths = jc.flax.quantize_nnx_activations(own, 8, exclude="mlp/layers/0")
    assert paths == ["conv", "mlp/layers/2"]
    mine = own.mlp.layers[0].dot_general
    assert jc.flax.quantize_nnx_activations(own, None) == ["conv", "mlp/layers/2"]
    assert own.mlp.layers[0].dot_general is mine
    assert own.mlp.layers[2].dot_general is lax.dot_general


class _Unused(nnx.Module):
    def __init__(self):
        self.spare = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return x * 2.0


def test_calibration_of_a_model_that_calls_no_layer_raises():
    with pytest.raises(ValueError, match="was called"):
        jc.flax.calibrate_nnx_activations(_Unused(), [jnp.ones((1, 2))])


@pytest.mark.parametrize("int_matmul", [False, True])
def test_w8a8_nnx_model_trains(int_matmul):
    net = Net(seed=1)
    jc.flax.quantize_nnx_activations(net, 8, int_matmul=int_matmul)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    comp = jc.rules([(".*/kernel.*", jc.quant.qat(bits=8)), (".*", None)])
    cstate = comp.init(params)
    tx = optax.adam(3e-2)

    def loss(p):
        model = nnx.merge(graphdef, comp.apply(p, cstate), rest)
        return optax.softmax_cross_entropy_with_integer_labels(model(X), Y).mean()

    @jax.jit
    def step(p, opt):
        g = jax.grad(loss)(p)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt

    opt = tx.init(params)
    first = float(loss(params))
    for _ in range(25):
        params, opt = step(params, opt)
    assert float(loss(params)) < 0.5 * first
