"""Multi-process data parallelism: 2 local processes x 2 CPU devices vs 1 process x 4 devices.

Each run is tests/multiprocess_worker.py in subprocesses (JAX's device count and
`jax.distributed` are fixed per process): the same L-BFGS solve of an MLP with
BatchNorm and a dropout key, a DataLoader advanced by the callback, a checkpoint
every 4 iterations written by process 0, then a resume by every process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from statefulnlp._data import DataLoader

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")
TIMEOUT = 300  # seconds for all processes together; a healthy run takes far less


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str], devices: int, log: str) -> tuple[subprocess.Popen, str]:
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    # Output goes to files, not pipes: a child blocked on a full pipe would stall the others.
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, WORKER, *args], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    return proc, log


def _wait_all(runs: list[tuple[subprocess.Popen, str]]) -> None:
    """Wait for every child (bounded); on any failure kill them all and show their output."""
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, _ in runs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if any(proc.returncode != 0 for proc, _ in runs):
        report = []
        for proc, log in runs:
            with open(log) as fh:
                report.append(f"--- {proc.args[2:]} exited {proc.returncode}:\n{fh.read()[-6000:]}")
        pytest.fail("\n".join(report))


def _same(a: dict, b: dict, prefix_a: str, prefix_b: str, rtol: float = 0.0) -> None:
    """Equal results: floats to `rtol` (0: bit for bit), everything else exactly."""
    keys = sorted(k.removeprefix(prefix_a) for k in a if k.startswith(prefix_a))
    assert keys == sorted(k.removeprefix(prefix_b) for k in b if k.startswith(prefix_b))
    for key in keys:
        u, v = a[prefix_a + key], b[prefix_b + key]
        if rtol and u.dtype.kind == "f":
            np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol / 10, err_msg=key)
        else:
            np.testing.assert_array_equal(u, v, err_msg=key)


def test_two_processes_equal_one_process_and_resume_from_process_zero_checkpoint(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir()
    multi.mkdir()
    port = str(_free_port())
    runs = [_launch([str(single)], 4, str(tmp_path / "single.log"))]
    runs += [
        _launch([str(multi), str(i), "2", port], 2, str(tmp_path / f"multi{i}.log"))
        for i in range(2)
    ]
    _wait_all(runs)
    ref = dict(np.load(single / "result_0.npz"))
    p0, p1 = (dict(np.load(multi / f"result_{i}.npz")) for i in range(2))

    # Each process's devices held their own rows of the global batch; together, all of it.
    quarters = [[0, 16], [16, 32], [32, 48], [48, 64]]
    assert ref["ranges"].tolist() == quarters
    assert p0["ranges"].tolist() + p1["ranges"].tolist() == quarters

    # The solve ran to the limit and both processes hold the very same result.
    assert int(p0["full_iter"]) == 10 and str(p0["full_status"]) == "max_iter"
    for key in p0:
        if key not in ("ranges", "writes", "stop_lines"):
            np.testing.assert_array_equal(p0[key], p1[key], err_msg=key)

    # Equal to the single-process run on as many devices: the same programs on the
    # same 4 shards of every batch; only the cross-device sums (batch mean, BatchNorm
    # statistics) are added in another order by gloo, which moves float32 results by
    # 1-2 ulp (measured: 2.4e-7 at most on the solution after 10 iterations). 1e-5
    # leaves room for that to grow through L-BFGS; one device reading its rows from
    # another batch moves the solution by 0.25 (measured). Counts, iterations and keys are exact.
    _same(p0, ref, "full_", "full_", rtol=1e-5)

    # Process 0 alone wrote the checkpoint (at iterations 4 and 8 and at the end);
    # both processes resumed from the iteration-4 file and ended where the
    # uninterrupted run did.
    assert int(p0["writes"]) == 3 and int(p1["writes"]) == 0 and int(ref["writes"]) == 3
    assert int(p0["at4_iter"]) == int(ref["at4_iter"]) == 4
    for result in (p0, p1, ref):
        _same(result, result, "resumed_", "full_")

    # A callback that asked to stop on process 1 only stopped both processes after the
    # same iteration (else the next collective would hang); process 0 alone printed
    # the log: the header (2 lines) and one row per iteration from 0 to 3.
    for result in (p0, p1, ref):
        assert int(result["stop_iter"]) == 3 and str(result["stop_status"]) == "user"
    assert int(p0["stop_lines"]) == int(ref["stop_lines"]) == 2 + 4
    assert int(p1["stop_lines"]) == 0


def test_loader_rows_are_each_process_part_of_the_global_batch():
    """Single process: the host rows of every part tile the batch drawn on the device."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50)
    loader = DataLoader({"x": X, "y": y}, batch_size=12, seed=5)
    processes, devices = 2, 2  # a "data" axis of 4 devices, 2 per process
    share = 12 // (processes * devices)
    for epoch, index in ((0, 0), (1, 3), (7, 2)):
        whole = loader.batch(epoch, index)
        ids = loader.indices(epoch, index)
        np.testing.assert_array_equal(ids, loader.order(epoch)[12 * index : 12 * (index + 1)])
        parts = []
        for process in range(processes):
            own = range(process * devices, (process + 1) * devices)
            for device in own:
                part = loader.rows(epoch, index, device * share, (device + 1) * share)
                np.testing.assert_array_equal(part["y"], ids[device * share : (device + 1) * share])
                parts.append(part)
        for key in ("x", "y"):
            joined = np.concatenate([p[key] for p in parts])
            np.testing.assert_array_equal(joined, np.asarray(whole[key]))
            assert joined.dtype == whole[key].dtype
    with pytest.raises(ValueError, match="start, stop"):
        loader.rows(0, 0, 8, 13)
    with pytest.raises(ValueError, match="index"):
        loader.indices(0, len(loader))
