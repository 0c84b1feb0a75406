"""Peak memory of a compressed train step vs the float step, from XLA's compiled analysis.

For each compressor: the compiled step's argument, output and temporary bytes (XLA's
``memory_analysis``), the peak estimate (arguments + outputs + temporaries - aliased), and
the compressor state bytes from ``jc.summary``; ratios are vs the float step.

    python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxcompress as jc  # noqa: E402
from benchmarks import _harness, _models  # noqa: E402


def compressors() -> dict[str, jc.Compressor | None]:
    k = ".*/kernel"
    return {
        "float": None,
        "qat int8": jc.rules([(k, jc.quant.qat(8)), (".*", None)]),
        "magnitude 90%": jc.rules([(k, jc.prune.magnitude(0.9)), (".*", None)]),
        "magnitude 50% + int8": jc.rules(
            [(k, jc.chain(jc.prune.magnitude(0.5), jc.quant.qat(8))), (".*", None)]
        ),
    }


def analyse(step_fn, state, x, y) -> dict[str, int]:
    compiled = jax.jit(step_fn, donate_argnums=0).lower(state, x, y).compile()
    m = compiled.memory_analysis()
    args, out, temp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
    alias = getattr(m, "alias_size_in_bytes", 0)
    return {
        "argument_bytes": int(args),
        "output_bytes": int(out),
        "temp_bytes": int(temp),
        "alias_bytes": int(alias),
        "peak_bytes": int(args + out + temp - alias),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="accepted for the harness; same run")
    ap.parse_args(argv)
    x, y = _models.random_batch()
    rows = []
    base = None
    for name, comp in compressors().items():
        state = _models.make_state(comp)
        step = _models.float_step if comp is None else _models.compressed_step
        mem = analyse(step, state, x, y)
        summ = jc.summary(state.compressor, state.params, state.compression)
        if base is None:
            base = mem
        rows.append(
            {
                "variant": name,
                "peak MB": mem["peak_bytes"] / 2**20,
                "temp MB": mem["temp_bytes"] / 2**20,
                "peak / float": mem["peak_bytes"] / base["peak_bytes"],
                "state / params": summ.state_ratio,
                **{k: v for k, v in mem.items()},
            }
        )
    cols = ["variant", "peak MB", "temp MB", "peak / float", "state / params"]
    md = (
        "# Train-step memory (MLP 784-512-512-10, batch 256, adam)\n\n"
        "From XLA's compiled memory analysis of the jitted step (state donated).\n\n"
        + _harness.markdown_table(rows, cols)
    )
    _harness.write_results("memory", {"rows": rows}, md)
    print(md)
    return {"rows": rows}


if __name__ == "__main__":
    main(sys.argv[1:])
