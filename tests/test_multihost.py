"""The multi-host recipe (examples/multihost.py) as 2 CPU processes equals one process."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "multihost.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the script sets its own device count per process
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(args, **kw):
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        **kw,
    )


def _supports_multiprocess_cpu() -> bool:
    import jax

    return "jax_cpu_collectives_implementation" in jax.config.values


@pytest.mark.slow
@pytest.mark.skipif(not _supports_multiprocess_cpu(), reason="jax without CPU collectives")
def test_two_processes_match_one(tmp_path):
    single = _run(["--num-processes", "1", "--out", str(tmp_path / "one")])
    out1, _ = single.communicate(timeout=240)
    assert single.returncode == 0, out1[-3000:]

    coord = f"127.0.0.1:{_free_port()}"
    procs = [
        _run(
            [
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                "--coordinator",
                coord,
                "--out",
                str(tmp_path / "two"),
            ]
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]

    a = np.load(tmp_path / "one" / "final_params.npz")
    b = np.load(tmp_path / "two" / "final_params.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the compression really happened in both runs: half of each kernel is zero
    kernels = [k for k in a.files if k.endswith("kernel")]
    assert kernels
    for k in kernels:
        assert int((b[k] == 0).sum()) == b[k].size // 2, k
