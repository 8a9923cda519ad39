"""Training data: the in-memory `DataLoader` and the batch streams behind a problem.

A problem holds one *current* batch. Only `nlp.next_batch()` advances it; a
solve never changes the batch by itself. The stream types are private: the
problem builds the right one from whatever `data` the user passed.

A stream gives its current batch in two forms, each built only when asked for:
`current()`, the batch on the default device (a problem without a mesh), and
`host_batch()`, leaves that are indexed by row ranges and gather only the rows
asked for, on the host for a `DataLoader` or a full batch.
`_sharding.ShardedStream` reads each device's rows from the latter, so on a mesh,
and in every process of a multi-process run, each device receives its own part
of the global batch and no device ever holds the whole of it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import InvalidArgumentError, InvalidTypeError
from ._tree import (
    PyTree,
    TreeSignature,
    describe_mismatch,
    is_key_array,
    signature,
    to_jax_tree,
)

__all__ = ["DataLoader"]


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _host_tree(tree: PyTree, name: str, *, keys: bool) -> PyTree:
    """Copy every leaf of `tree` to a NumPy array in the dtype JAX would give it.

    The user's objects are never modified (every leaf is copied). PRNG key arrays
    stay JAX arrays when `keys` is true and are refused otherwise. Non-array
    leaves raise `InvalidTypeError` naming `name`, as `to_jax_tree` does.
    """

    def convert(path: Any, leaf: Any) -> Any:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if is_key_array(leaf):
            if keys:
                return leaf
            raise InvalidTypeError(
                f"{name}: {where} is a PRNG key array; a DataLoader holds numeric arrays "
                "(pass jax.random.key_data(keys) and wrap it back in the loss)"
            )
        if isinstance(leaf, jax.Array | np.ndarray | np.generic | bool | int | float | complex):
            arr = np.asarray(leaf)
            return np.array(arr, dtype=jax.dtypes.canonicalize_dtype(arr.dtype), copy=True)
        raise InvalidTypeError(
            f"{name}: every leaf must be an array or a number, but {where} is {type(leaf).__name__}"
        )

    return jax.tree_util.tree_map_with_path(convert, tree)


class DataLoader:
    """Minibatches of in-memory arrays, reshuffled every epoch.

    `arrays` is one array, or a tuple/list/dict of arrays that share their
    leading (sample) axis. Each batch has the same container type, holding
    `batch_size` samples. The arrays are copied once (in the dtypes JAX gives
    them), so later changes to the user's arrays do not leak in. Without a mesh
    the copy moves to the default device on first use and drawing a batch is a
    device-side gather (no host-to-device copy per batch); on a mesh each device
    receives only its rows of every batch, gathered on the host (`rows`).

    With `shuffle=True`, epoch `e` visits the samples in the order
    `numpy.random.default_rng([seed, e]).permutation(n)`: deterministic, and
    any position can be restored exactly (checkpoints rely on this). The order
    depends on nothing else, so every process of a multi-process run that builds
    the loader from the same arrays and seed agrees on every global batch and
    takes its own part of it.

    The last, shorter batch of an epoch is dropped by default (`drop_last=True`)
    so every batch has one shape and the jitted objective compiles once; with
    `drop_last=False` it is kept and costs one extra compilation.

    Iterating a `DataLoader` yields one epoch (epoch 0) of batches.

    Example:
        ```python
        import numpy as np
        import statefulnlp as snlp

        X, y = np.random.rand(100, 3), np.arange(100) % 2
        loader = snlp.DataLoader((X, y), batch_size=32, seed=1)
        xb, yb = next(iter(loader))
        assert xb.shape == (32, 3) and len(loader) == 3
        # Rows 16:32 of the same batch, e.g. the part of the second of two processes:
        part = loader.rows(0, 0, 16, 32)
        assert np.array_equal(part[1], np.asarray(yb)[16:])
        ```
    """

    def __init__(
        self,
        arrays: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        *,
        drop_last: bool = True,
    ):
        if not _is_int(batch_size) or batch_size <= 0:
            raise InvalidArgumentError(
                f"batch_size: expected a positive integer, got {batch_size!r}"
            )
        if not isinstance(shuffle, bool | np.bool_):
            raise InvalidTypeError(f"shuffle: expected a bool, got {type(shuffle).__name__}")
        if not _is_int(seed) or seed < 0:
            raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
        if isinstance(arrays, list):
            arrays = tuple(arrays)
        if not isinstance(arrays, tuple | Mapping | np.ndarray | jax.Array):
            raise InvalidTypeError(
                "arrays: expected an array or a tuple/list/dict of arrays, got "
                f"{type(arrays).__name__}"
            )
        arrays = _host_tree(
            dict(arrays) if isinstance(arrays, Mapping) else arrays, "arrays", keys=False
        )
        leaves = jax.tree_util.tree_leaves(arrays)
        if not leaves:
            raise InvalidArgumentError("arrays: expected at least one array, got none")
        lengths = {int(x.shape[0]) if x.ndim else -1 for x in leaves}
        if -1 in lengths:
            raise InvalidArgumentError(
                "arrays: every array needs a leading sample axis (got a scalar)"
            )
        if len(lengths) != 1:
            raise InvalidArgumentError(
                f"arrays: all arrays must have the same number of samples, got lengths {sorted(lengths)}"
            )
        (n,) = lengths
        if n == 0:
            raise InvalidArgumentError("arrays: the arrays hold no samples")
        if drop_last and batch_size > n:
            raise InvalidArgumentError(
                f"batch_size: {batch_size} is larger than the {n} samples and drop_last=True "
                "would leave no batch; lower batch_size or pass drop_last=False"
            )
        # One copy of the data: on the host until a batch is asked for on the default
        # device (then it moves there, and comes back to the host only if `rows` is
        # used afterwards).
        self._host: PyTree | None = arrays
        self._device: PyTree | None = None
        self._order: tuple[int, np.ndarray] | None = None
        self.num_samples = n
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        """Number of batches in one epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __repr__(self) -> str:
        return (
            f"DataLoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})"
        )

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch` (a permutation of `range(num_samples)`)."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_samples)

    def _cached_order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            order = self.order(epoch)
            order.flags.writeable = False
            self._order = (epoch, order)
        return self._order[1]

    def _batch_size_at(self, index: int) -> int:
        return min(self.batch_size, self.num_samples - index * self.batch_size)

    def indices(self, epoch: int, index: int) -> np.ndarray:
        """The sample numbers in batch `index` of `epoch` (in batch order).

        They depend only on `seed`, `epoch` and `index`: every process computes
        the same global batch.
        """
        if not _is_int(epoch) or epoch < 0:
            raise InvalidArgumentError(f"epoch: expected a non-negative integer, got {epoch!r}")
        if not _is_int(index) or not 0 <= index < len(self):
            raise InvalidArgumentError(
                f"index: expected a batch number in [0, {len(self)}), got {index!r}"
            )
        start = index * self.batch_size
        return self._cached_order(int(epoch))[start : start + self._batch_size_at(index)]

    def rows(self, epoch: int, index: int, start: int, stop: int) -> PyTree:
        """Rows `start:stop` of batch `index` of `epoch`, gathered on the host (NumPy).

        This is the part of a global batch that one device, or one process, holds:
        on a mesh each device gets `rows(epoch, index, a, b)` for its own range
        `a:b` of the batch's leading axis, and nothing else.
        """
        size = len(self.indices(epoch, index))
        if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop <= size):
            raise InvalidArgumentError(
                f"start, stop: expected 0 <= start <= stop <= {size} (the batch size), "
                f"got {start!r}, {stop!r}"
            )
        ids = self.indices(epoch, index)[start:stop]
        return jax.tree_util.tree_map(lambda a: a[ids], self._host_arrays())

    def batch(self, epoch: int, index: int, order: jax.Array | None = None) -> PyTree:
        """Batch number `index` of `epoch` on the default device (a device-side gather)."""
        if order is None:
            order = jnp.asarray(self.order(epoch))
        start = index * self.batch_size
        return _gather(self._device_arrays(), order, start, self._batch_size_at(index))

    def __iter__(self) -> Iterator[PyTree]:
        order = jnp.asarray(self.order(0))
        for i in range(len(self)):
            yield self.batch(0, i, order)

    def _device_arrays(self) -> PyTree:
        if self._device is None:
            self._device = jax.device_put(self._host)
            self._host = None
        return self._device

    def _host_arrays(self) -> PyTree:
        if self._host is None:
            self._host = jax.device_get(self._device)
        return self._host


@functools.partial(jax.jit, static_argnums=(3,))
def _gather(arrays: PyTree, order: jax.Array, start: int, size: int) -> PyTree:
    idx = jax.lax.dynamic_slice_in_dim(order, start, size)
    return jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), arrays)


# ----------------------------------------------------------------------------
# Batch streams (private): what a problem holds.


class _Stream:
    """A source of training batches with a current batch and a position."""

    kind: str = "none"
    exact_resume: bool = True

    def current(self) -> PyTree:
        """The current batch on the default device."""
        raise NotImplementedError

    def host_batch(self) -> PyTree:
        """The current batch as leaves indexed by row ranges (`leaf[index]`).

        Each leaf has `shape` and `dtype` and gives only the rows it is indexed
        with; nothing goes to a device before that. By default: `current()`.
        """
        return self.current()

    def advance(self) -> None:
        raise NotImplementedError

    def position(self) -> dict[str, int]:
        return {}

    def restore(self, position: Mapping[str, int]) -> None:
        del position


class _NoData(_Stream):
    kind = "none"

    def current(self) -> None:
        return None

    def advance(self) -> None:
        return None


class _FullBatch(_Stream):
    kind = "full"

    def __init__(self, data: PyTree):
        self._host = _host_tree(data, "data", keys=True)
        self._batch: PyTree | None = None

    def current(self) -> PyTree:
        if self._batch is None:
            self._batch = jax.device_put(self._host)
        return self._batch

    def host_batch(self) -> PyTree:
        return self._host

    def advance(self) -> None:
        return None


class _Rows:
    """Leaf `leaf` of a DataLoader batch, read as rows of the batch when indexed."""

    def __init__(self, source: _BatchRows, leaf: int, shape: tuple[int, ...], dtype: Any):
        self.source = source
        self.leaf = leaf
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        start, stop, step = index[0].indices(self.shape[0])
        if step != 1:
            raise InvalidArgumentError("index: a batch is read in contiguous row ranges")
        return self.source.rows(start, stop)[self.leaf][(slice(None), *index[1:])]


class _BatchRows:
    """Rows of one DataLoader batch, each range gathered once for all leaves."""

    def __init__(self, loader: DataLoader, epoch: int, index: int):
        self.loader, self.epoch, self.index = loader, epoch, index
        self._cache: dict[tuple[int, int], list[np.ndarray]] = {}

    def rows(self, start: int, stop: int) -> list[np.ndarray]:
        key = (start, stop)
        if key not in self._cache:
            part = self.loader.rows(self.epoch, self.index, start, stop)
            self._cache[key] = jax.tree_util.tree_leaves(part)
        return self._cache[key]

    def tree(self) -> PyTree:
        host = self.loader._host_arrays()
        leaves, treedef = jax.tree_util.tree_flatten(host)
        size = len(self.loader.indices(self.epoch, self.index))
        views = [
            _Rows(self, i, (size, *leaf.shape[1:]), leaf.dtype) for i, leaf in enumerate(leaves)
        ]
        return jax.tree_util.tree_unflatten(treedef, views)


class _LoaderStream(_Stream):
    kind = "loader"

    def __init__(self, loader: DataLoader):
        if len(loader) == 0:
            raise InvalidArgumentError("data: the DataLoader yields no batch")
        self.loader = loader
        self.epoch = 0
        self.index = 0
        self._order: tuple[int, jax.Array] | None = None
        self._batch: PyTree | None = None

    def current(self) -> PyTree:
        if self._batch is None:
            if self._order is None or self._order[0] != self.epoch:
                self._order = (self.epoch, jnp.asarray(self.loader.order(self.epoch)))
            self._batch = self.loader.batch(self.epoch, self.index, self._order[1])
        return self._batch

    def host_batch(self) -> PyTree:
        return _BatchRows(self.loader, self.epoch, self.index).tree()

    def advance(self) -> None:
        self.index += 1
        if self.index >= len(self.loader):
            self.index = 0
            self.epoch += 1
        self._batch = None

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position: Mapping[str, int]) -> None:
        epoch = int(position["epoch"])
        index = int(position["index"])
        if not 0 <= index < len(self.loader):
            raise InvalidArgumentError(f"position: batch index {index} out of range")
        self.epoch, self.index = epoch, index
        self._batch = None


class _IterableStream(_Stream):
    """Any other iterable of batches, re-iterated at the end of an epoch.

    A one-shot iterator (a generator) cannot be restarted, so the batches of its
    first pass are kept and replayed in later epochs.
    """

    kind = "iterable"
    exact_resume = False

    def __init__(self, data: Iterable[Any]):
        self._source = data
        self._one_shot = iter(data) is data
        self._replay: list[PyTree] | None = [] if self._one_shot else None
        self._iterator: Iterator[Any] = iter(data)
        self._signature: TreeSignature | None = None
        self.epoch = 0
        self.index = 0
        first = self._next_raw(first=True)
        self._batch = first

    def _convert(self, raw: Any) -> PyTree:
        batch = to_jax_tree(raw, "data")
        sig = signature(batch)
        if self._signature is None:
            self._signature = sig
        elif sig.treedef != self._signature.treedef or any(
            a.dtype != b.dtype for a, b in zip(sig.leaves, self._signature.leaves)
        ):
            problem = describe_mismatch(self._signature, sig)
            raise InvalidArgumentError(
                f"data: batch {self.index} of epoch {self.epoch} does not match the first batch: {problem}"
            )
        return batch

    def _next_raw(self, first: bool = False) -> PyTree:
        try:
            raw = next(self._iterator)
        except StopIteration:
            if first or (self.index == 0 and self.epoch == 0):
                raise InvalidArgumentError("data: the iterable yielded no batch") from None
            return self._restart()
        batch = self._convert(raw)
        if self._replay is not None and self.epoch == 0:
            self._replay.append(batch)
        return batch

    def _restart(self) -> PyTree:
        self.epoch += 1
        self.index = 0
        if self._replay is not None:
            self._iterator = iter(self._replay)
            return next(self._iterator)
        self._iterator = iter(self._source)
        try:
            raw = next(self._iterator)
        except StopIteration:
            raise InvalidArgumentError(
                "data: the iterable yielded no batch when re-iterated for a new epoch"
            ) from None
        return self._convert(raw)

    def current(self) -> PyTree:
        return self._batch

    def advance(self) -> None:
        self.index += 1
        if self._replay is not None and self.epoch > 0:
            try:
                self._batch = next(self._iterator)
            except StopIteration:
                self._batch = self._restart()
            return
        batch = self._next_raw()
        self._batch = batch

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, position: Mapping[str, int]) -> None:
        warnings.warn(
            "data is a plain iterable: resume restarts it from its first batch, so the batch "
            "sequence differs from the interrupted run (use a DataLoader for an exact resume)",
            stacklevel=3,
        )


def make_stream(data: Any) -> _Stream:
    """The batch stream for the `data` argument of a problem constructor."""
    if data is None:
        return _NoData()
    if isinstance(data, DataLoader):
        return _LoaderStream(data)
    if isinstance(data, tuple | Mapping | np.ndarray | jax.Array):
        if isinstance(data, Mapping):
            data = dict(data)
        if not jax.tree_util.tree_leaves(data):
            raise InvalidArgumentError("data: the full batch holds no array")
        return _FullBatch(data)
    if isinstance(data, str | bytes):
        raise InvalidTypeError(
            f"data: expected arrays or an iterable of batches, got {type(data).__name__}"
        )
    if isinstance(data, Iterable):
        return _IterableStream(data)
    raise InvalidTypeError(
        "data: expected None, a tuple/dict/array (one full batch), a DataLoader, or an "
        f"iterable of batches; got {type(data).__name__}"
    )
