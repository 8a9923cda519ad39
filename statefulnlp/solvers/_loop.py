"""The device side of the solver loop: one pure iteration over a typed carry.

The state policy is applied here and nowhere else:

* the solver sees the iteration's frozen function through an `Oracle` built
  from (s_k, B_k);
* s_{k+1} is the state of the accepted point's evaluation (multi-evaluation
  solvers), the state of the single evaluation at x_k (one-step solvers), or
  s_k when the step is rejected;
* f and ∇f at x_{k+1} are re-evaluated under (s_{k+1}, B_{k+1}) at the start of
  the next iteration only if the state or the batch changed;
* under `reject` every evaluation's new state is compared with its input.

`run` executes up to `n_steps` iterations in one `lax.while_loop` and returns
the carry with a small vector of scalars for the host (one transfer per chunk).
The very first iteration evaluates x0 and initializes the solver, so a solve
compiles a single loop program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._errors import SolverTraitError
from .._evaluate import Evaluation, Oracle, Tally
from .._problem import Objective
from .._stats import Status
from .._tree import PyTree, changed_mask, safe_norm, tree_select
from ..traits import StatePolicy
from ._base import CONTINUE, AbstractSolver

# Internal stop codes (negative: never a user-visible Status).
MUTATION = -1
TRAIT_VIOLATION = -2
NONFINITE_START = -3
INT_MAX = int(np.iinfo(np.int32).max)

#: Layout of the integer and float info vectors returned by `run`.
INT_FIELDS = (
    "status",
    "iter",
    "accepted",
    "obj",
    "grad",
    "hprod",
    "evaluated",
    "stop_after_eval",
    "fresh",
    "initialized",
)
FLOAT_FIELDS = ("f", "gnorm")


# Inputs and Control are NamedTuples (not Modules): they are built at every device
# call, and jax flattens tuples without calling back into Python.
class Inputs(NamedTuple):
    """What the objective reads besides x and the state: the batch and the constants."""

    batch: PyTree
    consts: PyTree


class Control(NamedTuple):
    """The host's instructions for one device call."""

    n_steps: Int[ArrayLike, ""]  # iterations this call may make
    max_iter: Int[ArrayLike, ""]
    max_eval: Int[ArrayLike, ""]
    batch_changed: Bool[ArrayLike, ""]  # the batch changed since the last call


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything static about a solve: hashed, so equal programs share compiled code.

    Never traced: it is bound into the jitted functions of `Compiled`.
    """

    core: Objective
    solver: AbstractSolver
    policy: StatePolicy
    one_step: bool
    hessian: Any

    def oracle(self, c: Carry, inputs: Inputs, toplevel: bool = False) -> Oracle:
        """The frozen function f_k of the carry's iteration: state s_k, batch B_k."""
        return Oracle(
            core=self.core,
            state=c.state,
            batch=inputs.batch,
            consts=inputs.consts,
            hessian=self.hessian,
            memory=c.memory,
            check_mutation=self.policy is StatePolicy.REJECT,
            tally=c.tally,
            toplevel=toplevel,
        )

    # The carry keeps the state returned with `point` only for one-step solvers (it
    # is their s_{k+1}); multi-evaluation solvers take the next state from their own
    # evaluation, so the carried point drops it (fewer leaves to move per call).
    def store(self, point: Evaluation) -> Evaluation:
        """`point` as kept in the carry."""
        return point if self.one_step else dataclasses.replace(point, state=None)

    def full(self, point: Evaluation, state: PyTree) -> Evaluation:
        """A carried point with a state again (`state` stands in when it was dropped)."""
        return point if self.one_step else dataclasses.replace(point, state=state)


class Carry(eqx.Module):
    """The loop state. Saved whole in checkpoints."""

    x: Float[Array, " n"]
    state: PyTree  # s_k
    point: Evaluation  # evaluation at x (when `evaluated`), under (s_k, B_k) when `fresh`
    fresh: Bool[Array, ""]
    evaluated: Bool[Array, ""]
    initialized: Bool[Array, ""]  # x0 evaluated and the solver initialized
    # The iterate before the last step, for the NaN fallback of one-step solvers (whose
    # new iterate has no evaluation yet); None for multi-evaluation solvers.
    prev_x: Float[Array, " n"] | None
    prev_state: PyTree
    prev_point: Evaluation | None
    solver_state: PyTree
    memory: PyTree  # quasi-Newton pairs of LBFGSModel/LSR1Model problems, else None
    iter: Int[Array, ""]
    accepted: Int[Array, ""]
    tally: Tally
    status: Int[Array, ""]
    stop_after_eval: Bool[Array, ""]  # the stop was decided on a fresh evaluation at x
    atol: Float[Array, ""]
    rtol: Float[Array, ""]
    tol: Float[Array, ""]  # atol + rtol·‖g0‖
    fmin: Float[Array, ""]  # below this f the problem is declared unbounded


def _stateless(point: Evaluation) -> Evaluation:
    return dataclasses.replace(point, state=None)


def _finite(point: Evaluation) -> Bool[Array, ""]:
    return jnp.isfinite(point.f) & jnp.all(jnp.isfinite(point.g))


def initial_carry(program: Program, x0, state0, tolerances, memory) -> Carry:
    """The carry before any evaluation: the first iteration evaluates x0."""
    dtype = x0.dtype
    zero_f = jnp.zeros((), dtype)
    placeholder = Evaluation(x0, zero_f, jnp.zeros_like(x0), state0)
    zero = jnp.zeros((), jnp.int32)
    no = jnp.asarray(False)
    atol, rtol = tolerances
    one_step = program.one_step
    return Carry(
        x=x0,
        state=state0,
        point=program.store(placeholder),
        fresh=no,
        evaluated=no,
        initialized=no,
        prev_x=x0 if one_step else None,
        prev_state=state0 if one_step else None,
        prev_point=_stateless(placeholder) if one_step else None,
        solver_state=program.solver.init(placeholder),  # its structure; set after x0's evaluation
        memory=memory,
        iter=zero,
        accepted=zero,
        tally=Tally.zeros(len(jax.tree_util.tree_leaves(state0))),
        status=jnp.asarray(CONTINUE, jnp.int32),
        stop_after_eval=no,
        atol=jnp.asarray(atol, dtype),
        rtol=jnp.asarray(rtol, dtype),
        tol=zero_f,
        fmin=zero_f,
    )


def _start(program: Program, c: Carry) -> Carry:
    """After the first evaluation: the stopping threshold and the solver's memory."""
    dtype = c.x.dtype
    eps = jnp.finfo(dtype).eps
    c = dataclasses.replace(
        c,
        tol=(c.atol + c.rtol * safe_norm(c.point.g)).astype(dtype),
        fmin=(jnp.minimum(-1.0, c.point.f) / eps).astype(dtype),
        solver_state=program.solver.init(program.full(c.point, c.state)),
        initialized=jnp.asarray(True),
    )
    if program.one_step:
        c = dataclasses.replace(c, prev_x=c.x, prev_state=c.state, prev_point=_stateless(c.point))
    return c


def _step(program: Program, inputs: Inputs, c: Carry, toplevel: bool = False) -> Carry:
    """One solver step from a fresh, finite evaluation at x_k."""
    solver = program.solver
    oracle = program.oracle(c, inputs, toplevel)
    point = program.full(c.point, c.state)
    step, solver_state, oracle = solver.step(oracle, point, c.solver_state)
    tally = oracle.tally
    status = jnp.asarray(CONTINUE, jnp.int32)
    memory = c.memory
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
        status = jnp.where(evaluated_inside, TRAIT_VIOLATION, status)
        x_next, state_next, point_next = step.x, c.point.state, c.point
        accepted = jnp.asarray(True)
        fresh = evaluated = jnp.asarray(False)
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
        point_next = program.store(tree_select(accepted, ev, point))
        x_next = point_next.x
        fresh = ~accepted | ~jnp.any(changed_mask(state_next, c.state))
        evaluated = jnp.asarray(True)
        if program.hessian is not None:
            pushed = program.hessian.push(memory, ev.x - c.x, ev.g - c.point.g)
            memory = tree_select(accepted, pushed, memory)
    status = jnp.where(jnp.any(tally.mutated), MUTATION, status).astype(jnp.int32)
    return dataclasses.replace(
        c,
        x=x_next,
        state=state_next,
        point=point_next,
        fresh=fresh,
        evaluated=evaluated,
        prev_x=c.x if program.one_step else None,
        prev_state=c.state if program.one_step else None,
        prev_point=_stateless(c.point) if program.one_step else None,
        solver_state=solver_state,
        memory=memory,
        iter=c.iter + 1,
        accepted=c.accepted + accepted.astype(jnp.int32),
        tally=tally,
        status=status,
    )


def _reevaluate(program: Program, inputs: Inputs, c: Carry, toplevel: bool = False) -> Carry:
    """`point` := a fresh evaluation at x under (s_k, B_k) (counted, state checked)."""
    oracle = program.oracle(c, inputs, toplevel)
    point, oracle = oracle.objgrad(c.x)
    yes = jnp.asarray(True)
    return dataclasses.replace(
        c, point=program.store(point), tally=oracle.tally, fresh=yes, evaluated=yes
    )


def _settle(program: Program, before: Carry, c: Carry, max_iter) -> tuple[Carry, Bool[Array, ""]]:
    """After the evaluation at x_k: initialize on the first one, fall back on NaN, decide.

    `before` is the carry before the evaluation. Returns the carry with its status
    set and whether the loop may step.
    """
    first = ~c.initialized
    # solver.init evaluates nothing, so a branch costs nothing here (XLA's slow
    # nested computations only matter for the objective's convolutions).
    c = jax.lax.cond(c.initialized, lambda c: c, lambda c: _start(program, c), c)
    finite = _finite(c.point)
    # A non-finite evaluation at x_k stops the solve at the last good point: x_k itself
    # when an earlier, finite evaluation was made there (under the previous state or
    # batch), else the previous iterate (one-step solvers).
    fallback = (before.x, before.state, before.point)
    if program.one_step:
        assert c.prev_point is not None  # kept for one-step solvers
        keep_x = before.evaluated & _finite(before.point)
        # The state returned with the previous point is not kept; the revert makes the
        # status `exception`, whose final state is `state` (s_k), so s_k stands in.
        prev_point = dataclasses.replace(c.prev_point, state=c.prev_state)
        fallback = tree_select(keep_x, fallback, (c.prev_x, c.prev_state, prev_point))
    # At x0 there is nothing to fall back to: the solve raises, showing what was found.
    here = tree_select(finite | first, (c.x, c.state, c.point), fallback)
    c = dataclasses.replace(c, x=here[0], state=here[1], point=here[2])
    solver_status = program.solver.terminate(c.solver_state)
    status = jnp.where(
        ~finite,
        jnp.where(first, NONFINITE_START, Status.EXCEPTION.code),
        jnp.where(
            safe_norm(c.point.g) <= c.tol,
            Status.FIRST_ORDER.code,
            jnp.where(
                c.point.f < c.fmin,
                Status.UNBOUNDED.code,
                jnp.where(c.iter >= max_iter, Status.MAX_ITER.code, solver_status),
            ),
        ),
    )
    status = jnp.where(jnp.any(c.tally.mutated), MUTATION, status).astype(jnp.int32)
    c = dataclasses.replace(c, status=status, stop_after_eval=finite & (status != CONTINUE))
    return c, status == CONTINUE


def _iteration(program: Program, inputs: Inputs, control: Control, start, c: Carry) -> Carry:
    """Limits, a fresh evaluation at x_k, the stopping tests, then (maybe) a step."""
    limit = jnp.where(
        c.iter >= control.max_iter,
        Status.MAX_ITER.code,
        jnp.where(c.tally.obj >= control.max_eval, Status.MAX_EVAL.code, CONTINUE),
    ).astype(jnp.int32)
    # The first iteration always evaluates x0 (max_iter=0 still reports f(x0)).
    limit = jnp.where(c.initialized, limit, CONTINUE)

    def proceed(c: Carry) -> Carry:
        before = c
        c = jax.lax.cond(c.fresh, lambda c: c, lambda c: _reevaluate(program, inputs, c), c)
        c, go = _settle(program, before, c, control.max_iter)
        go = go & (c.iter - start < control.n_steps)
        return jax.lax.cond(go, lambda c: _step(program, inputs, c), lambda c: c, c)

    return jax.lax.cond(
        limit == CONTINUE, proceed, lambda c: dataclasses.replace(c, status=limit), c
    )


def iterate_once(program: Program, mode: tuple[bool, bool], carry: Carry, inputs: Inputs, max_iter):
    """One iteration as a straight-line, top-level program (the callback path).

    The host checks the limits before calling and decides (statically) whether x_k
    needs a fresh evaluation, and whether to step at all (`mode = (reeval, step)`;
    `step=False` only
    evaluates, for the first row of a log). No branch or loop wraps the evaluation
    at x_k nor the step: the step is always computed and selected, and solvers make
    their first evaluation outside their own loops (`Oracle.toplevel`). Same
    semantics as one pass of the `while_loop` body.
    """
    program.core.traces.bump("solve_once")
    reeval, step = mode
    c = _reevaluate(program, inputs, carry, toplevel=True) if reeval else carry
    c, go = _settle(program, carry, c, max_iter)
    if step:
        stepped = _step(program, inputs, c, toplevel=True)
        c = tree_select(go, stepped, c)
    return c, info(program, c)


def info(program: Program, c: Carry) -> tuple[Int[Array, " k"], Float[Array, " m"]]:
    """The scalars the host reads after a chunk, as one int and one float vector."""
    ints = jnp.stack(
        [
            c.status,
            c.iter,
            c.accepted,
            c.tally.obj,
            c.tally.grad,
            c.tally.hprod,
            c.evaluated.astype(jnp.int32),
            c.stop_after_eval.astype(jnp.int32),
            c.fresh.astype(jnp.int32),
            c.initialized.astype(jnp.int32),
        ]
    )
    diag = program.solver.diagnostics(c.solver_state)
    # The log's columns are the diagnostics' names in sorted order (`log_columns`).
    floats = [c.point.f, safe_norm(c.point.g), *(diag[k] for k in sorted(diag))]
    return ints, jnp.stack([jnp.asarray(v, c.x.dtype) for v in floats])


def run(program: Program, carry: Carry, inputs: Inputs, control: Control):
    """Up to `control.n_steps` iterations in one `lax.while_loop` (stops early on any status)."""
    program.core.traces.bump("solve_run")
    carry = dataclasses.replace(carry, fresh=carry.fresh & ~jnp.asarray(control.batch_changed))
    start = carry.iter

    def cond(c: Carry):
        return (c.status == CONTINUE) & ((c.iter - start < control.n_steps) | ~c.initialized)

    def body(c: Carry):
        return _iteration(program, inputs, control, start, c)

    carry = jax.lax.while_loop(cond, body, carry)
    return carry, info(program, carry)


def start(program: Program, initial: tuple, inputs: Inputs, control: Control):
    """`run` from the carry `initial_carry(program, *initial)`, in one device call.

    Used when a solve is a single chunk: no separate call builds the first carry
    and the loop's buffers are created on the device rather than copied in.
    """
    return run(program, initial_carry(program, *initial), inputs, control)


def final_evaluation(program: Program, carry: Carry, inputs: Inputs):
    """f and ||g|| at the final iterate when the loop made no evaluation there."""
    program.core.traces.bump("solve_final")
    point, _ = program.oracle(carry, inputs).objgrad(carry.x)
    return point.f, safe_norm(point.g)


class Compiled:
    """The jitted functions of one program.

    Built once per solve; equal programs (same problem core, solver settings and
    policy) share one `Compiled`, so their loop compiles once. Binding the program
    here also spares hashing it as a static argument at every chunk.
    """

    def __init__(self, program: Program):
        self.initial = jax.jit(functools.partial(initial_carry, program))
        self.run = jax.jit(functools.partial(run, program))
        self.start = jax.jit(functools.partial(start, program))
        self.final = jax.jit(functools.partial(final_evaluation, program))
        # One straight-line iteration, keyed by (evaluate x_k first, step).
        self.once = {
            (reeval, step): jax.jit(functools.partial(iterate_once, program, (reeval, step)))
            for reeval in (True, False)
            for step in (True, False)
        }


@functools.lru_cache(maxsize=128)
def compiled(program: Program) -> Compiled:
    """The (cached) `Compiled` of `program`."""
    return Compiled(program)
