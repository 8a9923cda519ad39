"""The trait registry and the state-policy enum."""

from __future__ import annotations

import jax.numpy as jnp
import optax
import pytest

import statefulnlp as snlp
from statefulnlp import traits
from statefulnlp.solvers import AbstractSolver, GradientDescent, Step


@pytest.fixture
def clean_registry():
    saved = dict(traits._REGISTRY)
    yield
    traits._REGISTRY.clear()
    traits._REGISTRY.update(saved)


def test_builtin_traits():
    reg = traits.registered()
    assert {"r2", "lbfgs", "trunk", "optax", "gd"} <= set(reg)
    assert not traits.of("lbfgs").one_step_safe
    assert not traits.of("R2").one_step_safe  # names are case-insensitive
    assert not traits.of(snlp.solvers.R2()).one_step_safe
    assert not traits.of(snlp.solvers.Trunk).one_step_safe
    assert traits.of("trunk").uses_hprod and not traits.of("lbfgs").uses_hprod
    assert traits.of("gd").one_step_safe
    assert traits.of("lbfgs").default_policy == "freeze"
    assert traits.of("gd").default_policy == traits.StatePolicy.PROPAGATE


def test_optax_traits_depend_on_the_instance():
    assert traits.of(snlp.solvers.Optax(optax.adam(1e-3))).one_step_safe
    assert traits.of(snlp.solvers.Optax(optax.chain(optax.clip(1.0), optax.sgd(0.1)))).one_step_safe
    assert not traits.of(snlp.solvers.Optax(optax.lbfgs())).one_step_safe
    ls = optax.chain(
        optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=5)
    )
    assert not traits.of(snlp.solvers.Optax(ls)).one_step_safe
    declared = snlp.solvers.Optax(optax.adam(1e-3), one_step_safe=False)
    assert not traits.of(declared).one_step_safe


def test_policy_parsing():
    P = traits.StatePolicy
    assert P.parse("freeze") is P.FREEZE
    assert P.parse(" Reject ") is P.REJECT
    assert P.parse(P.PROPAGATE) is P.PROPAGATE
    assert P.FREEZE == "freeze"
    with pytest.raises(snlp.UnknownNameError, match="unknown state policy 'frozen'") as info:
        P.parse("frozen")
    assert isinstance(info.value, KeyError)
    with pytest.raises(snlp.InvalidTypeError, match="state_policy"):
        P.parse(3)


def test_resolve_policy():
    multi, one = traits.of("lbfgs"), traits.of("gd")
    assert traits.resolve_policy(multi, None) is traits.StatePolicy.FREEZE
    assert traits.resolve_policy(one, None) is traits.StatePolicy.PROPAGATE
    assert traits.resolve_policy(one, "freeze") is traits.StatePolicy.FREEZE
    with pytest.raises(snlp.IncompatibleStatePolicyError) as info:
        traits.resolve_policy(multi, "propagate")
    message = str(info.value)
    assert "'lbfgs'" in message and "multi-evaluation" in message and "freeze" in message


class _Halver(AbstractSolver):
    def init(self, point):
        return None

    def step(self, oracle, point, solver_state):
        return Step(point.x * 0.5, jnp.asarray(True), None), None, oracle


class _Cheater(AbstractSolver):
    """Declares itself one-step safe but evaluates inside its step."""

    def init(self, point):
        return None

    def step(self, oracle, point, solver_state):
        _, _, oracle = oracle.obj(point.x)
        return Step(point.x - 0.1 * point.g, jnp.asarray(True), None), None, oracle


@pytest.mark.usefixtures("clean_registry")
def test_register_user_solver():
    t = traits.register(_Halver, one_step_safe=True)
    assert t.name == "_halver" and t.one_step_safe
    assert traits.of(_Halver()).one_step_safe
    assert "_halver" in traits.registered()
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(2))
    stats = snlp.solve(nlp, "_halver", max_iter=60)
    assert stats.status == "first_order" and stats.state_policy == "propagate"
    traits.register(_Halver, one_step_safe=True, name="halver2")
    assert traits.of("halver2").one_step_safe


@pytest.mark.usefixtures("clean_registry")
def test_wrong_declarations_are_errors():
    with pytest.raises(snlp.InvalidTypeError, match="one_step_safe"):
        traits.register(_Halver, one_step_safe=None)  # type: ignore[arg-type]
    with pytest.raises(snlp.InvalidTypeError, match="one_step_safe"):
        traits.register(_Halver, one_step_safe=1)  # type: ignore[arg-type]
    with pytest.raises(snlp.InvalidTypeError, match="not a solver"):
        traits.register(dict, one_step_safe=True)
    with pytest.raises(snlp.InvalidTypeError, match="solver class"):
        traits.register(_Halver(), one_step_safe=True)  # type: ignore[arg-type]
    with pytest.raises(snlp.UnknownNameError, match="already registered"):
        traits.register(_Halver, one_step_safe=True, name="lbfgs")
    with pytest.raises(snlp.UnknownNameError, match="is not registered"):
        traits.of(_Halver())
    with pytest.raises(snlp.UnknownNameError, match="unknown solver 'bfgs'"):
        traits.of("bfgs")
    with pytest.raises(snlp.InvalidTypeError, match="solver"):
        traits.of(42)


@pytest.mark.usefixtures("clean_registry")
def test_one_step_solver_that_evaluates_twice_is_caught():
    traits.register(_Cheater, one_step_safe=True)
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(2))
    for policy in ("propagate", "freeze"):
        with pytest.raises(snlp.SolverTraitError, match="more than once"):
            snlp.solve(nlp, _Cheater(), state_policy=policy, max_iter=5)
    # Declared honestly, the same solver runs (freeze is its default).
    traits.register(_Cheater, one_step_safe=False)
    with pytest.raises(snlp.SolverTraitError, match="must return the Evaluation"):
        snlp.solve(nlp, _Cheater(), max_iter=5)


def test_subclass_of_registered_solver_needs_its_own_declaration():
    class MyGD(GradientDescent):
        pass

    with pytest.raises(snlp.UnknownNameError, match="MyGD is not registered"):
        traits.of(MyGD())
