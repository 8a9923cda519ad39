"""L-BFGS with a line search (strong Wolfe by default), multi-batch safe and scale-free."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import traits
from .._errors import InvalidArgumentError, InvalidTypeError
from .._evaluate import Evaluation, Oracle
from .._quasi_newton import PairMemory, curvature_ok, two_loop
from .._stats import Status
from .._tree import safe_norm
from ._base import CONTINUE, AbstractSolver, Step
from ._linesearch import AbstractLineSearch, StrongWolfe

__all__ = ["LBFGS"]


class LBFGSState(eqx.Module):
    memory: PairMemory
    step_size: Float[Array, ""]  # t of the last line search
    trials: Int[Array, ""]  # trial points of the last line search
    last_length: Float[Array, ""]  # ‖x_{k+1} − x_k‖ of the last accepted step (1 at first)
    status: Int[Array, ""]


class LBFGS(AbstractSolver[LBFGSState]):
    """Limited-memory BFGS with a line search (Nocedal & Wright, Alg. 7.5).

    The direction is d = −H g from the two-loop recursion over the last `mem`
    curvature pairs. Each pair is formed inside one iteration, on the frozen
    function f_k: s = x_{k+1} − x_k and y = ∇f_k(x_{k+1}) − ∇f_k(x_k), both on
    the same minibatch and state (multi-batch L-BFGS), so changing the batch
    between iterations never mixes gradients of two functions. Pairs with
    s'y ≤ eps·‖s‖·‖y‖ are skipped.

    Scale-free: solving c·f for any c > 0 visits the same iterates. Without
    pairs (the first iteration, after a reset) the direction is the unit vector
    −g/‖g‖ and the first trial step has the length of the last accepted step
    (1 at the start, as L-BFGS-B's first step 1/‖g‖ along −g); every test inside
    the line search is relative.

    If the line search finds no decrease along a quasi-Newton direction the
    memory is cleared and the next iteration starts over from the steepest
    descent direction; if that fails too the solve stops with `stalled`. Both
    searches give up as soon as no step they could still try can change f by
    more than its rounding error (`LineSearchResult.at_precision`), so a float32
    solve that has reached the limit of its precision stops within a few
    evaluations instead of spending its trials.

    Attributes:
        mem: number of curvature pairs kept (10, as scipy, optax, jaxopt and
            optimistix; JSOSolvers uses 5).
        line_search: any `AbstractLineSearch` (`StrongWolfe()` by default, or
            `BacktrackingArmijo()`).

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        def rosenbrock(x, s, b):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

        nlp = snlp.StatefulNLPModel(rosenbrock, jnp.zeros(4))
        stats = snlp.solve(nlp, snlp.solvers.LBFGS(), max_iter=500)
        assert stats.status == "first_order"
        ```
    """

    mem: int = eqx.field(default=10, static=True)
    line_search: AbstractLineSearch = StrongWolfe()

    def __check_init__(self):
        if not isinstance(self.mem, int) or isinstance(self.mem, bool) or self.mem < 1:
            raise InvalidArgumentError(f"mem: expected a positive integer, got {self.mem!r}")
        if not isinstance(self.line_search, AbstractLineSearch):
            raise InvalidTypeError(
                "line_search: expected an AbstractLineSearch (e.g. StrongWolfe() or "
                f"BacktrackingArmijo()), got {type(self.line_search).__name__}"
            )

    def init(self, point: Evaluation) -> LBFGSState:
        dtype = point.x.dtype
        return LBFGSState(
            memory=PairMemory.empty(self.mem, point.x.shape[0], dtype),
            step_size=jnp.zeros((), dtype),
            trials=jnp.zeros((), jnp.int32),
            last_length=jnp.ones((), dtype),
            status=jnp.asarray(CONTINUE, jnp.int32),
        )

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: LBFGSState
    ) -> tuple[Step, LBFGSState, Oracle]:
        dtype = point.x.dtype
        memory = solver_state.memory
        g = point.g
        d_qn = -two_loop(memory, g)
        slope = jnp.vdot(g, d_qn)
        quasi_newton = (memory.count > 0) & jnp.isfinite(slope) & (slope < 0)
        memory = dataclasses.replace(memory, count=jnp.where(quasi_newton, memory.count, 0))
        # Without usable pairs the scale of H is unknown: search along the unit vector
        # −g/‖g‖ from a step as long as the last accepted one. Both are independent of
        # the scale of f (a first trial t = 1 along −g would not be).
        gnorm = safe_norm(g)
        unit = -g / jnp.where(gnorm > 0, gnorm, 1.0)
        d = jnp.where(quasi_newton, d_qn, unit)
        step0 = jnp.where(quasi_newton, 1.0, solver_state.last_length).astype(dtype)
        result, oracle = self.line_search.search(oracle, point, d, step0)
        new = result.point
        accepted = result.decrease
        s = new.x - point.x
        y = new.g - g
        step_length = safe_norm(s)
        norms = (step_length, safe_norm(y))
        memory = memory.push(s, y, accepted & curvature_ok(s, y, norms), norms[1])
        # No decrease: forget the pairs and retry from steepest descent; if the
        # memory was already empty, stop.
        memory = dataclasses.replace(memory, count=jnp.where(accepted, memory.count, 0))
        moved = step_length > 0  # s = 0 exactly when x_{k+1} == x_k
        stalled = ~accepted & ~quasi_newton
        status = jnp.where(
            accepted & ~moved,
            Status.SMALL_STEP.code,
            jnp.where(stalled, Status.STALLED.code, CONTINUE),
        ).astype(jnp.int32)
        length = jnp.where(accepted, step_length, solver_state.last_length).astype(dtype)
        step = Step(x=new.x, accepted=accepted, evaluation=new)
        state = LBFGSState(memory, result.step_size, result.trials, length, status)
        return step, state, oracle

    def terminate(self, solver_state: LBFGSState) -> Int[Array, ""]:
        return solver_state.status

    def diagnostics(self, solver_state: LBFGSState) -> dict[str, Float[Array, ""]]:
        return {"step": solver_state.step_size, "trials": solver_state.trials.astype(jnp.float32)}


traits.register(LBFGS, one_step_safe=False, name="lbfgs")
