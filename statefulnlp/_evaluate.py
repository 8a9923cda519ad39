"""The state policy, enforced in this one module.

Within iteration k a solver sees one deterministic function
`f_k(x) = loss(x, s_k, B_k)` through an `Oracle`: every evaluation it makes
(trial points, line-search steps, Hessian-vector products) uses the frozen
state `s_k` and batch `B_k`. An evaluation returns the state that `fn`
produced at that point; the solver hands back the `Evaluation` of its accepted
point, and `StateRule` (never the solver, never the loop) decides from it:

* **s_{k+1}**: for a multi-evaluation solver, the new state of the evaluation
  at the accepted point x_{k+1}, or s_k when the step is rejected (or its point
  is not finite); for a one-step solver, the new state of its single
  evaluation, the one at x_k.
* **re-evaluation**: f and ∇f at x_{k+1} are evaluated again under
  (s_{k+1}, B_{k+1}) at the start of the next iteration only if the state or
  the batch changed (`Known`: the carried evaluation is fresh, stale or
  absent); that evaluation's own new state is discarded.
* **the final state**: s_k, except under `propagate` when the solve stopped
  right after evaluating x_k: then that evaluation's new state is kept.
* **reject**: every evaluation's new state is compared with its input; a
  change is a fault that becomes `StateMutationError`.
* **one-step violations**: a solver registered one-step safe that evaluates in
  its step is a fault that becomes `SolverTraitError`.

* **which policy**: `StateRule.for_solver` picks the policy from the solver's
  trait (`propagate` for one-step solvers, `freeze` otherwise) or checks the
  one asked for, before any evaluation: `propagate` with a multi-evaluation
  solver is an `IncompatibleStatePolicyError`.

The oracle is a pure pytree: each call returns an updated oracle whose `Tally`
counts the evaluations and, under `reject`, records which state leaves an
evaluation changed. Solvers thread it through their loops like a PRNG key.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._errors import IncompatibleStatePolicyError
from ._problem import Objective
from ._tree import PyTree, changed_mask, tree_select
from .traits import StatePolicy

__all__ = ["Evaluation", "Fault", "Known", "Oracle", "StateRule", "Tally"]


class Evaluation(eqx.Module):
    """f and its gradient at `x` under the iteration's frozen state and batch.

    `state` is the new state that `fn` returned at `x`; solvers carry it
    opaquely and never look inside.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        point = snlp.Evaluation(x=jnp.ones(2), f=jnp.float32(2.0), g=2 * jnp.ones(2), state=None)
        assert float(point.f) == 2.0
        ```
    """

    x: Float[Array, " n"]
    f: Float[Array, ""]
    g: Float[Array, " n"]
    state: PyTree


class Tally(eqx.Module):
    """Device-side bookkeeping of the evaluations made through an oracle."""

    obj: Int[Array, ""]
    grad: Int[Array, ""]
    hprod: Int[Array, ""]
    mutated: Bool[Array, " leaves"]

    @classmethod
    def zeros(cls, n_leaves: int) -> Tally:
        z = jnp.zeros((), jnp.int32)
        return cls(z, z, z, jnp.zeros((n_leaves,), bool))

    def add(self, obj: Any = 0, grad: Any = 0, hprod: Any = 0) -> Tally:
        return Tally(self.obj + obj, self.grad + grad, self.hprod + hprod, self.mutated)


class Oracle(eqx.Module):
    """The frozen function f_k of one iteration: `(x) -> f, grad, H v` under s_k, B_k.

    Attributes:
        core: the problem's numerical core (static).
        state: the frozen state s_k; every evaluation starts from it.
        batch: the frozen minibatch B_k.
        consts: the problem's constant arrays.
        hessian: a quasi-Newton approximation `(memory, v) -> B v`, or None for exact HVPs.
        memory: the quasi-Newton pair memory (None for exact HVPs).
        check_mutation: True under the `reject` policy.
        tally: counts and mutation flags so far.

    Example:
        ```python
        import jax
        import jax.numpy as jnp
        import statefulnlp as snlp
        from statefulnlp.solvers import AbstractSolver, Step

        class HalfStep(AbstractSolver):
            # Tries x - g, and x - g/2 if that does not decrease f.

            def init(self, point):
                return None

            def step(self, oracle, point, solver_state):
                full, oracle = oracle.objgrad(point.x - point.g)  # counted, frozen state
                half, oracle = oracle.objgrad(point.x - 0.5 * point.g)
                new = jax.tree_util.tree_map(
                    lambda a, b: jnp.where(full.f < point.f, a, b), full, half
                )
                return Step(new.x, jnp.asarray(True), new), None, oracle

        snlp.traits.register(HalfStep, one_step_safe=False)
        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x ** 2), s), jnp.ones(2))
        assert snlp.solve(nlp, HalfStep(), max_iter=50).status == "first_order"
        ```
    """

    core: Objective = eqx.field(static=True)
    state: PyTree
    batch: PyTree
    consts: PyTree
    hessian: Any = eqx.field(static=True)
    memory: PyTree
    check_mutation: bool = eqx.field(static=True)
    tally: Tally

    def _record(self, new_state: PyTree, obj: int = 0, grad: int = 0, hprod: int = 0) -> Oracle:
        tally = self.tally.add(obj, grad, hprod)
        if self.check_mutation:
            mask = changed_mask(new_state, self.state)
            first = jnp.where(jnp.any(tally.mutated), tally.mutated, mask)
            tally = Tally(tally.obj, tally.grad, tally.hprod, first)
        return dataclasses.replace(self, tally=tally)

    def obj(self, x: Float[Array, " n"]) -> tuple[Float[Array, ""], PyTree, Oracle]:
        """`(f_k(x), new_state, oracle)`."""
        f, new_state = self.core.value(x, self.state, self.batch, self.consts)
        return f, new_state, self._record(new_state, obj=1)

    def objgrad(self, x: Float[Array, " n"]) -> tuple[Evaluation, Oracle]:
        """`(Evaluation(x, f, g, new_state), oracle)`: one forward+backward pass."""
        f, g, new_state = self.core.value_and_grad(x, self.state, self.batch, self.consts)
        return Evaluation(x, f, g, new_state), self._record(new_state, obj=1, grad=1)

    def grad(self, x: Float[Array, " n"]) -> tuple[Float[Array, " n"], PyTree, Oracle]:
        """`(grad f_k(x), new_state, oracle)`."""
        _, g, new_state = self.core.value_and_grad(x, self.state, self.batch, self.consts)
        return g, new_state, self._record(new_state, grad=1)

    def hprod(
        self, x: Float[Array, " n"], v: Float[Array, " n"]
    ) -> tuple[Float[Array, " n"], Oracle]:
        """`(H_k(x) v, oracle)`: exact, or the quasi-Newton approximation's product."""
        if self.hessian is not None:
            return self.hessian.apply(self.memory, v), self._record(self.state, hprod=1)
        hv, new_state = self.core.hvp(x, v, self.state, self.batch, self.consts)
        return hv, self._record(new_state, hprod=1)

    def value_fn(self) -> Callable[[Float[Array, " n"]], Float[Array, ""]]:
        """f_k as a plain differentiable function (for third-party line searches).

        Its evaluations are not counted and its states are discarded; add the
        counts with `counted` when they are known.
        """

        def value(x):
            f, _ = self.core.value(x, self.state, self.batch, self.consts)
            return f

        return value

    def counted(self, obj: Any = 0, grad: Any = 0) -> Oracle:
        """The oracle with evaluations made outside it (through `value_fn`) added."""
        return dataclasses.replace(self, tally=self.tally.add(obj, grad))


class Known(enum.IntEnum):
    """What the carried evaluation is, relative to the iterate x_k."""

    NONE = 0  # no evaluation at x_k (a one-step solver just moved)
    STALE = 1  # evaluated at x_k under an earlier state or batch
    FRESH = 2  # evaluated at x_k under (s_k, B_k)


class Fault(enum.IntEnum):
    """Internal failures found on the device (kept apart from the user-visible status)."""

    NONE = 0
    MUTATION = 1  # reject: an evaluation changed its state
    TRAIT_VIOLATION = 2  # a one-step solver evaluated in its step
    NONFINITE_START = 3  # f or ∇f at x0 is not finite


class Advance(eqx.Module):
    """Where an iteration leaves the iterate, as `StateRule.advance` decides."""

    x: Float[Array, " n"]
    state: PyTree  # s_{k+1}
    point: Evaluation  # the evaluation carried into the next iteration
    known: Int[Array, ""]  # a `Known`
    accepted: Bool[Array, ""]
    nonfinite: Bool[Array, ""]  # the accepted point was not finite: the step is undone
    fault: Int[Array, ""]  # a `Fault`


def _finite(point: Evaluation) -> Bool[Array, ""]:
    return jnp.isfinite(point.f) & jnp.all(jnp.isfinite(point.g))


@dataclasses.dataclass(frozen=True)
class StateRule:
    """The state policy of one solve, applied by the loop at fixed points.

    Attributes:
        policy: the resolved `StatePolicy`.
        one_step: the solver's trait (True: one evaluation per iteration, at x_k).
    """

    policy: StatePolicy
    one_step: bool

    @staticmethod
    def default_policy(one_step_safe: bool) -> StatePolicy:
        """`propagate` for one-step solvers, `freeze` for multi-evaluation solvers."""
        return StatePolicy.PROPAGATE if one_step_safe else StatePolicy.FREEZE

    @classmethod
    def for_solver(cls, traits: Any, requested: Any = None) -> StateRule:
        """The rule for a solver with `traits` (a `SolverTraits`): the policy
        `requested` (a `StatePolicy` or its name), or the trait's default when None.

        Raises `IncompatibleStatePolicyError` for `propagate` with a multi-evaluation
        solver, naming the solver, why, and what to use instead.
        """
        if requested is None:
            return cls(cls.default_policy(traits.one_step_safe), traits.one_step_safe)
        policy = StatePolicy.parse(requested)
        if policy is StatePolicy.PROPAGATE and not traits.one_step_safe:
            raise IncompatibleStatePolicyError(
                f"state_policy='propagate' cannot be used with solver {traits.name!r}: it is a "
                "multi-evaluation solver (it compares or combines several evaluations per "
                "iteration, e.g. in a line search or trust-region test), so feeding each "
                "evaluation's new state into the next would make it compare values of different "
                "functions. Use state_policy='freeze' (the default for this solver: one state "
                "per iteration, advanced once per accepted step) or 'reject' for a pure objective."
            )
        return cls(policy, traits.one_step_safe)

    @property
    def check_mutation(self) -> bool:
        """Whether every evaluation's new state is compared with its input (`reject`)."""
        return self.policy is StatePolicy.REJECT

    def carried(self, point: Evaluation) -> Evaluation:
        """`point` as kept between iterations: a one-step solver's keeps its new state
        (it is s_{k+1}); a multi-evaluation solver's does not (fewer leaves to move)."""
        return point if self.one_step else dataclasses.replace(point, state=None)

    def full(self, point: Evaluation, state: PyTree) -> Evaluation:
        """A carried point with a state again (`state` stands in when it was dropped)."""
        return point if self.one_step else dataclasses.replace(point, state=state)

    def advance(self, state: PyTree, point: Evaluation, step: Any, evaluated: Any) -> Advance:
        """s_{k+1} and the carried evaluation after the solver's `step` from `point` (at x_k).

        `evaluated` says whether the step made any evaluation itself.
        """
        yes, no = jnp.asarray(True), jnp.asarray(False)
        if self.one_step:
            # The only evaluation of the iteration is the one at x_k: its state is s_{k+1};
            # x_{k+1} has no evaluation yet.
            fault = jnp.where(evaluated, Fault.TRAIT_VIOLATION, Fault.NONE)
            return Advance(step.x, point.state, point, jnp.asarray(Known.NONE), yes, no, fault)
        ev = step.evaluation
        nonfinite = step.accepted & ~_finite(ev)
        accepted = step.accepted & ~nonfinite
        next_state = tree_select(accepted, ev.state, state)
        next_point = self.carried(tree_select(accepted, ev, point))
        # The new point was evaluated under s_k and B_k: it stays fresh if s_{k+1} == s_k.
        fresh = ~accepted | ~jnp.any(changed_mask(next_state, state))
        known = jnp.where(fresh, Known.FRESH, Known.STALE)
        return Advance(
            next_point.x,
            next_state,
            next_point,
            known,
            accepted,
            nonfinite,
            jnp.asarray(Fault.NONE),
        )

    def final_state(self, state: PyTree, point: Evaluation, known: Any) -> PyTree:
        """The state a solve returns: s_k, or under `propagate` the new state of the
        evaluation at x_k that made it stop."""
        if self.policy is StatePolicy.PROPAGATE and int(known) == Known.FRESH:
            return point.state
        return state

    def fault(self, tally: Tally, fault: Any) -> Int[Array, ""]:
        """`fault`, or `MUTATION` when a `reject` check found a changed state."""
        return jnp.where(jnp.any(tally.mutated), Fault.MUTATION, fault).astype(jnp.int32)
