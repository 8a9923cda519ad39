"""Data parallelism on a `jax.sharding.Mesh` with an axis named "data", in one or many processes.

Batches are split along their leading (sample) axis over the "data" axis; the
variables, the state and the solver's arrays are replicated. The compiled
objective then runs under JAX's SPMD partitioner, which inserts the
reductions (a mean over the batch, BatchNorm statistics) across devices, so
results equal the single-device ones up to floating-point reassociation.

Every array is built with `jax.make_array_from_callback`: each device receives
its own rows, read from the host (`_data`'s `host_batch`), so a batch never
lands whole on one device first, and in a multi-process run (the mesh spans the
devices of every process) each process reads only the rows of its own devices.
Every process must pass the same values (same arrays, same seed): that is what
makes the global batch and the replicated arrays one and the same everywhere.

Host decisions that could differ between processes (a time limit, say) must be
taken once for all of them: `agree` hands every process process 0's value, and
`write_once` lets process 0 alone write a file that all then read.

A batch whose size is not a multiple of the number of devices on the "data"
axis is rejected with `InvalidArgumentError`: padding would silently change
means and BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import _Stream
from ._errors import InvalidArgumentError
from ._tree import PyTree

__all__ = [
    "ShardedStream",
    "agree",
    "agree_stop",
    "batch_sharding",
    "replicate",
    "shard_batch",
    "write_once",
]


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array of `tree` on all devices of `mesh` (replicated).

    The leaves are read on the host (they must be addressable here: NumPy arrays,
    single-process JAX arrays, or arrays already replicated); in a multi-process
    run every process must pass the same values.
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = leaf if isinstance(leaf, jax.Array) and _is_key(leaf) else np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's "data" axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Split every array of `batch` along its leading axis over the "data" axis.

    A leaf is anything with `shape`, `dtype` and `leaf[index]` (a NumPy or JAX
    array, or a lazy view such as a DataLoader's rows); each device reads only
    `leaf[its rows]`. Scalars are replicated.
    """
    devices = mesh.shape["data"]
    split = batch_sharding(mesh)
    whole = NamedSharding(mesh, PartitionSpec())

    def place(path: Any, leaf: Any) -> jax.Array:
        shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
        if not shape:
            value = leaf if hasattr(leaf, "shape") else np.asarray(leaf)
            return jax.make_array_from_callback((), whole, lambda index: value[index])
        if shape[0] % devices:
            raise InvalidArgumentError(
                f"data: batch leaf {jax.tree_util.keystr(path) or '<root>'} has {shape[0]} "
                f"samples, which does not divide over the {devices} devices of the mesh's "
                f"'data' axis; use a batch size that is a multiple of {devices}"
            )
        return jax.make_array_from_callback(shape, split, lambda index: leaf[index])

    return jax.tree_util.tree_map_with_path(place, batch)


class ShardedStream(_Stream):
    """A batch stream whose current batch is sharded over a mesh."""

    def __init__(self, inner: _Stream, mesh: Mesh):
        self.inner = inner
        self.mesh = mesh
        self.kind = inner.kind
        self.exact_resume = inner.exact_resume
        self._batch = self._place()

    def _place(self) -> PyTree:
        batch = self.inner.host_batch()
        return None if batch is None else shard_batch(batch, self.mesh)

    def current(self) -> PyTree:
        return self._batch

    def advance(self) -> None:
        self.inner.advance()
        self._batch = self._place()

    def position(self) -> dict[str, int]:
        return self.inner.position()

    def restore(self, position: Mapping[str, int]) -> None:
        self.inner.restore(position)
        self._batch = self._place()


# ----------------------------------------------------------------------------
# Multi-process agreement


def agree(values: Sequence[int | float | bool]) -> tuple[Any, ...]:
    """Process 0's `values`, on every process (the values unchanged in one process).

    For host decisions that depend on something local (a clock): every process
    calls it at the same point with values of the same types, and all act alike.
    """
    if jax.process_count() == 1:
        return tuple(values)
    from jax.experimental import multihost_utils

    out = multihost_utils.broadcast_one_to_all(np.asarray(values, np.float64))
    return tuple(type(v)(w) for v, w in zip(values, np.asarray(out).tolist()))


def agree_stop(any_process: bool, process_zero: bool) -> tuple[bool, bool]:
    """`(any process's any_process, process 0's process_zero)`, on every process.

    For the host's stop decisions after an iteration: a callback that asks to stop
    on one process stops all of them; a time limit follows process 0's clock. One
    collective; every process calls it at the same point.
    """
    if jax.process_count() == 1:
        return bool(any_process), bool(process_zero)
    from jax.experimental import multihost_utils

    flags = np.asarray([any_process, process_zero], np.int32)
    every = np.asarray(multihost_utils.process_allgather(flags)).reshape(-1, 2)
    return bool(every[:, 0].any()), bool(every[0, 1])


def write_once(write: Callable[[], None], name: str) -> None:
    """Run `write` on process 0 only, then wait until every process has got here.

    In one process, just `write()`. Every process must call it at the same point
    (with the same `name`), so that none reads the file before it is complete.
    An exception from `write` on process 0 propagates after the barrier.
    """
    if jax.process_count() == 1:
        write()
        return
    from jax.experimental import multihost_utils

    try:
        if jax.process_index() == 0:
            write()
    finally:
        multihost_utils.sync_global_devices(f"statefulnlp: {name}")


def _is_key(x: Any) -> bool:
    return jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)
