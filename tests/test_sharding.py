"""State shardings derived from param shardings (8-device CPU mesh)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcompress as jc

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 CPU devices")


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def test_derive_sharding_rules(mesh):
    s = NamedSharding(mesh, P("data", "model"))
    assert jc.derive_sharding(s, (32, 16), (32, 16)).spec == P("data", "model")
    assert jc.derive_sharding(s, (32, 16), (1, 16)).spec == P(None, "model")
    assert jc.derive_sharding(s, (32, 16), (8, 16)).spec == P("data", "model")  # groups
    assert jc.derive_sharding(s, (32, 16), (2, 16)).spec == P(None, "model")  # 4 ∤ 2
    assert jc.derive_sharding(s, (32, 16), (16,)).spec == P()
    assert jc.derive_sharding(s, (32, 16), ()).spec == P()


def test_state_shardings_place_masks_with_params(mesh):
    params = {
        "a": {"kernel": jnp.ones((32, 16)), "bias": jnp.ones(16)},
        "b": {"kernel": jnp.ones((16, 8))},
    }
    shardings = {
        "a": {
            "kernel": NamedSharding(mesh, P("data", "model")),
            "bias": NamedSharding(mesh, P("model")),
        },
        "b": {"kernel": NamedSharding(mesh, P(None, "model"))},
    }
    sharded = jax.device_put(params, shardings)
    comp = jc.rules(
        [(".*/kernel", jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(4))), (".*", None)]
    )
    sh = jc.state_shardings(comp, sharded)
    state = jax.jit(comp.init, out_shardings=sh)(sharded)
    mag, qat = state.states[0].states
    assert mag.mask["a"]["kernel"].sharding.spec == P("data", "model")
    assert mag.mask["b"]["kernel"].sharding.spec == P(None, "model")
    assert mag.mask["a"]["bias"] is None
    assert mag.count.sharding.spec == P()
    assert qat.bits["a"]["kernel"].sharding.spec == P()
    # same values as an unsharded init
    chex.assert_trees_all_equal(jax.device_get(state), jax.device_get(comp.init(params)))


def test_state_shardings_abstract_params(mesh):
    abstract = {
        "k": jax.ShapeDtypeStruct((32, 16), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    }
    sh = jc.state_shardings(jc.prune.magnitude(0.5), abstract)
    assert sh.mask["k"].spec == P("data", None) or sh.mask["k"].spec == P("data")


def test_state_shardings_needs_shardings():
    with pytest.raises(ValueError, match="'k' has no sharding"):
        jc.state_shardings(jc.identity(), {"k": jax.ShapeDtypeStruct((2, 2), jnp.float32)})
