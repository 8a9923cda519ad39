"""One process of the multi-process check (see test_multiprocess.py).

    python multiprocess_worker.py OUT_DIR                          # one process, all devices
    python multiprocess_worker.py OUT_DIR PROCESS_ID COUNT PORT    # one of COUNT processes

Every process runs the same script, as a user's would: build the same problem on
a mesh over `jax.devices()`, solve it with L-BFGS under freeze (a callback draws a
new minibatch every iteration) writing a checkpoint every 4 iterations, then
resume from the iteration-4 checkpoint and solve to the same end; last, a solve
whose callback asks to stop on one process only, with the log on. Each process
writes what it saw to OUT_DIR/result_<process>.npz for the test to compare;
the process exits non-zero on any failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_mlp, mlp_loss

import statefulnlp as snlp

MAX_ITER = 10
EVERY = 4
BATCH = 64
STOP_AT = 3


def count_writes(path: str) -> list[int]:
    """Count the atomic renames onto `path` made by this process (a checkpoint write)."""
    writes = [0]
    target = os.path.abspath(path)
    for name in ("replace", "rename"):
        original = getattr(os, name)

        def wrapped(src, dst, *args, _original=original, **kwargs):
            if os.path.abspath(dst) == target:
                writes[0] += 1
            return _original(src, dst, *args, **kwargs)

        setattr(os, name, wrapped)
    return writes


def local(tree) -> list[np.ndarray]:
    """This process's copy of every leaf (replicated arrays: any local shard)."""
    out = []
    for leaf in jax.tree_util.tree_leaves(tree):
        if jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        assert leaf.sharding.is_fully_replicated, leaf.sharding
        out.append(np.asarray(leaf.addressable_shards[0].data))
    return out


def summary(stats, prefix: str) -> dict[str, np.ndarray]:
    out = {
        f"{prefix}solution": local(stats.solution)[0],
        f"{prefix}objective": np.asarray(stats.objective),
        f"{prefix}dual_feas": np.asarray(stats.dual_feas),
        f"{prefix}iter": np.asarray(stats.iter),
        f"{prefix}accepted": np.asarray(stats.accepted),
        f"{prefix}counters": np.asarray([stats.counters[k] for k in ("obj", "grad", "hprod")]),
        f"{prefix}status": np.asarray(str(stats.status)),
    }
    for i, leaf in enumerate(local(stats.state)):
        out[f"{prefix}state_{i}"] = leaf
    return out


def main() -> None:
    t0 = time.perf_counter()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if len(sys.argv) == 5:
        jax.distributed.initialize(
            f"127.0.0.1:{int(sys.argv[4])}",
            num_processes=int(sys.argv[3]),
            process_id=int(sys.argv[2]),
            initialization_timeout=60,
        )
    out_dir = sys.argv[1]
    times = {"initialize": time.perf_counter()}
    process = jax.process_index()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=256)
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    loader = snlp.DataLoader((X, y), BATCH, seed=0)
    model, state = make_mlp()
    nlp = snlp.EquinoxNLPModel(model, state, mlp_loss, loader, mesh=mesh)
    result: dict[str, np.ndarray] = {}

    # This process's devices hold their rows of the global batch, and only those.
    ranges = set()
    for leaf, part in zip(nlp.batch, loader.rows(0, 0, 0, BATCH)):
        assert leaf.shape == part.shape and leaf.sharding.spec == jax.sharding.PartitionSpec("data")
        for shard in leaf.addressable_shards:
            start, stop, _ = shard.index[0].indices(BATCH)
            np.testing.assert_array_equal(np.asarray(shard.data), part[start:stop])
            ranges.add((start, stop))
    result["ranges"] = np.asarray(sorted(ranges))
    times["problem"] = time.perf_counter()

    path = os.path.join(out_dir, "run.ckpt")
    at4 = os.path.join(out_dir, "at4.ckpt")
    writes = count_writes(path)

    def advance(nlp, solver, stats):
        if stats.iter == EVERY + 1 and process == 0:
            shutil.copyfile(path, at4)  # the iteration-4 checkpoint, before it is replaced
        nlp.next_batch()

    solver = snlp.solvers.LBFGS(mem=5)
    # max_time: a limit never reached, but checked after every iteration on process 0's clock.
    kw = dict(state_policy="freeze", callback=advance, max_iter=MAX_ITER, atol=0.0, rtol=0.0)
    kw.update(max_time=3600.0)
    full = snlp.solve(nlp, solver, checkpoint=path, checkpoint_every=EVERY, **kw)
    times["solve"] = time.perf_counter()
    result.update(summary(full, "full_"))
    result["writes"] = np.asarray(writes[0])
    # Process 0 wrote the final checkpoint, and copied the iteration-4 one before
    # that; every process is past the final write, so both files are complete.
    with np.load(at4) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
    result["at4_iter"] = np.asarray(meta["iter"])

    resumed = snlp.solve(nlp, solver, resume=at4, **kw)  # the data position comes from the file
    result.update(summary(resumed, "resumed_"))

    # A callback that asks to stop on the last process only (in a one-process run,
    # that process) stops every process at the same iteration; the log is printed
    # by process 0 alone.
    def stop_on_last(nlp, solver, stats):
        nlp.next_batch()
        return stats.iter == STOP_AT and process == jax.process_count() - 1

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        stopped = snlp.solve(
            nlp, solver, state_policy="freeze", callback=stop_on_last, max_iter=MAX_ITER, verbose=1
        )
    result["stop_iter"] = np.asarray(stopped.iter)
    result["stop_status"] = np.asarray(str(stopped.status))
    result["stop_lines"] = np.asarray(len(printed.getvalue().splitlines()))
    np.savez(os.path.join(out_dir, f"result_{process}.npz"), **result)
    times["resume"] = time.perf_counter()
    report = ", ".join(f"{k} {v - t0:.1f}s" for k, v in times.items())
    print(f"process {process} of {jax.process_count()}: done ({report})", flush=True)


if __name__ == "__main__":
    main()
