"""Scaling of weight sharing and low-rank projection with the size of a kernel.

For square float32 kernels of growing size, timed interleaved (medians, per backend):

* ``kmeans_init``: clustering one kernel (k-means++ seeding + 20 Lloyd iterations, jitted;
  counting assignment for small leaves, binary search for large ones);
* ``reassign``: one ``update`` that reassigns every weight to its nearest centroid;
* ``shared_fwd_bwd`` vs ``dense_fwd_bwd``: value and gradient of ``sum(view * u)`` through
  the shared-weight gather (gradients to the weights and the summed centroid gradients) vs
  the same on the plain kernel: the per-step cost of weight sharing on one leaf;
* ``svd_refresh``: one low-rank refresh (full SVD + projection) at rank ``n / 8``.

Run: ``PYTHONPATH=. python benchmarks/cluster_scaling.py [--quick]``; results go to
``benchmarks/results/cluster_scaling_<backend>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

import jaxcompress as jc
from benchmarks import _harness


def _case(n: int, k: int, rounds: int) -> dict:
    w = {"w": jax.random.normal(jax.random.key(n), (n, n))}
    u = jax.random.normal(jax.random.key(n + 1), (n, n))
    km = jc.cluster.kmeans(k, update_every=1)
    lr = jc.lowrank.svd(rank=max(n // 8, 1))
    init = jax.jit(km.init)
    state = _harness.block(init(w))
    update = jax.jit(km.update)
    lr_state = jax.jit(lr.init)(w)
    lr_update = jax.jit(lr.update)

    def shared_loss(v):
        return jnp.sum(jc.compressed_view(km, v, state)["w"] * u)

    shared = jax.jit(jax.value_and_grad(shared_loss))
    dense = jax.jit(jax.value_and_grad(lambda p: jnp.sum(p["w"] * u)))
    tr = jc.Trainables(w, jc.trainable(state))
    variants = {
        "kmeans_init": lambda: _harness.block(init(w)),
        "reassign": lambda: _harness.block(update(w, state)),
        "shared_fwd_bwd": lambda: _harness.block(shared(tr)),
        "dense_fwd_bwd": lambda: _harness.block(dense(w)),
        "svd_refresh": lambda: _harness.block(lr_update(w, lr_state)),
    }
    t = _harness.time_interleaved(variants, rounds=rounds, warmup=2)
    view = jc.finalize(km, w, state)["w"]
    return {
        "n": n,
        "weights": n * n,
        "k": k,
        "distinct_values": int(jnp.unique(view).size),
        **{f"{name}_ms": 1e3 * s["median_s"] for name, s in t.items()},
        "sharing_overhead": t["shared_fwd_bwd"]["median_s"] / t["dense_fwd_bwd"]["median_s"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    args = parser.parse_args(argv)
    backend = jax.default_backend()
    if args.quick:
        sizes, rounds = [(256, 16)], 3
    elif backend == "cpu":
        sizes, rounds = [(256, 16), (512, 32), (1024, 32), (1024, 256)], 7
    else:
        sizes, rounds = [(1024, 32), (2048, 32), (4096, 32), (4096, 256)], 15
    rows = []
    for n, k in sizes:
        rows.append(_case(n, k, rounds))
        print(rows[-1], flush=True)
    cols = list(rows[0])
    load = os.getloadavg()
    md = "\n".join(
        [
            f"# Weight sharing and low-rank refresh vs kernel size ({backend})",
            "",
            f"Devices: {jax.devices()[0].device_kind}; load average {load[0]:.1f} on "
            f"{os.cpu_count()} cores; medians of {rounds} interleaved rounds.",
            "",
            _harness.markdown_table(rows, cols),
        ]
    )
    name = f"cluster_scaling_{backend}" + ("_quick" if args.quick else "")
    path = _harness.write_results(name, {"rows": rows, "quick": args.quick}, md)
    print(md)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
