"""The shared solver loop: `solve`.

The numerical work of an iteration is one pure function of a typed carry
(`_Carry`), compiled once per problem/solver/policy. Without a callback the
iterations run on the device as `lax.while_loop` chunks; the host only looks at
a handful of scalars between chunks (time limit, verbose log, checkpoints). With
a callback each chunk is one iteration, followed by the callback.

The state policy is applied here and nowhere else:

* the solver sees the iteration's frozen function through an `Oracle` built
  from (s_k, B_k);
* s_{k+1} is the state of the accepted point's evaluation (multi-evaluation
  solvers), the state of the single evaluation at x_k (one-step solvers), or
  s_k when the step is rejected;
* f and ∇f at x_{k+1} are re-evaluated under (s_{k+1}, B_{k+1}) at the start of
  the next iteration only if the state or the batch changed;
* under `reject` every evaluation's new state is compared with its input.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .. import traits as _traits
from .._errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    SolverTraitError,
    StateMutationError,
)
from .._evaluate import Evaluation, Oracle, Tally
from .._problem import AbstractNLPModel, _Core
from .._stats import Stats, Status
from .._tree import PyTree, changed_mask, safe_norm, tree_select
from ..traits import StatePolicy
from ._base import CONTINUE, AbstractSolver

__all__ = ["solve"]

# Internal stop codes (negative: never a user-visible Status).
_MUTATION = -1
_TRAIT_VIOLATION = -2
_INT_MAX = np.iinfo(np.int32).max


class _Program(eqx.Module):
    """Everything static about a solve: hashed, so equal programs share compiled code."""

    core: _Core = eqx.field(static=True)
    solver: AbstractSolver = eqx.field(static=True)
    policy: StatePolicy = eqx.field(static=True)
    one_step: bool = eqx.field(static=True)
    hessian: Any = eqx.field(static=True)

    def oracle(
        self, state: PyTree, batch: PyTree, consts: PyTree, tally: Tally, memory: PyTree
    ) -> Oracle:
        return Oracle(
            core=self.core,
            state=state,
            batch=batch,
            consts=consts,
            hessian=self.hessian,
            memory=memory,
            check_mutation=self.policy is StatePolicy.REJECT,
            tally=tally,
        )


class _Carry(eqx.Module):
    """The loop state. Saved whole in checkpoints."""

    x: Float[Array, " n"]
    state: PyTree  # s_k
    point: Evaluation  # evaluation at x (when `evaluated`), under (s_k, B_k) when `fresh`
    fresh: Bool[Array, ""]
    evaluated: Bool[Array, ""]
    prev_x: Float[Array, " n"]  # the last iterate whose fresh evaluation was finite
    prev_state: PyTree
    prev_point: Evaluation
    solver_state: PyTree
    memory: PyTree  # quasi-Newton pairs of LBFGSModel/LSR1Model problems, else None
    iter: Int[Array, ""]
    accepted: Int[Array, ""]
    tally: Tally
    status: Int[Array, ""]
    stop_after_eval: Bool[Array, ""]  # the stop was decided on a fresh evaluation at x
    tol: Float[Array, ""]
    fmin: Float[Array, ""]


def _finite(point: Evaluation) -> Bool[Array, ""]:
    return jnp.isfinite(point.f) & jnp.all(jnp.isfinite(point.g))


def _initialize(program: _Program, x0, state0, batch, consts, tolerances, memory) -> _Carry:
    program.core.traces.bump("solve_init")
    n_leaves = len(jax.tree_util.tree_leaves(state0))
    oracle = program.oracle(state0, batch, consts, Tally.zeros(n_leaves), memory)
    point, oracle = oracle.objgrad(x0)
    atol, rtol = tolerances
    dtype = x0.dtype
    gnorm = safe_norm(point.g)
    tol = (atol + rtol * gnorm).astype(dtype)
    eps = jnp.finfo(dtype).eps
    fmin = (jnp.minimum(-1.0, point.f) / eps).astype(dtype)
    solver_state = program.solver.init(point)
    zero = jnp.zeros((), jnp.int32)
    return _Carry(
        x=x0,
        state=state0,
        point=point,
        fresh=jnp.asarray(True),
        evaluated=jnp.asarray(True),
        prev_x=x0,
        prev_state=state0,
        prev_point=point,
        solver_state=solver_state,
        memory=memory,
        iter=zero,
        accepted=zero,
        tally=oracle.tally,
        status=jnp.where(jnp.any(oracle.tally.mutated), _MUTATION, CONTINUE).astype(jnp.int32),
        stop_after_eval=jnp.asarray(False),
        tol=tol,
        fmin=fmin,
    )


def _step(program: _Program, batch, consts, c: _Carry) -> _Carry:
    """One solver step from a fresh, finite evaluation at x_k."""
    solver = program.solver
    oracle = program.oracle(c.state, batch, consts, c.tally, c.memory)
    step, solver_state, oracle = solver.step(oracle, c.point, c.solver_state)
    tally = oracle.tally
    status = jnp.asarray(CONTINUE, jnp.int32)
    if program.one_step:
        if step.evaluation is not None:
            raise SolverTraitError(
                f"{type(solver).__name__} is registered one-step safe but its step returned an "
                "evaluation at the new point; one-step solvers make only the driver's evaluation at x_k"
            )
        # The only evaluation of the iteration is the one at x_k: its state is s_{k+1}.
        evaluated_inside = (tally.obj + tally.grad + tally.hprod) > (
            c.tally.obj + c.tally.grad + c.tally.hprod
        )
        status = jnp.where(evaluated_inside, _TRAIT_VIOLATION, status)
        x_next = step.x
        state_next = c.point.state
        point_next = c.point
        accepted = jnp.asarray(True)
        fresh = jnp.asarray(False)
        evaluated = jnp.asarray(False)
        memory = c.memory
    else:
        ev = step.evaluation
        if ev is None:
            raise SolverTraitError(
                f"{type(solver).__name__} is a multi-evaluation solver, so its step must return the "
                "Evaluation at its new iterate (the driver takes the next state from it)"
            )
        bad = step.accepted & ~_finite(ev)
        accepted = step.accepted & ~bad
        status = jnp.where(bad, Status.EXCEPTION.code, status)
        state_next = tree_select(accepted, ev.state, c.state)
        point_next = tree_select(accepted, ev, c.point)
        x_next = jnp.where(accepted, ev.x, c.x)
        unchanged = ~jnp.any(changed_mask(state_next, c.state))
        fresh = ~accepted | unchanged
        evaluated = jnp.asarray(True)
        memory = c.memory
        if program.hessian is not None:
            pushed = program.hessian.push(memory, ev.x - c.x, ev.g - c.point.g)
            memory = tree_select(accepted, pushed, memory)
    status = jnp.where(jnp.any(tally.mutated), _MUTATION, status).astype(jnp.int32)
    return _Carry(
        x=x_next,
        state=state_next,
        point=point_next,
        fresh=fresh,
        evaluated=evaluated,
        prev_x=c.x,
        prev_state=c.state,
        prev_point=c.point,
        solver_state=solver_state,
        memory=memory,
        iter=c.iter + 1,
        accepted=c.accepted + accepted.astype(jnp.int32),
        tally=tally,
        status=status,
        stop_after_eval=jnp.asarray(False),
        tol=c.tol,
        fmin=c.fmin,
    )


def _iteration(program: _Program, batch, consts, limits, c: _Carry) -> _Carry:
    """Limits, then a fresh evaluation at x_k, then the stopping tests, then a step."""
    max_iter, max_eval = limits
    limit = jnp.where(
        c.iter >= max_iter,
        Status.MAX_ITER.code,
        jnp.where(c.tally.obj >= max_eval, Status.MAX_EVAL.code, CONTINUE),
    ).astype(jnp.int32)

    def stop_on_limit(c: _Carry) -> _Carry:
        return dataclasses.replace(c, status=limit)

    def proceed(c: _Carry) -> _Carry:
        def reevaluate(c: _Carry) -> _Carry:
            oracle = program.oracle(c.state, batch, consts, c.tally, c.memory)
            point, oracle = oracle.objgrad(c.x)
            return dataclasses.replace(
                c,
                point=point,
                tally=oracle.tally,
                fresh=jnp.asarray(True),
                evaluated=jnp.asarray(True),
            )

        before = c
        c = jax.lax.cond(c.fresh, lambda c: c, reevaluate, c)
        finite = _finite(c.point)
        # A non-finite evaluation at x_k stops the solve at the last good point: x_k
        # itself when an earlier, finite evaluation was made there (under the previous
        # state or batch), else the previous iterate (one-step solvers).
        keep_x = before.evaluated & _finite(before.point)
        fallback = tree_select(
            keep_x,
            (before.x, before.state, before.point),
            (c.prev_x, c.prev_state, c.prev_point),
        )
        here = tree_select(finite, (c.x, c.state, c.point), fallback)
        c = dataclasses.replace(c, x=here[0], state=here[1], point=here[2])
        gnorm = safe_norm(c.point.g)
        solver_status = program.solver.terminate(c.solver_state)
        status = jnp.where(
            ~finite,
            Status.EXCEPTION.code,
            jnp.where(
                gnorm <= c.tol,
                Status.FIRST_ORDER.code,
                jnp.where(c.point.f < c.fmin, Status.UNBOUNDED.code, solver_status),
            ),
        )
        status = jnp.where(jnp.any(c.tally.mutated), _MUTATION, status).astype(jnp.int32)
        c = dataclasses.replace(c, status=status, stop_after_eval=finite & (status != CONTINUE))
        return jax.lax.cond(
            status == CONTINUE, lambda c: _step(program, batch, consts, c), lambda c: c, c
        )

    return jax.lax.cond(limit == CONTINUE, proceed, stop_on_limit, c)


def _run(program: _Program, carry: _Carry, batch, consts, n_steps, limits, batch_changed) -> _Carry:
    """Up to `n_steps` iterations on the device (stops early on any status)."""
    program.core.traces.bump("solve_run")
    carry = dataclasses.replace(carry, fresh=carry.fresh & ~batch_changed)
    start = carry.iter

    def cond(c: _Carry):
        return (c.status == CONTINUE) & (c.iter - start < n_steps)

    return jax.lax.while_loop(cond, lambda c: _iteration(program, batch, consts, limits, c), carry)


def _final_evaluation(program: _Program, x, state, batch, consts, memory):
    """f and ||g|| at the final iterate when the loop made no evaluation there."""
    program.core.traces.bump("solve_final")
    oracle = program.oracle(
        state, batch, consts, Tally.zeros(len(jax.tree_util.tree_leaves(state))), memory
    )
    point, _ = oracle.objgrad(x)
    return point.f, safe_norm(point.g)


_initialize_jit = jax.jit(_initialize, static_argnums=0)
_run_jit = jax.jit(_run, static_argnums=0)
_final_jit = jax.jit(_final_evaluation, static_argnums=0)


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
    """The verbose log table."""

    def __init__(self, every: int, policy: StatePolicy, solver_name: str):
        self.every = every
        self.policy = policy
        self.solver_name = solver_name
        self.header_done = False

    def row(self, info: dict[str, Any], elapsed: float) -> None:
        if not self.header_done:
            extra = "".join(f"{k:>10}" for k in info["diag"])
            print(
                f"statefulnlp: {self.solver_name} (state policy: {self.policy.value})\n"
                f"{'iter':>6} {'f(x)':>13} {'‖∇f‖':>10}{extra} {'time':>8}"
            )
            self.header_done = True
        diag = "".join(f"{float(v):>10.2e}" for v in info["diag"].values())
        print(
            f"{info['iter']:>6d} {info['f']:>13.6e} {info['gnorm']:>10.2e}{diag} {elapsed:>7.2f}s"
        )


def _scalars(program: _Program, carry: _Carry) -> dict[str, Any]:
    """The few numbers the host needs after a chunk, in one transfer."""
    diag = program.solver.diagnostics(carry.solver_state)
    fetched = jax.device_get(
        {
            "status": carry.status,
            "iter": carry.iter,
            "accepted": carry.accepted,
            "obj": carry.tally.obj,
            "grad": carry.tally.grad,
            "hprod": carry.tally.hprod,
            "f": carry.point.f,
            "gnorm": safe_norm(carry.point.g),
            "evaluated": carry.evaluated,
            "stop_after_eval": carry.stop_after_eval,
            "diag": diag,
        }
    )
    for key in ("status", "iter", "accepted", "obj", "grad", "hprod"):
        fetched[key] = int(fetched[key])
    fetched["f"] = float(fetched["f"])
    fetched["gnorm"] = float(fetched["gnorm"])
    return fetched


def solve(
    nlp: AbstractNLPModel,
    solver: str | AbstractSolver = "lbfgs",
    *,
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
        state_policy: `"propagate"`, `"freeze"` or `"reject"` (or a `StatePolicy`);
            None picks the solver's default (`propagate` for one-step solvers, `freeze`
            otherwise). `propagate` with a multi-evaluation solver raises
            `IncompatibleStatePolicyError` before any evaluation.
        callback: `callback(nlp, solver, stats)` after every iteration; it may call
            `nlp.next_batch()`; returning True stops with status `user`.
        atol, rtol: stop when ‖∇f(x)‖ ≤ atol + rtol·‖∇f(x0)‖ (defaults: sqrt(eps)).
        max_iter: iteration limit (over the whole run when resuming).
        max_eval: limit on objective evaluations (`nlp.counters.obj` during the solve).
        max_time: time limit in seconds.
        verbose: print a log line every `verbose` iterations (0: quiet).
        checkpoint: path of a checkpoint written at the end (and every
            `checkpoint_every` iterations, and on KeyboardInterrupt).
        resume: path of a checkpoint to continue from exactly.

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
    if not isinstance(nlp, AbstractNLPModel):
        raise InvalidTypeError(
            f"nlp: expected a statefulnlp problem (e.g. StatefulNLPModel), got {type(nlp).__name__}"
        )
    solver = _make_solver(solver)
    try:
        hash(solver)
    except TypeError:
        raise InvalidTypeError(
            f"solver: {type(solver).__name__} has unhashable fields; solver settings must be "
            "plain Python values (numbers, strings, tuples), not arrays"
        ) from None
    solver_traits = _traits.of(solver)
    policy = _traits.resolve_policy(solver_traits, state_policy)
    hessian = getattr(nlp, "_hessian", None)
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
    program = _Program(nlp._core, solver, policy, solver_traits.one_step_safe, hessian)
    return _Solve(nlp, program, solver_traits, opts).run()


class _Solve:
    """One call of `solve` on the host."""

    def __init__(self, nlp: AbstractNLPModel, program: _Program, traits: Any, opts: _Options):
        self.nlp = nlp
        self.program = program
        self.traits = traits
        self.opts = opts
        self.counted = {"obj": 0, "grad": 0, "hprod": 0}
        self.previous_elapsed = 0.0

    # -- counters -----------------------------------------------------------------
    def _sync_counters(self, info: dict[str, Any]) -> None:
        for key in ("obj", "grad", "hprod"):
            delta = info[key] - self.counted[key]
            if delta:
                setattr(self.nlp.counters, key, getattr(self.nlp.counters, key) + delta)
            self.counted[key] = info[key]

    # -- start ---------------------------------------------------------------------
    def _start(self) -> _Carry:
        nlp, program, opts = self.nlp, self.program, self.opts
        dtype = nlp.dtype
        memory = getattr(nlp, "memory", None) if program.hessian is not None else None
        tolerances = (jnp.asarray(opts.atol, dtype), jnp.asarray(opts.rtol, dtype))
        args = (nlp.x0, nlp.state0, nlp._stream.current(), nlp._consts, tolerances, memory)
        if opts.resume is not None:
            from .._checkpoint import load_checkpoint

            template = jax.eval_shape(lambda *a: _initialize(program, *a), *args)
            carry, meta = load_checkpoint(opts.resume, template, self._identity())
            mesh = getattr(nlp, "mesh", None)
            if mesh is not None:
                from .._sharding import replicate

                carry = replicate(carry, mesh)
            self.previous_elapsed = float(meta.get("elapsed_time", 0.0))
            position = meta.get("data_position")
            if position:
                nlp._stream.restore(position)
            self.counted = {k: int(meta["counters"][k]) for k in ("obj", "grad", "hprod")}
            # Continue exactly as the interrupted run would have: same pending batch
            # change, and the stop it recorded (a limit, say) is lifted.
            self.resume_batch_changed = bool(meta.get("batch_changed", False))
            return dataclasses.replace(
                carry,
                status=jnp.asarray(CONTINUE, jnp.int32),
                stop_after_eval=jnp.asarray(False),
            )
        self.resume_batch_changed = False
        carry = _initialize_jit(program, *args)
        info = _scalars(program, carry)
        self._sync_counters(info)
        if not math.isfinite(info["f"]):
            raise NonFiniteError(
                f"the objective at x0 is not finite (f = {info['f']}); check x0, the state and fn"
            )
        if not math.isfinite(info["gnorm"]):
            raise NonFiniteError(
                "the gradient at x0 contains NaN or infinite values; check x0 and fn"
            )
        self._raise_internal(info, carry)
        return carry

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this solve."""
        nlp = self.nlp
        return {
            "nvar": nlp.nvar,
            "dtype": str(nlp.dtype),
            "solver": self.traits.name,
            "solver_repr": repr(self.program.solver),
            "state_policy": self.program.policy.value,
            "data_kind": nlp._stream.kind,
        }

    # -- errors found on the device -----------------------------------------------------
    def _raise_internal(self, info: dict[str, Any], carry: _Carry) -> None:
        status = info["status"]
        if status == _MUTATION:
            mask = np.asarray(jax.device_get(carry.tally.mutated))
            paths = self.program.core.state_sig.paths
            changed = tuple(p or "<root>" for p, m in zip(paths, mask) if m)
            raise StateMutationError(
                f"state_policy='reject': the objective changed its state (leaves {', '.join(changed)}) "
                f"during iteration {info['iter']}. Use state_policy='freeze' for objectives with "
                "state (BatchNorm statistics, PRNG keys), or make the objective pure.",
                leaves=changed,
                iteration=info["iter"],
            )
        if status == _TRAIT_VIOLATION:
            raise SolverTraitError(
                f"solver {self.traits.name!r} is registered one-step safe but evaluated the objective "
                f"more than once in iteration {info['iter']}; register it with one_step_safe=False"
            )

    # -- chunk sizes ---------------------------------------------------------------------
    def _chunk(self, iter_now: int, per_iter: float | None, elapsed: float) -> int:
        opts = self.opts
        if opts.callback is not None:
            return 1
        remaining = max(opts.max_iter - iter_now, 0) + 1  # +1: the final stopping test
        n = remaining
        if opts.verbose:
            n = min(n, opts.verbose - iter_now % opts.verbose or opts.verbose)
        if opts.checkpoint_every:
            n = min(
                n, opts.checkpoint_every - iter_now % opts.checkpoint_every or opts.checkpoint_every
            )
        if opts.max_time is not None:
            left = opts.max_time - elapsed
            target = min(0.25, max(left, 0.0) / 2)
            guess = 1 if per_iter is None else max(1, int(target / max(per_iter, 1e-7)))
            n = min(n, guess)
        return max(n, 1)

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> Stats:
        nlp, program, opts = self.nlp, self.program, self.opts
        t0 = time.perf_counter()
        carry = self._start()
        limits = (
            jnp.asarray(min(opts.max_iter, _INT_MAX), jnp.int32),
            jnp.asarray(
                _INT_MAX if opts.max_eval is None else min(opts.max_eval, _INT_MAX), jnp.int32
            ),
        )
        log = _Log(opts.verbose, program.policy, self.traits.name) if opts.verbose else None
        version = nlp._batch_version
        batch_changed = self.resume_batch_changed
        host_status: Status | None = None
        per_iter: float | None = None
        info = _scalars(program, carry)
        if log is not None and info["iter"] == 0:
            log.row(info, 0.0)
        try:
            while True:
                elapsed = time.perf_counter() - t0
                n = self._chunk(info["iter"], per_iter, elapsed)
                tc = time.perf_counter()
                new = _run_jit(
                    program,
                    carry,
                    nlp._stream.current(),
                    nlp._consts,
                    jnp.asarray(n, jnp.int32),
                    limits,
                    jnp.asarray(batch_changed),
                )
                new_info = _scalars(program, new)
                steps = new_info["iter"] - info["iter"]
                if steps > 0:
                    per_iter = (time.perf_counter() - tc) / steps
                carry, info = new, new_info
                batch_changed = False
                self._sync_counters(info)
                self._raise_internal(info, carry)
                elapsed = time.perf_counter() - t0
                if (
                    log is not None
                    and steps > 0
                    and (info["iter"] % opts.verbose == 0 or info["status"] != CONTINUE)
                ):
                    log.row(info, elapsed + self.previous_elapsed)
                if info["status"] != CONTINUE:
                    break
                if opts.callback is not None and steps > 0:
                    snapshot = self._stats(carry, info, Status.UNKNOWN, elapsed, final=False)
                    if opts.callback(nlp, program.solver, snapshot) is True:
                        host_status = Status.USER
                    if nlp._batch_version != version:
                        version = nlp._batch_version
                        batch_changed = True
                if (
                    host_status is None
                    and opts.max_time is not None
                    and (time.perf_counter() - t0 + self.previous_elapsed >= opts.max_time)
                ):
                    host_status = Status.MAX_TIME
                if (
                    opts.checkpoint_every
                    and info["iter"] % opts.checkpoint_every == 0
                    and steps > 0
                ):
                    self._save(carry, info, time.perf_counter() - t0, batch_changed)
                if host_status is not None:
                    break
        except KeyboardInterrupt:
            if opts.checkpoint is not None:
                pending = batch_changed or nlp._batch_version != version
                self._save(carry, info, time.perf_counter() - t0, pending)
            raise
        status = host_status or Status.from_code(info["status"])
        elapsed = time.perf_counter() - t0
        stats = self._stats(carry, info, status, elapsed, final=True)
        if opts.checkpoint is not None:
            self._save(carry, info, elapsed, batch_changed)
        if program.hessian is not None:
            nlp.memory = carry.memory  # type: ignore[attr-defined]
        return stats

    def _save(
        self, carry: _Carry, info: dict[str, Any], elapsed: float, batch_changed: bool
    ) -> None:
        from .._checkpoint import save_checkpoint

        meta = dict(self._identity())
        meta.update(
            iter=info["iter"],
            counters={k: info[k] for k in ("obj", "grad", "hprod")},
            elapsed_time=elapsed + self.previous_elapsed,
            data_position=self.nlp._stream.position(),
            batch_changed=bool(batch_changed),
            exact_resume=self.nlp._stream.exact_resume,
        )
        assert self.opts.checkpoint is not None
        save_checkpoint(self.opts.checkpoint, carry, meta)

    def _stats(
        self, carry: _Carry, info: dict[str, Any], status: Status, elapsed: float, *, final: bool
    ) -> Stats:
        program = self.program
        objective, dual = info["f"], info["gnorm"]
        if final and not info["evaluated"]:
            # One-step solvers stopped by a limit: one extra counted evaluation at the
            # final iterate; its new state is discarded.
            f, gnorm = _final_jit(
                program,
                carry.x,
                carry.state,
                self.nlp._stream.current(),
                self.nlp._consts,
                carry.memory,
            )
            objective, dual = float(f), float(gnorm)
            self.nlp.counters.obj += 1
            self.nlp.counters.grad += 1
            self.counted["obj"] += 1
            self.counted["grad"] += 1
            info = dict(info, obj=info["obj"] + 1, grad=info["grad"] + 1)
        if program.policy is StatePolicy.PROPAGATE and info["stop_after_eval"]:
            state = carry.point.state
        else:
            state = carry.state
        return Stats(
            status=status,
            message=status.message,
            solution=carry.x,
            state=state,
            objective=objective,
            dual_feas=dual,
            iter=info["iter"],
            elapsed_time=elapsed + self.previous_elapsed,
            state_policy=program.policy,
            solver=self.traits.name,
            counters={k: info[k] for k in ("obj", "grad", "hprod")},
            accepted=info["accepted"],
            solver_state=carry.solver_state,
        )
