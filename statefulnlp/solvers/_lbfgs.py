"""L-BFGS with a strong-Wolfe line search, multi-batch safe."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import traits
from .._errors import InvalidArgumentError
from .._evaluate import Evaluation, Oracle
from .._quasi_newton import PairMemory, two_loop
from .._stats import Status
from .._tree import safe_norm
from ._base import CONTINUE, AbstractSolver, Step
from ._linesearch import StrongWolfe

__all__ = ["LBFGS"]


class LBFGSState(eqx.Module):
    memory: PairMemory
    step_size: Float[Array, ""]
    trials: Int[Array, ""]
    status: Int[Array, ""]


class LBFGS(AbstractSolver[LBFGSState]):
    """Limited-memory BFGS with a strong-Wolfe line search (Nocedal & Wright, Alg. 7.5).

    The direction is d = −H g from the two-loop recursion over the last `mem`
    curvature pairs. Each pair is formed inside one iteration, on the frozen
    function f_k: s = x_{k+1} − x_k and y = ∇f_k(x_{k+1}) − ∇f_k(x_k), both on
    the same minibatch and state (multi-batch L-BFGS), so changing the batch
    between iterations never mixes gradients of two functions. Pairs with
    s'y ≤ eps·y'y are skipped.

    If the line search finds no decrease along a quasi-Newton direction the
    memory is cleared and the next iteration starts over from the steepest
    descent direction; if that fails too the solve stops with `stalled`.

    Attributes:
        mem: number of curvature pairs kept.
        line_search: the line search (a `StrongWolfe`).

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        def rosenbrock(x, s, b):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

        nlp = snlp.StatefulNLPModel(rosenbrock, jnp.zeros(4))
        stats = snlp.solve(nlp, snlp.solvers.LBFGS(mem=5), max_iter=500)
        assert stats.status == "first_order"
        ```
    """

    mem: int = eqx.field(default=5, static=True)
    line_search: StrongWolfe = StrongWolfe()

    def __check_init__(self):
        if not isinstance(self.mem, int) or isinstance(self.mem, bool) or self.mem < 1:
            raise InvalidArgumentError(f"mem: expected a positive integer, got {self.mem!r}")
        if not isinstance(self.line_search, StrongWolfe):
            from .._errors import InvalidTypeError

            raise InvalidTypeError(
                f"line_search: expected a StrongWolfe, got {type(self.line_search).__name__}"
            )

    def init(self, point: Evaluation) -> LBFGSState:
        dtype = point.x.dtype
        return LBFGSState(
            PairMemory.empty(self.mem, point.x.shape[0], dtype),
            jnp.zeros((), dtype),
            jnp.zeros((), jnp.int32),
            jnp.asarray(CONTINUE, jnp.int32),
        )

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: LBFGSState
    ) -> tuple[Step, LBFGSState, Oracle]:
        dtype = point.x.dtype
        memory = solver_state.memory
        g = point.g
        d = -two_loop(memory, g)
        slope = jnp.vdot(g, d)
        descent = jnp.isfinite(slope) & (slope < 0)
        memory = dataclasses.replace(memory, count=jnp.where(descent, memory.count, 0))
        d = jnp.where(descent, d, -g)
        empty = memory.count == 0
        gnorm = safe_norm(g)
        # Without curvature information the scale of d = -g is unknown: take a unit
        # first step (as L-BFGS-B does); afterwards the unit quasi-Newton step.
        step0 = jnp.where(empty, jnp.minimum(1.0, 1.0 / jnp.where(gnorm > 0, gnorm, 1.0)), 1.0)
        result, oracle = self.line_search.search(oracle, point, d, step0.astype(dtype))
        new = result.point
        accepted = result.decrease
        s = new.x - point.x
        y = new.g - g
        sy = jnp.vdot(s, y)
        keep = accepted & (sy > jnp.finfo(dtype).eps * jnp.vdot(y, y))
        memory = memory.push(s, y, keep)
        # No decrease: forget the pairs and retry from steepest descent; if the
        # memory was already empty there is nothing left to try.
        memory = dataclasses.replace(memory, count=jnp.where(accepted, memory.count, 0))
        moved = jnp.any(new.x != point.x)
        status = jnp.where(
            accepted & ~moved,
            Status.SMALL_STEP.code,
            jnp.where(~accepted & empty, Status.STALLED.code, CONTINUE),
        ).astype(jnp.int32)
        step = Step(x=new.x, accepted=accepted, evaluation=new)
        state = LBFGSState(memory, result.step_size, result.trials, status)
        return step, state, oracle

    def terminate(self, solver_state: LBFGSState) -> Int[Array, ""]:
        return solver_state.status

    def diagnostics(self, solver_state: LBFGSState) -> dict[str, Float[Array, ""]]:
        return {"step": solver_state.step_size, "trials": solver_state.trials.astype(jnp.float32)}


traits.register(LBFGS, one_step_safe=False, name="lbfgs")
