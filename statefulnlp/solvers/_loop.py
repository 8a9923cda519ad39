"""The device side of the solver loop: one iteration body over a typed carry.

A solve is a first stage and then iterations:

* `first`: evaluate x0, initialize the solver, compute the stopping threshold,
  and test (a solve may stop at x0).
* one iteration = `settle` (evaluate x_k again when the carried evaluation is not
  fresh, then the stopping tests) followed, when nothing stops, by `advance`
  (the solver's step, s_{k+1} and the quasi-Newton update, as `StateRule` says).

The same two functions make both drivers: `run` composes them in a
`lax.while_loop` (chunks of iterations without a host round trip); the
callback path calls them as straight-line top-level programs, `settle` only
when x_k must be evaluated again and `advance` only when the tests said go on,
so no step is computed that is not used and every evaluation is counted. (XLA on
CPU runs convolutions inside loops and branches far slower than at the top
level, so the callback path keeps evaluations out of both.)

The state policy is not decided here: `StateRule` (`statefulnlp._evaluate`)
builds the frozen oracle's rules, picks s_{k+1}, the carried evaluation and the
final state, and turns a `reject` violation into a fault.
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
from .._evaluate import Evaluation, Fault, Known, Oracle, StateRule, Tally
from .._problem import Objective
from .._stats import Status
from .._tree import PyTree, tree_select
from ._base import CONTINUE, AbstractSolver

INT_MAX = int(np.iinfo(np.int32).max)

#: Layout of the integer and float info vectors the host reads after a device call.
INT_FIELDS = ("status", "fault", "iter", "accepted", "obj", "grad", "hprod", "known")
FLOAT_FIELDS = ("f", "gnorm")


# Inputs and Limits are NamedTuples (not Modules): they are built at every device
# call, and jax flattens tuples without calling back into Python.
class Inputs(NamedTuple):
    """What the objective reads besides x and the state: the batch and the constants."""

    batch: PyTree
    consts: PyTree


class Limits(NamedTuple):
    """The host's instructions for one device call."""

    n_steps: Int[ArrayLike, ""]  # iterations this call may make
    max_iter: Int[ArrayLike, ""]
    max_eval: Int[ArrayLike, ""]


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything static about a solve: hashed, so equal programs share compiled code."""

    objective: Objective
    solver: AbstractSolver
    rule: StateRule
    hessian: Any  # the problem's quasi-Newton operator, or None for exact HVPs


class Carry(eqx.Module):
    """The loop state between iterations. Saved whole in checkpoints.

    Every field is read by the next iteration, the host, or a resume.
    """

    x: Float[Array, " n"]  # x_k
    state: PyTree  # s_k
    point: Evaluation  # the evaluation at x_k, as `known` says (state kept for one-step solvers)
    known: Int[Array, ""]  # a `Known`: is `point` at x_k under (s_k, B_k), stale, or absent
    # One-step solvers only (else None): the last iterate whose evaluation was finite,
    # with the state it started from, to return when the next evaluation is not finite.
    last_good: Evaluation | None
    solver_state: PyTree
    memory: PyTree  # the quasi-Newton pairs of LBFGSModel/LSR1Model problems, else None
    iter: Int[Array, ""]
    accepted: Int[Array, ""]  # accepted steps so far
    tally: Tally  # evaluations so far, and the reject check's changed leaves
    status: Int[Array, ""]  # a user-visible `Status` code (`CONTINUE` while running)
    fault: Int[Array, ""]  # a `Fault`: an internal failure the host turns into an error
    tol: Float[Array, ""]  # the stopping threshold atol + rtol·‖∇f(x0)‖
    fmin: Float[Array, ""]  # below this f the problem is declared unbounded


def _finite(point: Evaluation) -> Bool[Array, ""]:
    return jnp.isfinite(point.f) & jnp.all(jnp.isfinite(point.g))


def _oracle(
    program: Program, state: PyTree, memory: PyTree, tally: Tally, inputs: Inputs
) -> Oracle:
    """The frozen function of one iteration: `state` and the batch of `inputs`."""
    return Oracle(
        core=program.objective,
        state=state,
        batch=inputs.batch,
        consts=inputs.consts,
        hessian=program.hessian,
        memory=memory,
        check_mutation=program.rule.check_mutation,
        tally=tally,
    )


def _stateless(point: Evaluation) -> Evaluation:
    return dataclasses.replace(point, state=None)


def first(program: Program, start: tuple, inputs: Inputs, limits: Limits) -> Carry:
    """The first stage: evaluate x0, initialize the solver, then the stopping tests.

    `start` is `(x0, state0, (atol, rtol), memory)`.
    """
    x0, state0, (atol, rtol), memory = start
    rule = program.rule
    dtype = x0.dtype
    n_leaves = len(jax.tree_util.tree_leaves(state0))
    oracle = _oracle(program, state0, memory, Tally.zeros(n_leaves), inputs)
    point, oracle = oracle.objgrad(x0)
    eps = jnp.finfo(dtype).eps
    finite = _finite(point)
    zero = jnp.zeros((), jnp.int32)
    c = Carry(
        x=x0,
        state=state0,
        point=rule.carried(point),
        known=jnp.asarray(Known.FRESH, jnp.int32),
        last_good=dataclasses.replace(point, state=state0) if rule.one_step else None,
        solver_state=program.solver.init(point),
        memory=memory,
        iter=zero,
        accepted=zero,
        tally=oracle.tally,
        status=jnp.asarray(CONTINUE, jnp.int32),
        fault=jnp.where(finite, Fault.NONE, Fault.NONFINITE_START).astype(jnp.int32),
        tol=(
            jnp.asarray(atol, dtype) + jnp.asarray(rtol, dtype) * program.solver.stationarity(point)
        ).astype(dtype),
        fmin=(jnp.minimum(-1.0, point.f) / eps).astype(dtype),
    )
    return _test(program, c, limits)


def _test(program: Program, c: Carry, limits: Limits) -> Carry:
    """The stopping tests at x_k (on a fresh evaluation), the limits, the faults."""
    gnorm = program.solver.stationarity(c.point)
    fresh = c.known == Known.FRESH
    status = jnp.where(
        c.iter >= limits.max_iter,
        Status.MAX_ITER.code,
        jnp.where(c.tally.obj >= limits.max_eval, Status.MAX_EVAL.code, CONTINUE),
    )
    status = jnp.where(fresh & (c.point.f < c.fmin), Status.UNBOUNDED.code, status)
    status = jnp.where(fresh & (gnorm <= c.tol), Status.FIRST_ORDER.code, status)
    solver_status = program.solver.terminate(c.solver_state)
    status = jnp.where(status == CONTINUE, solver_status, status)
    status = jnp.where(c.status == CONTINUE, status, c.status).astype(jnp.int32)
    return dataclasses.replace(c, status=status, fault=program.rule.fault(c.tally, c.fault))


def settle(program: Program, c: Carry, inputs: Inputs, limits: Limits) -> Carry:
    """Evaluate x_k again under (s_k, B_k) (counted), fall back on NaN, then test.

    A non-finite evaluation stops the solve at the last good point: x_k itself
    when its earlier evaluation (under the previous state or batch) was finite,
    else the previous iterate (one-step solvers, whose x_k was never evaluated).
    """
    rule = program.rule
    point, oracle = _oracle(program, c.state, c.memory, c.tally, inputs).objgrad(c.x)
    finite = _finite(point)
    here = (c.x, c.state, rule.carried(point))
    fallback = (c.x, c.state, c.point)
    if c.last_good is not None:
        keep_x = (c.known != Known.NONE) & _finite(c.point)
        good = c.last_good  # its `state` is the state x_{k-1} started from
        previous = (good.x, good.state, good)
        fallback = tree_select(keep_x, fallback, previous)
    x, state, carried = tree_select(finite, here, fallback)
    evaluated = dataclasses.replace(
        c,
        x=x,
        state=state,
        point=carried,
        known=jnp.asarray(Known.FRESH, jnp.int32),
        tally=oracle.tally,
        status=jnp.where(finite, c.status, Status.EXCEPTION.code).astype(jnp.int32),
    )
    return _test(program, evaluated, limits)


def advance(program: Program, c: Carry, inputs: Inputs) -> Carry:
    """One solver step from the fresh, finite evaluation at x_k."""
    rule = program.rule
    solver = program.solver
    oracle = _oracle(program, c.state, c.memory, c.tally, inputs)
    point = rule.full(c.point, c.state)
    step, solver_state, oracle = solver.step(oracle, point, c.solver_state)
    if rule.one_step and step.evaluation is not None:
        raise SolverTraitError(
            f"{type(solver).__name__} is registered one-step safe but its step returned an "
            "evaluation at the new point; one-step solvers make only the driver's evaluation at x_k"
        )
    if not rule.one_step and step.evaluation is None:
        raise SolverTraitError(
            f"{type(solver).__name__} is a multi-evaluation solver, so its step must return the "
            "Evaluation at its new iterate (the driver takes the next state from it)"
        )
    before, after = c.tally, oracle.tally
    evaluated = (after.obj + after.grad + after.hprod) > (before.obj + before.grad + before.hprod)
    move = rule.advance(c.state, point, step, evaluated)
    memory = c.memory
    if program.hessian is not None and step.evaluation is not None:
        pushed = program.hessian.push(memory, step.evaluation.x - c.x, step.evaluation.g - point.g)
        memory = tree_select(move.accepted, pushed, memory)
    last_good = None
    if c.last_good is not None:
        last_good = dataclasses.replace(_stateless(c.point), state=c.state)
    return dataclasses.replace(
        c,
        x=move.x,
        state=move.state,
        point=move.point,
        known=move.known.astype(jnp.int32),
        last_good=last_good,
        solver_state=solver_state,
        memory=memory,
        iter=c.iter + 1,
        accepted=c.accepted + move.accepted.astype(jnp.int32),
        tally=oracle.tally,
        status=jnp.where(move.nonfinite, Status.EXCEPTION.code, c.status).astype(jnp.int32),
        fault=rule.fault(oracle.tally, jnp.maximum(c.fault, move.fault)),
    )


def _at_limit(c: Carry, limits: Limits) -> Bool[Array, ""]:
    return (c.iter >= limits.max_iter) | (c.tally.obj >= limits.max_eval)


def _going(c: Carry) -> Bool[Array, ""]:
    return (c.status == CONTINUE) & (c.fault == Fault.NONE)


def _settle_or_test(program: Program, c: Carry, inputs: Inputs, limits: Limits) -> Carry:
    """The tests at x_k, evaluating it again first unless its evaluation is fresh.

    No evaluation is made past a limit either.
    """
    spared = (c.known == Known.FRESH) | _at_limit(c, limits)
    return jax.lax.cond(
        spared,
        lambda c: _test(program, c, limits),
        lambda c: settle(program, c, inputs, limits),
        c,
    )


def _iterate(program: Program, c: Carry, inputs: Inputs, limits: Limits) -> Carry:
    """Up to `limits.n_steps` iterations from a tested carry, in one `lax.while_loop`.

    Each pass is `advance` then `settle` (or only the tests when the new point's
    evaluation is fresh), so the loop stops on the tests at the point it ends on.
    When the objective has no state and the solver is multi-evaluation, the
    evaluation at x_{k+1} is always fresh within a call (the batch changes only
    between calls), and the loop body carries no branch.
    """
    start = c.iter
    always_fresh = not program.rule.one_step and not jax.tree_util.tree_leaves(c.state)

    def body(c: Carry) -> Carry:
        c = advance(program, c, inputs)
        if always_fresh:
            return _test(program, c, limits)
        return _settle_or_test(program, c, inputs, limits)

    def cond(c: Carry) -> Bool[Array, ""]:
        return _going(c) & (c.iter - start < limits.n_steps)

    return jax.lax.while_loop(cond, body, c)


def run(program: Program, c: Carry, inputs: Inputs, limits: Limits):
    """The tests at x_k (evaluating it again first if the state or batch changed since),
    then up to `limits.n_steps` iterations: one chunk of the device-loop path."""
    program.objective.traces.bump("solve_run")
    c = _settle_or_test(program, c, inputs, limits)
    c = _iterate(program, c, inputs, limits)
    return c, info(program, c)


def solve_once(program: Program, start: tuple, inputs: Inputs, limits: Limits):
    """`first` and the iterations in one device call (nothing for the host between).

    `first` ends with the tests on a fresh evaluation, so no re-evaluation branch
    is compiled before the loop.
    """
    program.objective.traces.bump("solve_once")
    c = first(program, start, inputs, limits)
    c = _iterate(program, c, inputs, limits)
    return c, info(program, c)


def first_call(program: Program, start: tuple, inputs: Inputs, limits: Limits):
    """`first` as its own device call (the host reads x0's row before going on)."""
    program.objective.traces.bump("solve_first")
    c = first(program, start, inputs, limits)
    return c, info(program, c)


def settle_call(program: Program, c: Carry, inputs: Inputs, limits: Limits):
    """`settle` as a straight-line top-level program (the callback path)."""
    program.objective.traces.bump("solve_settle")
    c = settle(program, c, inputs, limits)
    return c, info(program, c)


def test_call(program: Program, c: Carry, inputs: Inputs, limits: Limits):
    """The stopping tests alone, when x_k's evaluation is fresh (the callback path)."""
    del inputs
    program.objective.traces.bump("solve_test")
    c = _test(program, c, limits)
    return c, info(program, c)


def advance_call(program: Program, c: Carry, inputs: Inputs, limits: Limits):
    """`advance` as a straight-line top-level program (the callback path)."""
    del limits
    program.objective.traces.bump("solve_advance")
    c = advance(program, c, inputs)
    return c, info(program, c)


def info(program: Program, c: Carry) -> Int[Array, " k"]:
    """The scalars the host reads after a call, packed in one int32 vector (one transfer).

    `INT_FIELDS` first, then f, the stationarity measure and the solver's diagnostics
    (sorted by name, the log's column order) in x's dtype, bit-cast to int32; `unpack`
    reads them back.
    """
    ints = jnp.stack(
        [
            c.status,
            c.fault,
            c.iter,
            c.accepted,
            c.tally.obj,
            c.tally.grad,
            c.tally.hprod,
            c.known,
        ]
    ).astype(jnp.int32)
    diag = program.solver.diagnostics(c.solver_state)
    floats = [c.point.f, program.solver.stationarity(c.point), *(diag[k] for k in sorted(diag))]
    floats = jnp.stack([jnp.asarray(v, c.x.dtype) for v in floats])
    return jnp.concatenate([ints, jax.lax.bitcast_convert_type(floats, jnp.int32).reshape(-1)])


def unpack(packed: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """`(ints, floats)` of an `info` vector, on the host."""
    values = np.asarray(packed)
    k = len(INT_FIELDS)
    return values[:k], values[k:].view(np.dtype(dtype))


def final_evaluation(program: Program, c: Carry, inputs: Inputs):
    """f and ‖∇f‖ at x_k under (s_k, B_k), for a solve that stopped without one there."""
    program.objective.traces.bump("solve_final")
    point, _ = _oracle(program, c.state, c.memory, c.tally, inputs).objgrad(c.x)
    return point.f, program.solver.stationarity(point)


def initial_shape(program: Program, start: tuple, inputs: Inputs) -> Any:
    """The carry's structure (shapes and dtypes) without evaluating anything."""
    limits = Limits(np.int32(0), np.int32(0), np.int32(0))
    return jax.eval_shape(lambda s, i: first(program, s, i, limits), start, inputs)


class Compiled:
    """The jitted functions of one program (equal programs share them, and their code)."""

    def __init__(self, program: Program):
        self.solve_once = jax.jit(functools.partial(solve_once, program))
        self.first = jax.jit(functools.partial(first_call, program))
        self.run = jax.jit(functools.partial(run, program))
        self.settle = jax.jit(functools.partial(settle_call, program))
        self.test = jax.jit(functools.partial(test_call, program))
        self.advance = jax.jit(functools.partial(advance_call, program))
        self.final = jax.jit(functools.partial(final_evaluation, program))


@functools.lru_cache(maxsize=128)
def compiled(program: Program) -> Compiled:
    """The (cached) `Compiled` of `program`."""
    return Compiled(program)
