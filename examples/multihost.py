"""Multi-host compressed training with ``jax.distributed`` (the recipe for TPU/GPU pods).

Every process runs this same script. On a pod, ``jax.distributed.initialize()`` takes the
coordinator and process ids from the cluster environment; here they are given on the
command line so the recipe runs as several CPU processes on one machine:

    python examples/multihost.py --num-processes 2 --process-id 0 --out /tmp/mh &
    python examples/multihost.py --num-processes 2 --process-id 1 --out /tmp/mh

The recipe:

1. ``jax.distributed.initialize(...)`` before any other JAX call.
2. One global ``Mesh`` over ``jax.devices()`` (all processes' devices), here
   ``("data", "model")``; params sharded FSDP-style over ``model``.
3. Per-host data: every process reads only its slice of the global batch and assembles the
   global array with ``jax.make_array_from_process_local_data``.
4. The compressed train step is the ordinary jitted step: the compressor's masks and scales
   are placed by ``jc.state_shardings`` next to their params; thresholds and scales are
   reductions, so nothing is gathered onto one host.
5. ``multihost_utils.process_allgather`` brings the final params to every host for saving.

With ``--num-processes 1`` it runs the same computation on one process with all devices,
which is what the multi-process run is compared against in the tests.
"""

from __future__ import annotations

import argparse
import pathlib

DEVICES_TOTAL = 8


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--coordinator", default="127.0.0.1:12421")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--out", required=True, help="folder for final_params.npz (process 0)")
    args = ap.parse_args(argv)

    import jax

    local = DEVICES_TOTAL // args.num_processes
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", local)
    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )

    import numpy as np
    import optax
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import jaxcompress as jc
    from jaxcompress import workloads

    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    data = workloads.load_digits()
    model = workloads.MLP((64, 32, 10))
    params = model.init(jax.random.key(0), data.x_train[:1])["params"]

    def param_spec(path, x):
        return NamedSharding(mesh, P(None, "model") if x.ndim == 2 else P())

    params = jax.device_put(params, jax.tree_util.tree_map_with_path(param_spec, params))
    comp = jc.rules(
        [
            (".*/kernel", jc.chain(jc.prune.magnitude(0.5, at_step=4), jc.quant.qat(bits=8))),
            (".*", None),
        ]
    )
    state = jc.flax.TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=optax.adam(1e-2),
        compressor=comp,
        compression=jax.jit(comp.init, out_shardings=jc.state_shardings(comp, params))(params),
    )

    @jax.jit
    def train_step(state, x, y):
        def loss_fn(v):
            logits = state.apply_fn({"params": state.compress(v)}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.trainables)
        return state.apply_gradients(grads=grads), loss

    global_batch = 64
    per_host = global_batch // args.num_processes
    batch_sharding = NamedSharding(mesh, P("data"))
    stream = workloads.batches(data.x_train, data.y_train, global_batch, seed=0)
    for _ in range(args.steps):
        xb, yb = next(stream)  # every host draws the same global batch order ...
        lo = args.process_id * per_host  # ... and keeps only its own slice of it
        x = jax.make_array_from_process_local_data(batch_sharding, xb[lo : lo + per_host])
        y = jax.make_array_from_process_local_data(batch_sharding, yb[lo : lo + per_host])
        state, loss = train_step(state, x, y)

    final = multihost_utils.process_allgather(state.params, tiled=True)
    if args.process_id == 0:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        flat = {
            jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(final)[0]
        }
        np.savez(out / "final_params.npz", loss=np.asarray(loss), **flat)
        print(f"process 0 of {args.num_processes}: loss {float(loss):.4f}, wrote {out}", flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
