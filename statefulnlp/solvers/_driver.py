"""The host side of the solver loop: `solve`.

The numerical work runs on the device (`_loop.py`): without a callback the
iterations run as `lax.while_loop` chunks and the host only reads a small
vector of scalars between chunks (time limit, verbose log, checkpoints); with
no callback, time limit, log or periodic checkpoint the whole solve is one
chunk. With a callback each chunk is one iteration, followed by the callback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import traits as _traits
from .._errors import (
    CheckpointError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    SolverTraitError,
    StateMutationError,
)
from .._evaluate import Fault, Known, StateRule
from .._problem import AbstractNLPModel, check_dtype_mode, check_problem, start_point
from .._sharding import agree, agree_stop, replicate
from .._stats import Stats, Status
from ..traits import StatePolicy
from ._base import CONTINUE, AbstractSolver
from ._checkpointing import Checkpointing
from ._loop import (
    FLOAT_FIELDS,
    INT_FIELDS,
    INT_MAX,
    Carry,
    Inputs,
    Limits,
    Program,
    compiled,
    initial_shape,
    unpack,
)
from ._loop import info as info_of

__all__ = ["solve"]


# ----------------------------------------------------------------------------
# Argument checks


def _check_real(value: Any, name: str, *, allow_none: bool, positive: bool = False) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise InvalidTypeError(f"{name}: expected a number, got None")
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidTypeError(f"{name}: expected a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value < 0 or (positive and value == 0):
        expected = "a positive number" if positive else "a non-negative number"
        raise InvalidArgumentError(f"{name}: expected {expected}, got {value}")
    return value


def _check_int(value: Any, name: str, *, allow_none: bool, minimum: int = 0) -> int | None:
    if value is None:
        if allow_none:
            return None
        raise InvalidTypeError(f"{name}: expected an integer, got None")
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidTypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _make_solver(solver: Any) -> AbstractSolver:
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, str):
        cls = _traits.solver_class(solver)
        try:
            return cls()
        except TypeError as err:
            raise InvalidArgumentError(
                f"solver: {solver!r} cannot be built without arguments ({err}); pass an instance, "
                f"e.g. snlp.solvers.{cls.__name__}(...)"
            ) from None
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        return _make_solver(_traits.of(solver).name)
    raise InvalidTypeError(
        "solver: expected a solver name (e.g. 'lbfgs') or a solver instance "
        f"(e.g. snlp.solvers.LBFGS()), got {type(solver).__name__}"
    )


def _path_arg(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    raise InvalidTypeError(f"{name}: expected a file path or None, got {type(value).__name__}")


def _check_writable(path: str) -> None:
    """Refuse a checkpoint path that cannot be written, before any evaluation."""
    if os.path.isdir(path):
        raise InvalidArgumentError(f"checkpoint: {path!r} is a directory; expected a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidArgumentError(
            f"checkpoint: cannot write {path!r}: its directory {directory!r} does not exist"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".ckpt-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InvalidArgumentError(
            f"checkpoint: cannot write in {directory!r} ({err.strerror})"
        ) from None


def _wants_stop(value: Any) -> bool:
    """A callback's verdict: True stops; None and False go on; anything else is refused."""
    if value is None:
        return False
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray | jax.Array) and value.shape == () and value.dtype == bool:
        return bool(value)
    what = type(value).__name__
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        what = f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    raise InvalidTypeError(
        "callback: must return None, False (go on) or True (stop), or a boolean scalar such "
        f"as np.True_ or a 0-d bool array; got {what}"
    )


@dataclasses.dataclass(frozen=True)
class _Options:
    """The validated keyword arguments of `solve` (host-side only)."""

    atol: float
    rtol: float
    max_iter: int
    max_eval: int | None
    max_time: float | None
    verbose: int
    callback: Callable[..., Any] | None
    checkpoint: str | None
    checkpoint_every: int | None
    resume: str | None


def _options(nlp: AbstractNLPModel, **kw: Any) -> _Options:
    callback = kw["callback"]
    if callback is not None and not callable(callback):
        raise InvalidTypeError(
            f"callback: expected a callable or None, got {type(callback).__name__}"
        )
    eps = float(jnp.finfo(nlp.dtype).eps)
    atol = _check_real(kw["atol"], "atol", allow_none=True)
    rtol = _check_real(kw["rtol"], "rtol", allow_none=True)
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and math.isinf(value):
            raise InvalidArgumentError(f"{name}: expected a finite number, got {value}")
    verbose = kw["verbose"]
    if isinstance(verbose, bool):
        verbose = int(verbose)
    checkpoint = _path_arg(kw["checkpoint"], "checkpoint")
    if checkpoint is not None:
        _check_writable(checkpoint)
    every = _check_int(kw["checkpoint_every"], "checkpoint_every", allow_none=True, minimum=1)
    if every is not None and checkpoint is None:
        raise InvalidArgumentError("checkpoint_every: needs checkpoint=path to know where to write")
    max_time = _check_real(kw["max_time"], "max_time", allow_none=True)
    return _Options(
        atol=math.sqrt(eps) if atol is None else atol,
        rtol=math.sqrt(eps) if rtol is None else rtol,
        max_iter=_check_int(kw["max_iter"], "max_iter", allow_none=False) or 0,
        max_eval=_check_int(kw["max_eval"], "max_eval", allow_none=True),
        max_time=max_time,
        verbose=_check_int(verbose, "verbose", allow_none=False) or 0,
        callback=callback,
        checkpoint=checkpoint,
        checkpoint_every=every,
        resume=_path_arg(kw["resume"], "resume"),
    )


# ----------------------------------------------------------------------------
# The host loop


class _Log:
    """The verbose log table: iteration, f, ‖∇f‖, the solver's own columns, time."""

    def __init__(self, policy: StatePolicy, solver_name: str, columns: tuple[str, ...]):
        self.policy = policy
        self.solver_name = solver_name
        self.columns = columns
        self.header_done = False

    def row(self, info: _Info, elapsed: float) -> None:
        if jax.process_index() != 0:
            return  # multi-process: one log, from process 0
        if not self.header_done:
            extra = "".join(f"{k:>10}" for k in self.columns)
            print(
                f"statefulnlp: {self.solver_name} (state policy: {self.policy.value})\n"
                f"{'iter':>6} {'f(x)':>13} {'‖∇f‖':>10}{extra} {'time':>8}",
                flush=True,
            )
            self.header_done = True
        diag = "".join(f"{v:>10.2e}" for v in info.diag)
        print(
            f"{info.iter:>6d} {info.f:>13.6e} {info.gnorm:>10.2e}{diag} {elapsed:>7.2f}s",
            flush=True,
        )


@dataclasses.dataclass(frozen=True)
class _Info:
    """The host's copy of the loop's scalars after a device call."""

    status: int
    fault: int
    iter: int
    accepted: int
    obj: int
    grad: int
    hprod: int
    known: int  # a `Known`
    f: float
    gnorm: float
    diag: tuple[float, ...]

    @property
    def counters(self) -> dict[str, int]:
        return {"obj": self.obj, "grad": self.grad, "hprod": self.hprod}

    @property
    def going(self) -> bool:
        return self.status == CONTINUE and self.fault == Fault.NONE


def _read(packed: Any, dtype: Any) -> _Info:
    """The host copy of a device call's info vector (one transfer)."""
    ints, floats = unpack(packed, dtype)
    values: dict[str, Any] = {k: int(v) for k, v in zip(INT_FIELDS, ints)}
    values.update({k: float(v) for k, v in zip(FLOAT_FIELDS, floats)})
    values["diag"] = tuple(float(v) for v in floats[len(FLOAT_FIELDS) :])
    return _Info(**values)


def solve(
    nlp: AbstractNLPModel,
    solver: str | AbstractSolver = "lbfgs",
    *,
    x0: Any = None,
    state: Any = None,
    state_policy: StatePolicy | str | None = None,
    callback: Callable[[AbstractNLPModel, AbstractSolver, Stats], Any] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    max_iter: int = 1000,
    max_eval: int | None = None,
    max_time: float | None = None,
    verbose: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
) -> Stats:
    """Minimize the problem `nlp` with `solver` under a state policy.

    Args:
        nlp: the problem (`StatefulNLPModel`, `EquinoxNLPModel`, `FlaxNLPModel`,
            `LBFGSModel`, `LSR1Model`).
        solver: a registry name (`"r2"`, `"lbfgs"`, `"trunk"`, `"gd"`) or an instance
            (`snlp.solvers.LBFGS(mem=10)`, `snlp.solvers.Optax(optax.adam(1e-3))`).
        x0: where this solve starts (default `nlp.x0`): a flat vector like
            `stats.solution`, or a pytree shaped like the problem's variables. The
            problem itself is not changed. Chaining solvers is two calls:
            `solve(nlp, "lbfgs", x0=a.solution, state=a.state)`.
        state: the state this solve starts from (default `nlp.state0`), shaped like
            `nlp.state0`.
        state_policy: `"propagate"`, `"freeze"` or `"reject"` (or a `StatePolicy`);
            None picks the solver's default (`propagate` for one-step solvers, `freeze`
            otherwise). `propagate` with a multi-evaluation solver raises
            `IncompatibleStatePolicyError` before any evaluation.
        callback: `callback(nlp, solver, stats)` after every iteration; it may call
            `nlp.next_batch()`. Returning a true boolean scalar (`True`, `np.True_`,
            a 0-d bool array) stops with status `user`; None or False go on; any
            other return value is an `InvalidTypeError`.
        atol: absolute tolerance: stop when ‖∇f(x)‖ ≤ atol + rtol·‖∇f(x0)‖
            (default: sqrt(eps) of the dtype).
        rtol: relative tolerance of the same test (default: sqrt(eps) of the dtype).
        max_iter: iteration limit (over the whole run when resuming).
        max_eval: limit on objective evaluations (`nlp.counters.obj` during the solve).
        max_time: time limit in seconds.
        verbose: print a log line every `verbose` iterations (0: quiet).
        checkpoint: path of a checkpoint written at the end, every
            `checkpoint_every` iterations, and when the solve is interrupted by an
            exception (from `fn`, the callback, or KeyboardInterrupt: the checkpoint
            holds the last completed iteration, then the exception propagates). A
            path that cannot be written is refused before any evaluation.
        resume: path of a checkpoint to continue from exactly. It must have been
            written by this problem, solver (with the same settings) and policy
            (`CheckpointError` otherwise); f and ∇f at the resumed iterate are
            checked against this problem before the solve goes on.

    Returns:
        A `Stats` with the status, solution, final state and counters.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        def fn(x, state, batch):
            return jnp.sum((x - 2.0) ** 2), state

        nlp = snlp.StatefulNLPModel(fn, jnp.zeros(3))
        stats = snlp.solve(nlp, "lbfgs")
        assert stats.status == "first_order"
        assert jnp.allclose(stats.solution, 2.0, atol=1e-3)
        ```
    """
    check_problem(nlp)
    solver = _make_solver(solver)
    solver_traits = _traits.of(solver)
    rule = StateRule.for_solver(solver_traits, state_policy)
    check_dtype_mode(nlp)
    start = start_point(nlp, x0, state)
    hessian = nlp.hessian
    if hessian is not None and not solver_traits.uses_hprod:
        raise InvalidArgumentError(
            f"nlp: {type(nlp).__name__} only changes Hessian-vector products, which solver "
            f"{solver_traits.name!r} never uses; solve the wrapped problem (nlp.model) directly, "
            "or use a solver that calls hprod such as 'trunk'"
        )
    opts = _options(
        nlp,
        callback=callback,
        atol=atol,
        rtol=rtol,
        max_iter=max_iter,
        max_eval=max_eval,
        max_time=max_time,
        verbose=verbose,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume=resume,
    )
    program = Program(nlp.objective, solver, rule, hessian)
    given = (x0 is not None, state is not None)
    return _Solve(nlp, program, solver_traits, opts, (start, given)).run()


class _Solve:
    """One call of `solve` on the host."""

    def __init__(
        self,
        nlp: AbstractNLPModel,
        program: Program,
        traits: Any,
        opts: _Options,
        start: tuple[tuple[Any, Any], tuple[bool, bool]],
    ):
        """`start`: the checked `(x0, state)` and whether each was given to `solve`."""
        self.nlp = nlp
        self.x0, self.state0 = start[0]
        self.checkpoints = Checkpointing(nlp, program, traits.name, start)
        self.program = program
        self.traits = traits
        self.opts = opts
        self.counted = {"obj": 0, "grad": 0, "hprod": 0}
        self.previous_elapsed = 0.0
        self.batch_changed = False
        self.version = nlp.batch_version
        self.dtype = nlp.dtype
        try:
            self.compiled = compiled(program)  # hashes the program, so the solver too
        except TypeError:
            raise InvalidTypeError(
                f"solver: {type(program.solver).__name__} has unhashable fields; solver settings "
                "must be plain Python values (numbers, strings, tuples), not arrays"
            ) from None
        self.limits = Limits(
            np.int32(0),
            np.int32(min(opts.max_iter, INT_MAX)),
            np.int32(INT_MAX if opts.max_eval is None else min(opts.max_eval, INT_MAX)),
        )
        # The last completed device call: what an interrupted solve checkpoints.
        self.last: tuple[Carry | None, _Info | None] = (None, None)

    # -- device calls -----------------------------------------------------------------
    def _inputs(self) -> Inputs:
        return Inputs(self.nlp.batch, self.nlp.consts)

    def _start(self) -> tuple[Any, ...]:
        """`(x0, state0, (atol, rtol), memory)`: what the first stage starts from."""
        nlp, opts = self.nlp, self.opts
        memory = nlp.memory if self.program.hessian is not None else None
        tolerances = (np.asarray(opts.atol, self.dtype), np.asarray(opts.rtol, self.dtype))
        return (self.x0, self.state0, tolerances, memory)

    def _device(self, name: str, *args: Any, n: int = 0) -> tuple[Carry, _Info]:
        """One device call of `Compiled.<name>`; counters synced, faults raised."""
        function = getattr(self.compiled, name)
        limits = self.limits._replace(n_steps=np.int32(n))
        new, out = function(*args, self._inputs(), limits)
        self.batch_changed = False
        info = _read(out, self.dtype)
        self._sync_counters(info)
        self._raise_fault(info, new)
        self.last = (new, info)
        return new, info

    def _sync_counters(self, info: _Info) -> None:
        """Add the evaluations made on the device since the last call to nlp.counters."""
        for key in ("obj", "grad", "hprod"):
            delta = getattr(info, key) - self.counted[key]
            if delta:
                setattr(self.nlp.counters, key, getattr(self.nlp.counters, key) + delta)
            self.counted[key] = getattr(info, key)

    def _raise_fault(self, info: _Info, carry: Carry) -> None:
        """Turn an internal failure found on the device into its error."""
        if info.fault == Fault.NONFINITE_START:
            raise NonFiniteError(
                f"the objective or its gradient at x0 is not finite (f = {info.f}, "
                f"‖g‖ = {info.gnorm}); check x0, the state and fn"
            )
        if info.fault == Fault.MUTATION:
            mask = np.asarray(jax.device_get(carry.tally.mutated))
            paths = self.program.objective.state_sig.paths
            changed = tuple(p or "<root>" for p, m in zip(paths, mask) if m)
            raise StateMutationError(
                f"state_policy='reject': the objective changed its state (leaves "
                f"{', '.join(changed)}) during iteration {info.iter}. Use state_policy='freeze' "
                "for objectives with state (BatchNorm statistics, PRNG keys), or make the "
                "objective pure.",
                leaves=changed,
                iteration=info.iter,
            )
        if info.fault == Fault.TRAIT_VIOLATION:
            raise SolverTraitError(
                f"solver {self.traits.name!r} is registered one-step safe but evaluated the "
                f"objective more than once in iteration {info.iter}; register it with "
                "one_step_safe=False"
            )

    # -- start ----------------------------------------------------------------------
    def _one_call(self) -> bool:
        """True when the whole solve is one device call (nothing for the host between)."""
        opts = self.opts
        return (
            opts.callback is None
            and not opts.verbose
            and opts.checkpoint_every is None
            and opts.max_time is None
            and opts.resume is None
        )

    def _resume(self) -> tuple[Carry, _Info]:
        """The carry of the checkpoint `opts.resume`, checked to belong to this solve."""
        nlp, opts = self.nlp, self.opts
        assert opts.resume is not None
        template = initial_shape(self.program, self._start(), self._inputs())
        carry, meta = self.checkpoints.resume(opts.resume, template, self._verify_point)
        # Continue exactly as the interrupted run would have: with the same pending
        # batch change, and the stop it recorded (a limit, say) lifted.
        self.batch_changed = bool(meta.get("batch_changed", False))
        self.previous_elapsed = float(meta.get("elapsed_time", 0.0))
        self.counted = {k: int(meta["counters"][k]) for k in ("obj", "grad", "hprod")}
        carry = dataclasses.replace(carry, status=jnp.asarray(CONTINUE, jnp.int32))
        mesh = nlp.mesh  # every leaf on the mesh, as a fresh carry's
        carry = carry if mesh is None else replicate(carry, mesh)
        return carry, _read(info_of(self.program, carry), self.dtype)

    def _verify_point(self, carry: Carry, meta: dict[str, Any]) -> None:
        """f and ∇f stored for the resumed iterate must be those of this problem."""
        info = _read(info_of(self.program, carry), self.dtype)
        if info.known != Known.FRESH or meta.get("batch_changed", False):
            return  # the loop evaluates x again before it uses anything
        f, gnorm = (float(v) for v in self.compiled.final(carry, self._inputs()))
        self.nlp.counters.add(obj=1, grad=1)
        rel = math.sqrt(float(jnp.finfo(self.dtype).eps))
        tol = float(jax.device_get(carry.tol))
        f_ok = abs(f - info.f) <= rel * max(abs(f), abs(info.f)) + rel**2
        g_ok = abs(gnorm - info.gnorm) <= rel * max(gnorm, info.gnorm) + tol
        if not (f_ok and g_ok):
            raise CheckpointError(
                "resume: the checkpoint does not belong to this problem: at its iterate this "
                f"problem has f = {f:.6g} and ‖∇f‖ = {gnorm:.3g}, but the checkpoint recorded "
                f"f = {info.f:.6g} and ‖∇f‖ = {info.gnorm:.3g} (other data or another objective?)"
            )

    # -- chunk sizes ----------------------------------------------------------------
    def _chunk(self, iter_now: int, per_iter: float | None, elapsed: float) -> int:
        """How many iterations the next `run` call may make (the device loop path)."""
        opts = self.opts
        n = max(opts.max_iter - iter_now, 0)
        if opts.verbose:
            n = min(n, opts.verbose - iter_now % opts.verbose)
        if opts.checkpoint_every:
            n = min(n, opts.checkpoint_every - iter_now % opts.checkpoint_every)
        if opts.max_time is not None:
            target = min(0.25, max(opts.max_time - elapsed, 0.0) / 2)
            n = min(n, 1 if per_iter is None else max(1, int(target / max(per_iter, 1e-7))))
            (n,) = agree((n,))  # multi-process: process 0's clock decides for all
        return n

    def _host_limit(self, info: _Info) -> Status | None:
        """A limit the host sees before asking the device for more."""
        if info.iter >= self.opts.max_iter:
            return Status.MAX_ITER
        if self.opts.max_eval is not None and info.obj >= self.opts.max_eval:
            return Status.MAX_EVAL
        return None

    def _iteration(self, carry: Carry, info: _Info, n: int) -> tuple[Carry, _Info]:
        """The next iteration(s): `n` in a device loop, or one as top-level programs.

        On the callback path x_k is evaluated again (`settle`) only when the carried
        evaluation is not fresh, and the solver steps (`advance`) only when the tests
        let it: an iteration evaluates nothing it does not use.
        """
        if self.batch_changed and info.known == Known.FRESH:
            # x_k's evaluation was made on the previous batch: evaluate it again.
            known = jnp.asarray(Known.STALE, jnp.int32)
            mesh = self.nlp.mesh
            carry = dataclasses.replace(
                carry, known=known if mesh is None else replicate(known, mesh)
            )
            info = dataclasses.replace(info, known=Known.STALE)
        if self.opts.callback is None:
            return self._device("run", carry, n=n)
        if info.known != Known.FRESH:
            carry, info = self._device("settle", carry)
        else:
            carry, info = self._device("test", carry)
        if not info.going:
            return carry, info
        return self._device("advance", carry)

    # -- main loop ------------------------------------------------------------------
    def run(self) -> Stats:
        nlp, program, opts = self.nlp, self.program, self.opts
        t0 = time.perf_counter()
        try:
            carry, info, host_status = self._loop(t0)
        except BaseException:
            # An exception from fn or the callback (or KeyboardInterrupt) leaves a
            # checkpoint of the last completed iteration, then propagates unchanged.
            if opts.checkpoint is not None:
                self._save_last(time.perf_counter() - t0)
            raise
        status = host_status or Status.from_code(info.status)
        elapsed = time.perf_counter() - t0
        stats = self._stats(carry, info, status, elapsed, final=True)
        if opts.checkpoint is not None:
            self._save(carry, info, elapsed, self.batch_changed)
        if program.hessian is not None:
            nlp.memory = carry.memory
        return stats

    def _begin(self) -> tuple[Carry, _Info]:
        """The carry after the first stage (or the resumed one)."""
        if self.opts.resume is not None:
            carry, info = self._resume()
            self.last = (carry, info)
            return carry, info
        if self.opts.checkpoint is not None:
            self.checkpoints.identity()  # on the batch this solve starts with
        if self._one_call():
            n = max(self.opts.max_iter, 0)
            return self._device("solve_once", self._start(), n=n)
        return self._device("first", self._start())

    def _loop(self, t0: float) -> tuple[Carry, _Info, Status | None]:
        """Device calls, log, callback and host limits until a stop; `self.last` follows."""
        nlp, program, opts = self.nlp, self.program, self.opts
        carry, info = self._begin()
        log = None
        if opts.verbose:
            shapes = jax.eval_shape(lambda c: program.solver.diagnostics(c.solver_state), carry)
            log = _Log(program.rule.policy, self.traits.name, tuple(sorted(shapes)))
            log.row(info, time.perf_counter() - t0 + self.previous_elapsed)
        host_status: Status | None = None
        per_iter: float | None = None
        while info.going:
            host_status = self._host_limit(info)
            if host_status is not None:
                break
            iter_before = info.iter
            elapsed = time.perf_counter() - t0
            n = self._chunk(iter_before, per_iter, elapsed)
            tc = time.perf_counter()
            carry, info = self._iteration(carry, info, n)
            steps = info.iter - iter_before
            elapsed = time.perf_counter() - t0
            if steps > 0:
                per_iter = (time.perf_counter() - tc) / steps
            if log is not None and steps > 0 and (not info.going or info.iter % opts.verbose == 0):
                log.row(info, elapsed + self.previous_elapsed)
            if not info.going:
                break
            user_stop = False
            if opts.callback is not None and steps > 0:
                snapshot = self._stats(carry, info, Status.UNKNOWN, elapsed, final=False)
                user_stop = _wants_stop(opts.callback(nlp, program.solver, snapshot))
                if nlp.batch_version != self.version:
                    self.version = nlp.batch_version
                    self.batch_changed = True
            over_time = (
                opts.max_time is not None
                and time.perf_counter() - t0 + self.previous_elapsed >= opts.max_time
            )
            if opts.callback is not None or opts.max_time is not None:
                # Multi-process: a stop asked by any process's callback stops them all,
                # and process 0's clock decides the time limit for all.
                user_stop, over_time = agree_stop(user_stop, over_time)
            if user_stop:
                host_status = Status.USER
            elif over_time:
                host_status = Status.MAX_TIME
            if opts.checkpoint_every and steps > 0 and info.iter % opts.checkpoint_every == 0:
                self._save(carry, info, time.perf_counter() - t0, self.batch_changed)
            if host_status is not None:
                break
        return carry, info, host_status

    def _pending_batch_change(self) -> bool:
        return self.batch_changed or self.nlp.batch_version != self.version

    def _save_last(self, elapsed: float) -> None:
        """Checkpoint the last completed device call after an exception (best effort)."""
        carry, info = self.last
        if carry is None or info is None:
            return  # stopped before x0 was evaluated: nothing to continue from
        try:
            self._save(carry, info, elapsed, self._pending_batch_change())
        except Exception as err:  # the user's exception matters more than ours
            warnings.warn(
                f"statefulnlp: could not write the checkpoint {self.opts.checkpoint!r} after "
                f"the solve was interrupted ({type(err).__name__}: {err})",
                RuntimeWarning,
                stacklevel=3,
            )

    def _save(self, carry: Carry, info: _Info, elapsed: float, batch_changed: bool) -> None:
        assert self.opts.checkpoint is not None
        progress = {
            "iter": info.iter,
            "counters": info.counters,
            "elapsed_time": elapsed + self.previous_elapsed,
            "batch_changed": bool(batch_changed),
        }
        self.checkpoints.save(self.opts.checkpoint, carry, progress)

    def _stats(
        self, carry: Carry, info: _Info, status: Status, elapsed: float, *, final: bool
    ) -> Stats:
        program = self.program
        objective, dual = info.f, info.gnorm
        counters = info.counters
        if final and info.known == Known.NONE:
            # A one-step solver stopped by a limit: one extra counted evaluation at the
            # final iterate; its new state is discarded.
            f, gnorm = self.compiled.final(carry, self._inputs())
            objective, dual = float(f), float(gnorm)
            self.nlp.counters.add(obj=1, grad=1)
            counters["obj"] += 1
            counters["grad"] += 1
        return Stats(
            status=status,
            message=status.message,
            solution=carry.x,
            state=program.rule.final_state(carry.state, carry.point, info.known),
            objective=objective,
            dual_feas=dual,
            iter=info.iter,
            elapsed_time=elapsed + self.previous_elapsed,
            state_policy=program.rule.policy,
            solver=self.traits.name,
            counters=counters,
            accepted=info.accepted,
            solver_state=carry.solver_state,
        )
