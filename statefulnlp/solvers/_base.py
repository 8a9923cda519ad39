"""The solver interface shared by every solver and the driver."""

from __future__ import annotations

import abc
from typing import Any, Generic, TypeVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._evaluate import Evaluation, Oracle
from .._stats import Status
from .._tree import safe_norm

__all__ = ["AbstractSolver", "Step"]

SolverState = TypeVar("SolverState")

#: The status code meaning "keep going" (`Status.UNKNOWN`).
CONTINUE = Status.UNKNOWN.code


class Step(eqx.Module):
    """What one iteration produced.

    Attributes:
        x: the next iterate x_{k+1} (equal to x_k when the step was rejected).
        accepted: whether the iterate moved.
        evaluation: for multi-evaluation solvers, the `Evaluation` at `x` under the
            iteration's frozen function f_k (the driver takes the next state from it);
            None for one-step solvers, whose only evaluation is the one at x_k.

    Example:
        ```python
        import jax.numpy as jnp
        from statefulnlp.solvers import Step

        step = Step(x=jnp.zeros(2), accepted=jnp.asarray(True), evaluation=None)
        ```
    """

    x: Float[Array, " n"]
    accepted: Bool[Array, ""]
    evaluation: Evaluation | None


class AbstractSolver(eqx.Module, Generic[SolverState]):
    """Base class of all solvers: small, immutable modules with pure methods.

    A solver never touches the problem's state: it evaluates the iteration's
    frozen function through the `Oracle` it is given, threads the returned oracle
    through its loops, and reports the `Evaluation` of its accepted point. The
    driver enforces the state policy, the stopping test and the limits.

    Subclasses implement `init`, `step` and (optionally) `terminate`, and are
    registered with `statefulnlp.traits.register` (one-step safe or not).
    Configuration fields must be hashable Python values (the solver is a static
    argument of the compiled loop).

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp
        from statefulnlp.solvers import AbstractSolver, Step

        class Momentum(AbstractSolver):
            # Heavy-ball gradient descent: one evaluation per iteration.

            lr: float = 0.1
            beta: float = 0.9

            def init(self, point):
                return jnp.zeros_like(point.x)

            def step(self, oracle, point, velocity):
                velocity = self.beta * velocity - self.lr * point.g
                return Step(point.x + velocity, jnp.asarray(True), None), velocity, oracle

        snlp.traits.register(Momentum, one_step_safe=True)
        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x ** 2), s), jnp.ones(3))
        assert snlp.solve(nlp, Momentum(), max_iter=500).status == "first_order"
        ```
    """

    @abc.abstractmethod
    def init(self, point: Evaluation) -> SolverState:
        """The solver's initial memory, given the evaluation at x0."""

    @abc.abstractmethod
    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: SolverState
    ) -> tuple[Step, SolverState, Oracle]:
        """One iteration from `point` (f_k and its gradient at x_k)."""

    def terminate(self, solver_state: SolverState) -> Int[Array, ""]:
        """A `Status` code if the solver cannot go on (e.g. `not_desc`), else `CONTINUE`."""
        del solver_state
        return jnp.asarray(CONTINUE, jnp.int32)

    def stationarity(self, point: Evaluation) -> Float[Array, ""]:
        """The stopping measure at `point`: ‖∇f‖₂ by default.

        The solve stops with `first_order` when it is at most atol + rtol times its
        value at x0, and `stats.dual_feas` reports it. A bound-constrained solver
        would return the norm of its projected gradient here.
        """
        return safe_norm(point.g)

    def diagnostics(self, solver_state: SolverState) -> dict[str, Float[Array, ""]]:
        """Scalars shown in the verbose log (e.g. a trust-region radius)."""
        del solver_state
        return {}

    def traits(self) -> Any:
        """Instance-specific `SolverTraits`, or None to use the registry's entry."""
        return None
