"""Small pytree helpers shared by the problem layer, the driver and checkpoints.

Everything here is pure; the functions that run inside `jit` use only `jax.numpy`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import InvalidArgumentError, InvalidTypeError

PyTree = Any


def is_key_array(x: Any) -> bool:
    """True for typed PRNG key arrays (`jax.random.key`)."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


class LeafSpec(NamedTuple):
    """Shape and dtype of one leaf (weak types ignored)."""

    shape: tuple[int, ...]
    dtype: Any

    def describe(self) -> str:
        return f"{np.dtype(self.dtype).name if not _is_key_dtype(self.dtype) else self.dtype}{list(self.shape)}"


def _is_key_dtype(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jax.dtypes.prng_key)


class TreeSignature(NamedTuple):
    """The structure of a pytree and the shape/dtype of each leaf. Hashable."""

    treedef: Any
    leaves: tuple[LeafSpec, ...]
    paths: tuple[str, ...]


def signature(tree: PyTree) -> TreeSignature:
    """The signature of `tree` (works on arrays and on `jax.ShapeDtypeStruct`)."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = tuple(LeafSpec(tuple(np.shape(x)), _leaf_dtype(x)) for _, x in with_path)
    return TreeSignature(treedef, leaves, leaf_names(tree))


def leaf_names(tree: PyTree) -> tuple[str, ...]:
    """A readable name for every leaf of `tree`, in `tree_leaves` order.

    Ordinary nodes use JAX's key paths (`['bn'].mean`); the entries of an
    `eqx.nn.State` are named by their `StateIndex` (the path of the layer that owns
    them in the model, e.g. `State['Sequential.layers[1].ema_state_index']`), where
    JAX alone would only say `[<flat index 0>]`.
    """

    def is_state(node: Any) -> bool:
        return isinstance(node, eqx.nn.State)

    names: list[str] = []
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_state)[0]:
        prefix = jax.tree_util.keystr(path)
        if not is_state(node):
            names.append(prefix)
            continue
        values, markers = node.tree_flatten()
        for marker, value in zip(markers, values):
            inner = jax.tree_util.tree_flatten_with_path(value)[0]
            names.extend(
                f"{prefix}State[{str(marker)!r}]{jax.tree_util.keystr(p)}" for p, _ in inner
            )
    return tuple(names)


def _leaf_dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = jnp.result_type(x)
    return dtype


def describe_mismatch(expected: TreeSignature, got: TreeSignature) -> str | None:
    """A human sentence saying how `got` differs from `expected`, or None if equal."""
    if expected.treedef != got.treedef:
        return f"its structure changed from {expected.treedef} to {got.treedef}"
    for path, a, b in zip(expected.paths, expected.leaves, got.leaves):
        name = path or "<root>"
        if a.shape != b.shape:
            return f"leaf {name} changed shape from {list(a.shape)} to {list(b.shape)}"
        if a.dtype != b.dtype:
            return f"leaf {name} changed dtype from {a.dtype} to {b.dtype}"
    return None


def to_jax_tree(tree: PyTree, name: str) -> PyTree:
    """Copy every leaf of `tree` to a (strongly typed) JAX array.

    Python scalars and NumPy arrays become JAX arrays of JAX's default dtypes;
    the user's objects are never modified (JAX arrays are immutable and NumPy
    arrays are copied). Non-array leaves raise `InvalidTypeError` naming `name`.
    """

    def convert(path, leaf):
        if is_key_array(leaf):
            return leaf
        if isinstance(leaf, jax.Array | np.ndarray | np.generic | bool | int | float | complex):
            arr = jnp.asarray(leaf)
            # jnp.asarray keeps Python scalars weakly typed; make them strong so
            # that jit caches one signature regardless of how the user wrote them.
            return jnp.array(arr, dtype=arr.dtype, copy=isinstance(leaf, np.ndarray))
        raise InvalidTypeError(
            f"{name}: every leaf must be an array or a number, but {name}"
            f"{jax.tree_util.keystr(path)} is {type(leaf).__name__}"
        )

    return jax.tree_util.tree_map_with_path(convert, tree)


def changed_mask(new: PyTree, old: PyTree) -> jax.Array:
    """A boolean vector, one entry per leaf: True where `new` differs from `old`.

    NaNs at the same positions compare equal. Works inside `jit`.
    """
    new_leaves = jax.tree_util.tree_leaves(new)
    old_leaves = jax.tree_util.tree_leaves(old)
    if not old_leaves:
        return jnp.zeros((0,), dtype=bool)
    flags = []
    for a, b in zip(new_leaves, old_leaves):
        if is_key_array(a):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        if jnp.issubdtype(a.dtype, jnp.inexact):
            same = (a == b) | (jnp.isnan(a) & jnp.isnan(b))
        else:
            same = a == b
        flags.append(~jnp.all(same))
    return jnp.stack(flags)


def tree_select(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise `where(pred, on_true, on_false)` for a scalar predicate (keys included)."""

    def select(a, b):
        if is_key_array(a):
            data = jnp.where(pred, jax.random.key_data(a), jax.random.key_data(b))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jnp.where(pred, a, b)

    return jax.tree_util.tree_map(select, on_true, on_false)


def cast_like(tree: PyTree, reference: TreeSignature) -> PyTree:
    """Cast every leaf of `tree` to the dtype recorded in `reference` (drops weak types)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for leaf, spec in zip(leaves, reference.leaves):
        if is_key_array(leaf):
            out.append(leaf)
        else:
            out.append(jax.lax.convert_element_type(leaf, spec.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


class Flattener(eqx.Module):
    """Maps a pytree of float arrays to one flat vector and back.

    The flat vector has the `result_type` of the leaves; `unflatten` casts each
    piece back to its leaf's own dtype, so no leaf is silently promoted.
    Hashable, so it can be a static argument of `jit`.
    """

    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    dtypes: tuple[Any, ...] = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def flatten(self, tree: PyTree) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(tree)
        if not leaves:
            return jnp.zeros((0,), self.dtype)
        return jnp.concatenate([jnp.ravel(x).astype(self.dtype) for x in leaves])

    def unflatten(self, flat: jax.Array) -> PyTree:
        leaves = []
        start = 0
        for shape, dtype, size in zip(self.shapes, self.dtypes, self.sizes):
            piece = jax.lax.slice_in_dim(flat, start, start + size)
            leaves.append(piece.reshape(shape).astype(dtype))
            start += size
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def make_flattener(tree: PyTree, name: str) -> Flattener:
    """Build a `Flattener` for `tree`, checking that every leaf is a float array."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not with_path:
        raise InvalidArgumentError(
            f"{name}: expected at least one float array, got an empty pytree"
        )
    shapes, dtypes = [], []
    for path, leaf in with_path:
        dtype = _leaf_dtype(leaf)
        if is_key_array(leaf) or not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidTypeError(
                f"{name}: every leaf must be a float array, but {name}"
                f"{jax.tree_util.keystr(path)} has dtype {dtype}"
            )
        shapes.append(tuple(np.shape(leaf)))
        dtypes.append(jnp.dtype(dtype))
    flat_dtype = jnp.result_type(*dtypes)
    return Flattener(treedef, tuple(shapes), tuple(dtypes), jnp.dtype(flat_dtype))


def _scaled_norm(v: jax.Array) -> jax.Array:
    """‖v‖₂ computed on v / max |v_i| (no overflow or underflow; two passes)."""
    scale = jnp.max(jnp.abs(v))
    ok = (scale > 0) & jnp.isfinite(scale)
    safe_scale = jnp.where(ok, scale, 1.0)
    scaled = jnp.sqrt(jnp.sum((v / safe_scale) ** 2)) * safe_scale
    return jnp.where(ok, scaled, jnp.where(scale > 0, scale, 0.0)).astype(v.dtype)


def _rescalings(dtype: Any) -> tuple[float, float, float] | None:
    """`(threshold, down, up)` for `safe_norm` in `dtype`, or None if its range is too narrow.

    A sum of squares below `threshold` may have lost entries to underflow. `down`
    brings the largest finite entries low enough that n of their squares add up
    without overflow; `up` lifts the smallest subnormal entry to a square that is
    still normal, while the whole sum (below `threshold` before) stays finite.
    """
    info = jnp.finfo(dtype)
    nmant, minexp, maxexp = int(info.nmant), int(info.minexp), int(info.maxexp)
    threshold_exp = minexp + 2 * nmant  # threshold = tiny / eps²
    low = -(minexp - nmant) - (-minexp) // 2  # (smallest subnormal · 2^low)² is normal
    high = (maxexp - threshold_exp) // 2 - 1  # threshold · 2^(2·high) is finite
    if low > high:
        return None
    return 2.0**threshold_exp, 2.0 ** -(maxexp // 2 + maxexp // 4), 2.0 ** ((low + high) // 2)


def safe_norm(v: jax.Array) -> jax.Array:
    """‖v‖₂ without overflow or underflow for extreme entries.

    One pass (the sum of squares) when that sum is finite and far above the
    underflow threshold, which is nearly always; otherwise, through `lax.cond`,
    one more pass on v rescaled by a power of two (exact: no rounding is added).
    Non-finite entries give inf or NaN. (The scaled form v / max |v_i| alone costs
    three reductions per call, a quarter of an L-BFGS iteration on a 1000-variable
    problem.)
    """
    if not v.size:
        return jnp.zeros((), v.dtype)
    rescalings = _rescalings(v.dtype)
    if rescalings is None:  # float16 and narrower: the exact two-pass form
        return _scaled_norm(v)
    threshold, down, up = rescalings
    squares = jnp.sum(v * v)
    plain = jnp.isfinite(squares) & (squares >= threshold)

    def rescaled() -> jax.Array:
        c = jnp.where(squares >= 1.0, down, up).astype(v.dtype)  # overflow (or NaN): down
        return jnp.sqrt(jnp.sum((v * c) ** 2)) / c

    return jax.lax.cond(plain, lambda: jnp.sqrt(squares), rescaled)
