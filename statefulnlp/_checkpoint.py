"""Checkpoints: the whole solver loop state in one `.npz` file, without pickle.

The file holds every leaf of the driver's carry (iterate, problem state, solver
memory such as L-BFGS pairs or the trust radius, counters, PRNG keys as raw key
data) as plain arrays, plus a JSON document (`__meta__`, stored as bytes) with
the format version, the problem/solver identity, the iteration, the data
position and the carry's structure. It is written to a temporary file in the
same directory, flushed and renamed over the target, so a crash never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError
from ._sharding import write_once
from ._tree import PyTree, is_key_array

__all__ = ["fingerprint", "load_checkpoint", "read_meta", "save_checkpoint"]

FORMAT = "statefulnlp-checkpoint"
VERSION = 3  # 2: the one-iteration-body carry (Known, Fault, last_good); 3: PairMemory.ynorm


def _leaf_to_numpy(leaf: Any) -> tuple[np.ndarray, str | None]:
    if is_key_array(leaf):
        impl = str(jax.random.key_impl(leaf))
        return np.asarray(jax.device_get(jax.random.key_data(leaf))), impl
    return np.asarray(jax.device_get(leaf)), None


def save_checkpoint(path: str, carry: PyTree, meta: dict[str, Any]) -> None:
    """Write `carry` and `meta` to `path` atomically (write, fsync, rename)."""
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    arrays: dict[str, np.ndarray] = {}
    key_impls: dict[str, str] = {}
    for i, leaf in enumerate(leaves):
        arr, impl = _leaf_to_numpy(leaf)
        name = f"leaf_{i:05d}"
        arrays[name] = arr
        if impl is not None:
            key_impls[name] = impl
    document = dict(meta)
    document.update(
        format=FORMAT,
        version=VERSION,
        treedef=str(treedef),
        num_leaves=len(leaves),
        key_impls=key_impls,
    )
    arrays["__meta__"] = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)
    # Multi-process: every process reads the carry above (replicated arrays), process 0
    # alone writes, and none returns before the file is complete.
    write_once(lambda: _write_file(path, arrays), f"checkpoint {path}")


def _write_file(path: str, arrays: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # pyright: ignore[reportArgumentType]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_meta(path: str) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (raises `CheckpointError` if unreadable)."""
    data = _open(path)
    with data:
        return _meta(data, path)


def fingerprint(function: Any, *args: Any) -> str:
    """A digest of what `function(*args)` computes: its jaxpr and its captured constants.

    Two problems with the same fingerprint run the same computation on their
    arguments; arguments themselves (iterate, state, batch) are not part of it.
    """
    closed = jax.make_jaxpr(function)(*args)
    digest = hashlib.sha256(str(closed.jaxpr).encode("utf-8"))
    for const in closed.consts:
        arr, _ = _leaf_to_numpy(const)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def tree_digest(tree: PyTree) -> str:
    """A digest of the values of every leaf of `tree` (and its structure)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    digest = hashlib.sha256(str(treedef).encode("utf-8"))
    for leaf in leaves:
        arr, _ = _leaf_to_numpy(leaf)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def settings(obj: Any, depth: int = 0) -> str:
    """A description of a solver's configuration that is equal across processes.

    Every dataclass field (static ones included) is shown, and functions are
    described by their name and the values they close over (so `optax.adam(1e-2)`
    and `optax.adam(1e-3)` differ); memory addresses never appear.
    """
    if depth > 16:
        return "..."
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes):
        return repr(obj)
    if isinstance(obj, np.ndarray | jax.Array | np.generic):
        return f"array:{tree_digest(obj)[:16]}"
    if isinstance(obj, tuple | list):
        return "(" + ", ".join(settings(v, depth + 1) for v in obj) + ")"
    if isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: str(kv[0]))
        return "{" + ", ".join(f"{k}: {settings(v, depth + 1)}" for k, v in items) + "}"
    if dataclasses.is_dataclass(obj):
        fields = ", ".join(
            f"{f.name}={settings(getattr(obj, f.name, None), depth + 1)}"
            for f in dataclasses.fields(obj)
        )
        return f"{type(obj).__name__}({fields})"
    if callable(obj) and hasattr(obj, "__qualname__"):
        cells = getattr(obj, "__closure__", None) or ()
        inner = []
        for cell in cells:
            try:
                inner.append(settings(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                inner.append("<empty>")
        return f"{obj.__qualname__}[{', '.join(inner)}]"
    if hasattr(obj, "_asdict"):  # NamedTuples (optax's transformations)
        return f"{type(obj).__name__}{settings(obj._asdict(), depth + 1)}"
    return type(obj).__qualname__


# What a checkpoint must match to be resumed, and how a difference is named.
IDENTITY = {
    "nvar": "the number of variables",
    "dtype": "the dtype of the variables",
    "solver": "the solver",
    "solver_settings": "the solver's settings",
    "state_policy": "the state policy",
    "data_kind": "the kind of data",
    "problem": "the problem (its objective function, constants or state structure)",
}


def _open(path: str):
    if not os.path.exists(path):
        raise CheckpointError(f"resume: no checkpoint file at {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"resume: {path!r} is a directory, not a checkpoint file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise CheckpointError(
            f"resume: {path!r} is not a readable statefulnlp checkpoint (not a checkpoint "
            "file, or truncated)"
        ) from None


def _meta(data: Any, path: str) -> dict[str, Any]:
    try:
        raw = data["__meta__"]
        meta = json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode("utf-8"))
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
        raise CheckpointError(
            f"resume: {path!r} has no readable metadata (not a statefulnlp checkpoint, or "
            "truncated or corrupt)"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"resume: {path!r} is not a statefulnlp checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"resume: {path!r} has checkpoint format version {meta.get('version')}, "
            f"this statefulnlp reads version {VERSION}"
        )
    return meta


def load_checkpoint(
    path: str, template: PyTree, identity: dict[str, Any]
) -> tuple[PyTree, dict[str, Any]]:
    """Read a checkpoint into the structure of `template` (a tree of ShapeDtypeStruct).

    `identity` holds what must match (problem size, dtype, solver, policy);
    any difference, a corrupt or truncated file, or a carry of another shape
    raises `CheckpointError` naming what differs.
    """
    data = _open(path)
    with data:
        meta = _meta(data, path)
        for key, what in IDENTITY.items():
            if key == "problem" and meta.get("problem_batch") != identity.get("problem_batch"):
                continue  # fingerprinted on batches of other shapes: not comparable
            if key in identity and meta.get(key) != identity[key]:
                shown = (
                    ""
                    if key == "problem"
                    else (
                        f": {key}={meta.get(key)!r} in the checkpoint, {key}={identity[key]!r} here"
                    )
                )
                raise CheckpointError(
                    f"resume: the checkpoint belongs to another solve: mismatch in {what}{shown}"
                )
        t_with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
        t_leaves = [leaf for _, leaf in t_with_paths]
        names = [jax.tree_util.keystr(p) for p, _ in t_with_paths]
        if meta.get("num_leaves") != len(t_leaves) or meta.get("treedef") != str(treedef):
            raise CheckpointError(
                "resume: the checkpoint's solver memory does not match this solver and problem "
                "(different solver settings, state structure or quasi-Newton model?)"
            )
        key_impls = meta.get("key_impls", {})
        leaves = []
        for i, spec in enumerate(t_leaves):
            name = f"leaf_{i:05d}"
            try:
                arr = np.asarray(data[name])
            except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError):
                raise CheckpointError(
                    f"resume: {path!r} is truncated or corrupt (its entry {name} cannot be read)"
                ) from None
            if name in key_impls:
                key = jax.random.wrap_key_data(jnp.asarray(arr), impl=key_impls[name])
                if key.shape != spec.shape:
                    raise CheckpointError(
                        f"resume: key leaf {i} has shape {key.shape}, expected {spec.shape}"
                    )
                leaves.append(key)
                continue
            if arr.shape != tuple(spec.shape) or arr.dtype != np.dtype(spec.dtype):
                raise CheckpointError(
                    f"resume: the checkpoint's {names[i]} is {arr.dtype}{list(arr.shape)} but this "
                    f"solve expects {np.dtype(spec.dtype)}{list(spec.shape)} (other solver settings "
                    "or another problem?)"
                )
            leaves.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
