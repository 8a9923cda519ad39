"""Adapters for one-step methods: any optax transformation, and plain gradient descent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from .. import traits
from .._errors import InvalidArgumentError, InvalidTypeError
from .._evaluate import Evaluation, Oracle
from ._base import AbstractSolver, Step

__all__ = ["GradientDescent", "Optax"]


def _calls_value_fn(tx: optax.GradientTransformation) -> bool | None:
    """Whether `tx.update` evaluates the objective (a line search): True/False, None if unknown.

    Traces (without compiling) one update on a small vector with a `value_fn`
    that records being called.
    """
    calls: list[int] = []

    def value_fn(p, *args, **kwargs):
        calls.append(1)
        return jnp.sum(p**2)

    params = jnp.zeros((2,), jnp.float32)

    def with_extras():
        opt_state = tx.init(params)
        update = cast(Callable[..., Any], tx.update)
        return update(
            params, opt_state, params, value=jnp.zeros(()), grad=params, value_fn=value_fn
        )

    def plain():
        opt_state = tx.init(params)
        return tx.update(params, opt_state, params)

    try:
        jax.eval_shape(with_extras)
        return bool(calls)
    except Exception:
        pass
    try:
        jax.eval_shape(plain)
        return False
    except Exception:
        return None


def _linesearch_steps(opt_state: PyTree) -> Any:
    """Total `num_linesearch_steps` recorded in an optax state (0 if none)."""
    found: list[Any] = []

    def visit(node):
        if hasattr(node, "_fields") and "num_linesearch_steps" in node._fields:
            found.append(node.num_linesearch_steps)
            return True
        return False

    jax.tree_util.tree_map(lambda x: x, opt_state, is_leaf=visit)
    return sum(found) if found else 0


class Optax(AbstractSolver[PyTree]):
    """Any `optax.GradientTransformation` as a solver (on the flat variable vector).

    Plain updates (sgd, adam, adamw, schedules, chains of those) evaluate once per
    iteration and are **one-step safe**: the default policy is `propagate`.
    Transformations that call `value_fn` (`optax.lbfgs()`, the zoom or
    backtracking line searches) compare evaluations and are **multi-evaluation**:
    they get the frozen function f_k and the default policy `freeze`. Which one
    applies is found by tracing one update; pass `one_step_safe=` to declare it
    yourself when that probe cannot decide (it then assumes multi-evaluation).

    Learning-rate schedules advance once per iteration (optax's own count).

    A line search inside optax evaluates f_k through the oracle's `value_fn`: under the
    frozen state and batch of the iteration, and counted (one evaluation of f and
    ∇f per `num_linesearch_steps` optax records). Because `value_fn` can return
    only the scalar optax expects, the states returned at optax's own trial points
    are discarded unseen: under `reject` the state check runs at the evaluations
    statefulnlp makes (x_k and the accepted point), not at those trial points.

    Example:
        ```python
        import jax.numpy as jnp, optax
        import statefulnlp as snlp

        adam = snlp.solvers.Optax(optax.adam(1e-1))
        assert snlp.traits.of(adam).one_step_safe
        assert not snlp.traits.of(snlp.solvers.Optax(optax.lbfgs())).one_step_safe

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum((x - 1) ** 2), s), jnp.zeros(2))
        stats = snlp.solve(nlp, adam, max_iter=300)
        assert stats.objective < 1e-4
        ```
    """

    transformation: optax.GradientTransformation = eqx.field(static=True)
    one_step_safe: bool = eqx.field(static=True)

    def __init__(
        self, transformation: optax.GradientTransformation, one_step_safe: bool | None = None
    ):
        if not (
            isinstance(transformation, optax.GradientTransformation)
            or (hasattr(transformation, "init") and hasattr(transformation, "update"))
        ):
            raise InvalidTypeError(
                "transformation: expected an optax.GradientTransformation, got "
                f"{type(transformation).__name__}"
            )
        if one_step_safe is not None and not isinstance(one_step_safe, bool):
            raise InvalidTypeError(
                f"one_step_safe: expected True, False or None, got {one_step_safe!r}"
            )
        if one_step_safe is None:
            probed = _calls_value_fn(transformation)
            one_step_safe = probed is False
        self.transformation = transformation
        self.one_step_safe = one_step_safe

    def traits(self) -> traits.SolverTraits:
        return traits.SolverTraits(name="optax", one_step_safe=self.one_step_safe)

    def init(self, point: Evaluation) -> PyTree:
        return self.transformation.init(point.x)

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: PyTree
    ) -> tuple[Step, PyTree, Oracle]:
        tx = self.transformation
        if self.one_step_safe:
            updates, opt_state = tx.update(point.g, solver_state, point.x)
            x_new = jnp.asarray(optax.apply_updates(point.x, updates), point.x.dtype)
            return Step(x=x_new, accepted=jnp.asarray(True), evaluation=None), opt_state, oracle
        update = cast(Callable[..., Any], tx.update)
        updates, opt_state = update(
            point.g, solver_state, point.x, value=point.f, grad=point.g, value_fn=oracle.value_fn()
        )
        steps = _linesearch_steps(opt_state)
        oracle = oracle.counted(obj=steps, grad=steps)
        x_new = jnp.asarray(optax.apply_updates(point.x, updates), point.x.dtype)
        # The state the objective returns at the new point, from f_k (and f, g there).
        evaluation, oracle = oracle.objgrad(x_new)
        return Step(x=x_new, accepted=jnp.asarray(True), evaluation=evaluation), opt_state, oracle


class GradientDescent(AbstractSolver[None]):
    """Fixed-step gradient descent x⁺ = x − lr·g: the simplest one-step solver.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x ** 2), s), jnp.ones(2))
        stats = snlp.solve(nlp, snlp.solvers.GradientDescent(0.25), max_iter=200)
        assert stats.status == "first_order"
        ```
    """

    learning_rate: float = 1e-2

    def __check_init__(self):
        lr = self.learning_rate
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not lr > 0 or lr != lr:
            raise InvalidArgumentError(f"learning_rate: expected a positive number, got {lr!r}")

    def init(self, point: Evaluation) -> None:
        return None

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: None
    ) -> tuple[Step, None, Oracle]:
        x_new: Float[Array, " n"] = (
            point.x - jnp.asarray(self.learning_rate, point.x.dtype) * point.g
        )
        return Step(x=x_new, accepted=jnp.asarray(True), evaluation=None), None, oracle


traits.register(Optax, one_step_safe=True, name="optax")
traits.register(GradientDescent, one_step_safe=True, name="gd")
