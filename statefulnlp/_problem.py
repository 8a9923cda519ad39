"""Problems: a loss with explicit state, seen as a function of one flat vector.

`StatefulNLPModel` turns `fn(x, state, batch) -> (loss, new_state)` with any
pytree `x` into an optimization problem over a flat 1-D vector. Its numerical
core (`_Core`) holds pure functions of `(x, state, batch, consts)` for the
loss, loss+gradient and Hessian-vector product; they are compiled once per
shape/dtype and reused across calls and minibatches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._data import make_stream
from ._errors import InvalidArgumentError, InvalidTypeError
from ._tree import (
    Flattener,
    PyTree,
    TreeSignature,
    cast_like,
    describe_mismatch,
    make_flattener,
    signature,
    to_jax_tree,
)

__all__ = ["AbstractNLPModel", "Counters", "Objective", "StatefulNLPModel"]

_MISSING: Any = object()


@dataclasses.dataclass
class Counters:
    """Evaluations made so far (Python ints).

    `objgrad` adds one to `obj` and one to `grad`; `max_eval` in `solve` bounds `obj`.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x ** 2), s), jnp.ones(2))
        nlp.objgrad(nlp.x0)
        assert (nlp.counters.obj, nlp.counters.grad, nlp.counters.hprod) == (1, 1, 0)
        nlp.reset_counters()
        ```
    """

    obj: int = 0
    grad: int = 0
    hprod: int = 0

    def reset(self) -> None:
        self.obj = self.grad = self.hprod = 0

    def add(self, obj: int = 0, grad: int = 0, hprod: int = 0) -> None:
        self.obj += int(obj)
        self.grad += int(grad)
        self.hprod += int(hprod)


class TraceCounts(dict):
    """How many times each jitted function was traced (compiled); for tests and tuning.

    Compares equal to any other `TraceCounts` and hashes to a constant, so it can
    ride along in a static (hashed) argument of `jit` without splitting its cache.
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TraceCounts)

    def __hash__(self) -> int:
        return 0

    def bump(self, name: str) -> None:
        self[name] = self.get(name, 0) + 1


class Objective(eqx.Module):
    """A problem's pure function, seen on one flat vector. Hashable (a static of `jit`).

    `fn(tree_x, state, batch, consts) -> (loss, new_state)`, where `tree_x` has
    the structure of the problem's variables. `consts` are arrays that are
    neither variables nor state (e.g. integer buffers of a model); they are
    passed as a dynamic argument so they are not baked into the compiled code.
    `value`, `value_and_grad` and `hvp` evaluate it at a flat `x`, checking the
    inputs and the returned loss and state while tracing.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        objective = snlp.Objective.from_function(
            lambda x, state, batch: (jnp.sum((x["w"] - batch) ** 2), state),
            {"w": jnp.zeros(2)},
        )
        f, g, _ = objective.value_and_grad(jnp.zeros(2), None, jnp.ones(2), None)
        assert float(f) == 2.0 and objective.nvar == 2
        ```
    """

    fn: Callable[..., Any]
    flat: Flattener
    state_sig: TreeSignature = eqx.field(static=True)
    name: str = eqx.field(static=True)
    traces: TraceCounts = eqx.field(static=True)

    @classmethod
    def from_function(
        cls,
        fn: Callable[[PyTree, PyTree, PyTree], tuple[Any, PyTree]],
        x0: PyTree,
        state: PyTree = None,
    ) -> Objective:
        """The objective of `fn(x, state, batch) -> (loss, new_state)` for variables shaped like `x0`."""
        if not callable(fn):
            raise InvalidTypeError(f"fn: expected a callable, got {type(fn).__name__}")
        flat = make_flattener(to_jax_tree(x0, "x0"), "x0")
        return cls(_PlainFn(fn), flat, signature(to_jax_tree(state, "state")), "fn", TraceCounts())

    @property
    def dtype(self) -> Any:
        return self.flat.dtype

    @property
    def nvar(self) -> int:
        return self.flat.size

    # -- checks made while tracing (so they cost nothing per call) -------------
    def _check_inputs(self, x: Any, state: PyTree, what: str = "x") -> None:
        shape = tuple(np.shape(x))
        if shape != (self.nvar,):
            raise InvalidArgumentError(
                f"{what}: expected a flat vector of shape ({self.nvar},), got shape {shape}"
            )
        dtype = getattr(x, "dtype", None)
        if dtype != self.dtype:
            raise InvalidTypeError(
                f"{what}: expected dtype {self.dtype} (the dtype of nlp.x0), got {dtype}"
            )
        problem = describe_mismatch(self.state_sig, signature(state))
        if problem is not None:
            raise InvalidArgumentError(
                f"state: does not match the problem's state (nlp.state0): {problem}"
            )

    def _check_output(self, out: Any) -> tuple[jax.Array, PyTree]:
        if not isinstance(out, tuple | list) or len(out) != 2:
            got = f"a {len(out)}-tuple" if isinstance(out, tuple | list) else type(out).__name__
            raise InvalidTypeError(
                f"fn: {self.name} must return a pair (loss, new_state), got {got}"
            )
        loss, new_state = out
        shape = tuple(np.shape(loss))
        dtype = getattr(loss, "dtype", None)
        if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidTypeError(
                f"fn: {self.name} must return a scalar float loss, got "
                f"{'dtype ' + str(dtype) if dtype is not None else type(loss).__name__} "
                f"of shape {list(shape)}"
            )
        problem = describe_mismatch(self.state_sig, signature(new_state))
        if problem is not None:
            raise InvalidArgumentError(
                f"fn: {self.name} returned a new_state that does not match its input state: "
                f"{problem}. The state must keep its structure, shapes and dtypes."
            )
        return loss.astype(self.dtype), cast_like(new_state, self.state_sig)

    # -- the pure functions ----------------------------------------------------
    def _call(self, x: jax.Array, state: PyTree, batch: PyTree, consts: PyTree):
        # Every call of fn gets its own copy of the state's containers (the arrays are
        # shared): a loss may consume the state it is given, as Equinox's `State.set`
        # does (it invalidates the State object it was called on), and the same state
        # s_k reaches fn many times within one iteration.
        fresh = jax.tree_util.tree_map(lambda leaf: leaf, state)
        return self._check_output(self.fn(self.flat.unflatten(x), fresh, batch, consts))

    def value(self, x: jax.Array, state: PyTree, batch: PyTree, consts: PyTree):
        """`(f, new_state)` at the flat point `x`."""
        self._check_inputs(x, state)
        return self._call(x, state, batch, consts)

    def value_and_grad(self, x: jax.Array, state: PyTree, batch: PyTree, consts: PyTree):
        """`(f, g, new_state)`: one forward and one backward pass."""
        self._check_inputs(x, state)

        def f(z):
            return self._call(z, state, batch, consts)

        (value, new_state), grad = jax.value_and_grad(f, has_aux=True)(x)
        return value, grad, new_state

    def hvp(self, x: jax.Array, v: jax.Array, state: PyTree, batch: PyTree, consts: PyTree):
        """`(H v, new_state)`: exact Hessian-vector product, forward-over-reverse."""
        self._check_inputs(v, state, what="v")

        def grad(z):
            _, g, new_state = self.value_and_grad(z, state, batch, consts)
            return g, new_state

        _, hv, new_state = jax.jvp(grad, (x,), (v,), has_aux=True)
        return hv, new_state


# Traced implementations bound to one core (the counters make retracing visible).
def _obj_impl(core: Objective, x, state, batch, consts):
    core.traces.bump("obj")
    return core.value(x, state, batch, consts)


def _objgrad_impl(core: Objective, x, state, batch, consts):
    core.traces.bump("objgrad")
    return core.value_and_grad(x, state, batch, consts)


def _grad_impl(core: Objective, x, state, batch, consts):
    core.traces.bump("grad")
    _, g, new_state = core.value_and_grad(x, state, batch, consts)
    return g, new_state


def _hprod_impl(core: Objective, x, v, state, batch, consts):
    core.traces.bump("hprod")
    return core.hvp(x, v, state, batch, consts)


def _as_vector(x: Any, name: str) -> jax.Array:
    if isinstance(x, jax.Array):
        return x
    try:
        return jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise InvalidTypeError(f"{name}: expected an array, got {type(x).__name__}") from err


class AbstractNLPModel:
    """The problem protocol: everything `solve` reads from a problem.

    `StatefulNLPModel`, `EquinoxNLPModel`, `FlaxNLPModel` and the quasi-Newton
    models implement it, and so can a class of your own. A problem provides:

    * `x0` (flat float vector), `state0` (any pytree, None allowed) and
      `counters` (a `Counters`, set in `__init__`);
    * `objective`: an `Objective`, the problem's pure function of
      `(x, state, batch, consts)` (build one with `Objective.from_function`);
    * `batch`: the current minibatch (what the objective receives), and
      `batch_version`: an int that changes whenever `batch` changes;
    * `next_batch()`: advance the minibatch (it may do nothing).

    Optional members, with defaults here: `consts` (arrays the objective reads
    besides x, state and batch; None), `hessian` (a quasi-Newton operator whose
    products replace the exact Hessian-vector products, with its pair memory in
    `memory`; None), `mesh` (None), and what checkpoints need to resume the data
    stream exactly: `data_kind`, `exact_resume`, `data_position()`,
    `restore_data_position(position)`. The evaluations `obj`, `grad`, `objgrad`
    and `hprod` are provided from these members.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        class LeastSquares(snlp.AbstractNLPModel):
            # Pure least squares; the state counts evaluations.

            def __init__(self, A, b):
                super().__init__()
                self.A, self.b = A, b
                self._objective = snlp.Objective.from_function(
                    self.loss, jnp.zeros(A.shape[1]), jnp.int32(0)
                )

            def loss(self, x, state, batch):
                return jnp.sum((self.A @ x - self.b) ** 2), state + 1

            objective = property(lambda self: self._objective)
            x0 = property(lambda self: jnp.zeros(self.A.shape[1]))
            state0 = property(lambda self: jnp.int32(0))
            batch = property(lambda self: None)
            batch_version = property(lambda self: 0)

            def next_batch(self):
                pass

        problem = LeastSquares(jnp.eye(3), jnp.arange(3.0))
        stats = snlp.solve(problem, "trunk")
        assert stats.status == "first_order" and int(stats.state) >= 1
        ```
    """

    counters: Counters
    memory: PyTree = None

    def __init__(self) -> None:
        self.counters = Counters()

    # -- required ---------------------------------------------------------------
    @property
    def x0(self) -> Float[Array, " n"]:
        """The initial variables as one flat float vector."""
        raise NotImplementedError(f"{type(self).__name__} must define x0")

    @property
    def state0(self) -> PyTree:
        """The initial state (any pytree, possibly None)."""
        raise NotImplementedError(f"{type(self).__name__} must define state0")

    @property
    def objective(self) -> Objective:
        """The problem's pure function (an `Objective`)."""
        raise NotImplementedError(f"{type(self).__name__} must define objective")

    @property
    def batch(self) -> PyTree:
        """The current training minibatch (what the objective receives)."""
        raise NotImplementedError(f"{type(self).__name__} must define batch")

    @property
    def batch_version(self) -> int:
        """A number that changes whenever `batch` changes."""
        raise NotImplementedError(f"{type(self).__name__} must define batch_version")

    def next_batch(self) -> None:
        """Advance the training minibatch."""
        raise NotImplementedError(f"{type(self).__name__} must define next_batch")

    # -- optional ---------------------------------------------------------------
    @property
    def consts(self) -> PyTree:
        """Arrays the objective reads besides x, state and batch (passed, not baked in)."""
        return None

    @property
    def hessian(self) -> Any:
        """A quasi-Newton operator replacing exact Hessian-vector products, or None."""
        return None

    @property
    def mesh(self) -> Any:
        """The `jax.sharding.Mesh` the batches are sharded over, or None."""
        return None

    @property
    def data_kind(self) -> str:
        """What kind of data the problem reads (recorded in checkpoints)."""
        return "custom"

    @property
    def exact_resume(self) -> bool:
        """Whether `restore_data_position` brings back the exact same batches."""
        return False

    def data_position(self) -> Any:
        """Where the data stream is (JSON-serializable), for checkpoints; None if unknown."""
        return None

    def restore_data_position(self, position: Any) -> None:
        """Go back to a position returned by `data_position`."""
        del position

    # -- derived ----------------------------------------------------------------
    @property
    def nvar(self) -> int:
        """The number of variables."""
        return self.objective.nvar

    @property
    def dtype(self) -> Any:
        """The dtype of the flat variables (the `result_type` of the leaves)."""
        return self.objective.dtype

    def _evaluator(self, name: str) -> Callable[..., Any]:
        # One jitted function per problem and kind, compiled once per shape/dtype.
        cache = self.__dict__.setdefault("_jitted", {})
        if name not in cache:
            impl = {"obj": _obj_impl, "objgrad": _objgrad_impl, "grad": _grad_impl}.get(
                name, _hprod_impl
            )
            cache[name] = jax.jit(functools.partial(impl, self.objective))
        return cache[name]

    def _state_arg(self, state: PyTree) -> PyTree:
        return self.state0 if state is _MISSING else state

    def obj(self, x: Float[Array, " n"], state: PyTree = _MISSING) -> tuple[Array, PyTree]:
        """`(f, new_state)` on the current minibatch. `state` defaults to `state0`."""
        out = self._evaluator("obj")(
            _as_vector(x, "x"), self._state_arg(state), self.batch, self.consts
        )
        self.counters.obj += 1
        return out

    def grad(self, x: Float[Array, " n"], state: PyTree = _MISSING) -> tuple[Array, PyTree]:
        """`(g, new_state)` on the current minibatch."""
        out = self._evaluator("grad")(
            _as_vector(x, "x"), self._state_arg(state), self.batch, self.consts
        )
        self.counters.grad += 1
        return out

    def objgrad(
        self, x: Float[Array, " n"], state: PyTree = _MISSING
    ) -> tuple[Array, Array, PyTree]:
        """`(f, g, new_state)` from one forward and one backward pass."""
        out = self._evaluator("objgrad")(
            _as_vector(x, "x"), self._state_arg(state), self.batch, self.consts
        )
        self.counters.obj += 1
        self.counters.grad += 1
        return out

    def hprod(
        self, x: Float[Array, " n"], v: Float[Array, " n"], state: PyTree = _MISSING
    ) -> tuple[Array, PyTree]:
        """`(H(x) v, new_state)`: the exact Hessian-vector product (forward-over-reverse)."""
        out = self._evaluator("hprod")(
            _as_vector(x, "x"),
            _as_vector(v, "v"),
            self._state_arg(state),
            self.batch,
            self.consts,
        )
        self.counters.hprod += 1
        return out

    def unflatten(self, x: Float[Array, " n"]) -> PyTree:
        """The variables `x` in the structure (and leaf dtypes) of the original `x0`."""
        x = _as_vector(x, "x")
        self.objective._check_inputs(x, self.state0)
        return self.objective.flat.unflatten(x)

    def flatten(self, tree: PyTree) -> Float[Array, " n"]:
        """The flat vector of a pytree with the structure of the original `x0`."""
        sig = signature(tree)
        flat = self.objective.flat
        if sig.treedef != flat.treedef or tuple(s.shape for s in sig.leaves) != flat.shapes:
            raise InvalidArgumentError(
                "tree: expected a pytree with the structure and shapes of x0"
            )
        for path, spec, dtype in zip(sig.paths, sig.leaves, flat.dtypes):
            if jnp.dtype(spec.dtype) != jnp.dtype(dtype):
                raise InvalidTypeError(
                    f"tree: leaf {path or '<root>'} has dtype {jnp.dtype(spec.dtype).name}, "
                    f"expected {jnp.dtype(dtype).name} (the dtype of that leaf in x0)"
                )
        return flat.flatten(tree)

    def reset_counters(self) -> None:
        """Set all evaluation counters back to zero."""
        self.counters.reset()


class StatefulNLPModel(AbstractNLPModel):
    """An optimization problem whose loss carries explicit state.

    `fn(x, state, batch) -> (loss, new_state)`: `x` has the structure of `x0`
    (any pytree of float arrays), `loss` is a float scalar, and `new_state` must
    have the structure, shapes and dtypes of `state`. The variables are exposed
    as one flat vector `nlp.x0` of length `nlp.nvar`, in the `result_type` of
    the leaves (each leaf is cast back to its own dtype before `fn` sees it).

    `data` is `None` (`fn` gets `batch=None`), one full batch (a tuple, dict or
    array), or a stream of batches: a `DataLoader`, list, generator or any other
    iterable, re-iterated at the end of an epoch. Only `next_batch()` advances
    the stream.

    `obj`, `grad`, `objgrad` and `hprod` evaluate on the current batch. They are
    jitted, compiled once per input shape/dtype, take the state explicitly and
    return the new one; they never copy to the host.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        def fn(x, state, batch):
            loss = jnp.sum((x["w"] - batch) ** 2)
            return loss, state + 1  # the state counts evaluations

        nlp = snlp.StatefulNLPModel(fn, {"w": jnp.zeros(3)}, state=jnp.int32(0),
                                    data=jnp.ones(3))
        f, s1 = nlp.obj(nlp.x0, nlp.state0)
        assert float(f) == 3.0 and int(s1) == 1 and nlp.counters.obj == 1
        ```
    """

    def __init__(
        self,
        fn: Callable[[PyTree, PyTree, PyTree], tuple[Any, PyTree]],
        x0: PyTree,
        state: PyTree = None,
        data: Any = None,
        *,
        mesh: Any = None,
    ):
        if not callable(fn):
            raise InvalidTypeError(f"fn: expected a callable, got {type(fn).__name__}")
        self._setup(_PlainFn(fn), x0, state, data, consts=None, name="fn", mesh=mesh)

    # -- construction shared with the model wrappers ----------------------------
    def _setup(
        self,
        fn: Callable[..., Any],
        x0: PyTree,
        state: PyTree,
        data: Any,
        *,
        consts: PyTree,
        name: str,
        mesh: Any,
    ) -> None:
        super().__init__()
        x0_tree = to_jax_tree(x0, "x0")
        flat = make_flattener(x0_tree, "x0")
        x0_flat = flat.flatten(x0_tree)
        if x0_flat.size == 0:
            raise InvalidArgumentError(
                "x0: has no elements (every leaf is empty); a problem needs at least one variable"
            )
        if not bool(jnp.all(jnp.isfinite(x0_flat))):
            raise InvalidArgumentError("x0: contains NaN or infinite values")
        state = to_jax_tree(state, "state")
        self._mesh = _check_mesh(mesh)
        _check_batch_list(data)
        self._stream = make_stream(data)
        if self._mesh is not None:
            from ._sharding import ShardedStream

            self._stream = ShardedStream(self._stream, self._mesh)
        self._objective = Objective(fn, flat, signature(state), name, TraceCounts())
        self._consts = consts
        if self._mesh is not None:
            from ._sharding import replicate

            x0_flat, state, self._consts = replicate((x0_flat, state, self._consts), self._mesh)
        self._x0 = x0_flat
        self._state0 = state
        self._version = 0
        self._check_fn()

    def _check_fn(self) -> None:
        """Trace `fn` once (no compilation) so a bad return value is reported now."""
        jax.eval_shape(self._objective.value, self._x0, self._state0, self.batch, self._consts)

    # -- the protocol -----------------------------------------------------------
    @property
    def objective(self) -> Objective:
        return self._objective

    @property
    def consts(self) -> PyTree:
        return self._consts

    @property
    def batch(self) -> PyTree:
        """The current training minibatch (what `fn` receives)."""
        return self._stream.current()

    @property
    def batch_version(self) -> int:
        return self._version

    @property
    def x0(self) -> Float[Array, " n"]:
        """The initial variables as one flat vector."""
        return self._x0

    @property
    def state0(self) -> PyTree:
        """The initial state (any pytree, possibly None)."""
        return self._state0

    @property
    def mesh(self) -> Any:
        """The `jax.sharding.Mesh` the batches are sharded over, or None."""
        return self._mesh

    @property
    def data_kind(self) -> str:
        return self._stream.kind

    @property
    def exact_resume(self) -> bool:
        return self._stream.exact_resume

    def data_position(self) -> Any:
        return self._stream.position()

    def restore_data_position(self, position: Any) -> None:
        self._stream.restore(position)

    @property
    def trace_counts(self) -> dict[str, int]:
        """How many times `obj`/`objgrad`/`grad`/`hprod` were traced (compiled)."""
        return dict(self._objective.traces)

    def next_batch(self) -> None:
        """Advance the training minibatch (wrapping around at the end of an epoch)."""
        self._stream.advance()
        self._version += 1

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(nvar={self.nvar}, dtype={self.dtype}, data={self._stream.kind})"
        )


class _PlainFn(eqx.Module):
    """Adapts the user's `fn(x, state, batch)` to the core's 4-argument form."""

    fn: Callable[..., Any] = eqx.field(static=True)

    def __call__(self, x, state, batch, consts):
        del consts
        return self.fn(x, state, batch)


def _check_batch_list(data: Any) -> None:
    """Refuse a list that is one batch written as a list (`[X, y]`), not a stream.

    A list is a stream of batches, so its items must be batches of one structure
    (leaf ranks and dtypes; the batch size may vary); `[X, y]` with X `(n, d)` and y `(n,)` is not, and the user's loss
    would otherwise fail later on an unpacking error of its own.
    """
    if not isinstance(data, list) or len(data) < 2:
        return

    def kinds(sig: TreeSignature) -> tuple[Any, ...]:
        # Batch sizes may differ (a smaller last batch); structure, ranks and dtypes not.
        return (sig.treedef, *((len(leaf.shape), leaf.dtype) for leaf in sig.leaves))

    first = signature(data[0])
    for i, item in enumerate(data[1:], start=1):
        other = signature(item)
        if kinds(other) != kinds(first):
            raise InvalidArgumentError(
                "data: a list is read as a stream of batches, but its items are not batches "
                f"of one structure (item 0 is {_describe_batch(first)}, item {i} is "
                f"{_describe_batch(other)}); to pass one batch such as (X, y), use a tuple: "
                "data=(X, y)"
            )


def _describe_batch(sig: TreeSignature) -> str:
    specs = ", ".join(spec.describe() for spec in sig.leaves)
    return f"[{specs}]" if len(sig.leaves) != 1 else specs


def _check_mesh(mesh: Any) -> Any:
    if mesh is None:
        return None
    from jax.sharding import Mesh

    if not isinstance(mesh, Mesh):
        raise InvalidTypeError(
            f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}"
        )
    if "data" not in mesh.axis_names:
        raise InvalidArgumentError(
            f"mesh: expected a mesh with an axis named 'data', got axes {tuple(mesh.axis_names)}"
        )
    # Place data with the classic (automatic, GSPMD) sharding whatever the mesh's axis
    # types: with explicit axes, sharding becomes part of array types and ordinary
    # model code (a vmap over samples with an unsharded key) would have to be rewritten.
    from jax.sharding import AxisType

    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def check_problem(nlp: Any) -> None:
    """Refuse anything that does not implement the problem protocol, naming what is missing."""
    if not isinstance(nlp, AbstractNLPModel):
        raise InvalidTypeError(
            "nlp: expected a statefulnlp problem (StatefulNLPModel, EquinoxNLPModel, ... or a "
            f"subclass of snlp.AbstractNLPModel), got {type(nlp).__name__}"
        )
    for name in ("objective", "x0", "state0", "batch", "batch_version"):
        try:
            getattr(nlp, name)
        except NotImplementedError:
            raise InvalidTypeError(
                f"nlp: {type(nlp).__name__} does not implement the problem protocol: it must "
                f"define `{name}` (see snlp.AbstractNLPModel)"
            ) from None
    if not isinstance(nlp.objective, Objective):
        raise InvalidTypeError(
            f"nlp: {type(nlp).__name__}.objective must be an snlp.Objective (build it with "
            f"snlp.Objective.from_function), got {type(nlp.objective).__name__}"
        )


def check_model_functions(loss: Any, predict: Any) -> None:
    """A model problem's `loss` must be callable, and `predict` callable or None."""
    if not callable(loss):
        raise InvalidTypeError(f"loss: expected a callable, got {type(loss).__name__}")
    if predict is not None and not callable(predict):
        raise InvalidTypeError(
            f"predict: expected a callable or None, got {type(predict).__name__}"
        )


def check_dtype_mode(nlp: AbstractNLPModel) -> None:
    """Refuse a float64 problem while JAX's 64-bit mode is off (it would be truncated)."""
    dtype = jnp.dtype(nlp.dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise InvalidTypeError(
            f"nlp: the problem's variables are {dtype.name} (it was built with 64-bit mode on, "
            "e.g. inside `with jax.enable_x64(True):`), but 64-bit mode is off now; solve it "
            "where it was built (inside the same `with jax.enable_x64(True):` block) or enable "
            'it for the whole program with jax.config.update("jax_enable_x64", True)'
        )


def start_point(nlp: AbstractNLPModel, x0: Any, state: Any) -> tuple[jax.Array, PyTree]:
    """The checked starting point `(x0, state)` of a solve (defaults: `nlp.x0`, `nlp.state0`).

    `x0` is a flat vector of length `nlp.nvar` or a pytree shaped like the problem's
    variables; `state` must match `nlp.state0` in structure, shapes and dtypes.
    Bad input raises `InvalidArgumentError` / `InvalidTypeError` naming the argument.
    """
    x = nlp.x0 if x0 is None else _start_vector(nlp, x0)
    if state is None:
        s = nlp.state0
    else:
        s = to_jax_tree(state, "state")
        expected = signature(nlp.state0)
        problem = describe_mismatch(expected, signature(s))
        if problem is not None:
            raise InvalidArgumentError(
                f"state: does not match the problem's state (nlp.state0): {problem}"
            )
        s = cast_like(s, expected)
    mesh = getattr(nlp, "mesh", None)
    if mesh is not None and (x0 is not None or state is not None):
        from ._sharding import replicate

        x, s = replicate((x, s), mesh)
    return x, s


def _start_vector(nlp: AbstractNLPModel, x0: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(x0)
    is_flat = len(leaves) == 1 and leaves[0] is x0 and np.ndim(x0) == 1
    if is_flat and np.shape(x0) == (nlp.nvar,):
        x = _as_vector(x0, "x0")
        if x.dtype != nlp.dtype:
            raise InvalidTypeError(
                f"x0: expected dtype {jnp.dtype(nlp.dtype).name} (the dtype of nlp.x0), got "
                f"{jnp.dtype(x.dtype).name}; convert it with .astype(nlp.dtype)"
            )
    else:
        tree = to_jax_tree(x0, "x0")
        try:
            x = nlp.flatten(tree)  # type: ignore[attr-defined]
        except InvalidTypeError as err:
            raise InvalidTypeError(f"x0: {str(err).removeprefix('tree: ')}") from None
        except InvalidArgumentError:
            raise InvalidArgumentError(
                f"x0: expected a flat vector of shape ({nlp.nvar},) like stats.solution, or a "
                "pytree with the structure and shapes of the problem's variables, got "
                f"{_describe(x0)}"
            ) from None
    if not bool(jnp.all(jnp.isfinite(x))):
        raise InvalidArgumentError("x0: contains NaN or infinite values")
    return x


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"
