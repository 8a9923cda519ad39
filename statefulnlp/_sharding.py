"""Data parallelism on a `jax.sharding.Mesh` with an axis named "data".

Batches are split along their leading (sample) axis over the "data" axis; the
variables, the state and the solver's arrays are replicated. The compiled
objective then runs under JAX's SPMD partitioner, which inserts the
reductions (a mean over the batch, BatchNorm statistics) across devices, so
results equal the single-device ones up to floating-point reassociation.

A batch whose size is not a multiple of the number of devices on the "data"
axis is rejected with `InvalidArgumentError`: padding would silently change
means and BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import _Stream
from ._errors import InvalidArgumentError
from ._tree import PyTree

__all__ = ["ShardedStream", "batch_sharding", "replicate"]


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array of `tree` on all devices of `mesh` (replicated)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's "data" axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Split every array of `batch` along its leading axis over the "data" axis."""
    devices = mesh.shape["data"]
    split = batch_sharding(mesh)
    whole = NamedSharding(mesh, PartitionSpec())

    def place(path, leaf):
        if np.ndim(leaf) == 0:
            return jax.device_put(leaf, whole)
        size = np.shape(leaf)[0]
        if size % devices:
            raise InvalidArgumentError(
                f"data: batch leaf {jax.tree_util.keystr(path) or '<root>'} has {size} samples, "
                f"which does not divide over the {devices} devices of the mesh's 'data' axis; "
                f"use a batch size that is a multiple of {devices}"
            )
        return jax.device_put(leaf, split)

    return jax.tree_util.tree_map_with_path(place, batch)


class ShardedStream(_Stream):
    """A batch stream whose current batch is sharded over a mesh."""

    def __init__(self, inner: _Stream, mesh: Mesh):
        self.inner = inner
        self.mesh = mesh
        self.kind = inner.kind
        self.exact_resume = inner.exact_resume
        self._batch = self._place(inner.current())

    def _place(self, batch: Any) -> Any:
        return None if batch is None else shard_batch(batch, self.mesh)

    def current(self) -> PyTree:
        return self._batch

    def advance(self) -> None:
        self.inner.advance()
        self._batch = self._place(self.inner.current())

    def position(self) -> dict[str, int]:
        return self.inner.position()

    def restore(self, position: Mapping[str, int]) -> None:
        self.inner.restore(position)
        self._batch = self._place(self.inner.current())
