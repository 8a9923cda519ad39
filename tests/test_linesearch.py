"""The line searches on their own (strong Wolfe, Armijo backtracking), through an oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import oracle_factory

import statefulnlp as snlp
from statefulnlp.solvers import AbstractLineSearch, BacktrackingArmijo, StrongWolfe

FUNCTIONS = {
    "quadratic": lambda x: jnp.sum((x - 3.0) ** 2),
    "quartic": lambda x: jnp.sum(x**4 - 2 * x**2 + 0.5 * x),
    "exp": lambda x: jnp.sum(jnp.exp(x) - 2.0 * x),
    "steep_then_flat": lambda x: jnp.sum(jnp.log1p(jnp.exp(5 * (1 - x)))),
}


def _steepest_search(search, fn, x0, step0):
    """`search` along −∇f from x0 (jitted): the start point, d, the result, the tally."""
    make = oracle_factory(fn, x0.shape[0])

    @jax.jit
    def run(x0):
        oracle = make()
        point, oracle = oracle.objgrad(x0)
        d = -point.g
        result, oracle = search.search(oracle, point, d, jnp.asarray(step0, x0.dtype))
        return point, d, result, oracle.tally

    return run(x0)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("step0", [1e-3, 1.0, 50.0])
def test_strong_wolfe_conditions_hold(name, step0):
    fn = FUNCTIONS[name]
    x0 = jnp.array([0.3, -0.2])
    search = StrongWolfe(c1=1e-4, c2=0.9)
    point, d, result, tally = _steepest_search(search, fn, x0, step0)
    t = float(result.step_size)
    assert bool(result.wolfe) and t > 0
    f0, df0 = float(point.f), float(point.g @ d)
    ft = float(fn(x0 + t * d))
    dft = float(jax.grad(fn)(x0 + t * d) @ d)
    assert ft <= f0 + 1e-4 * t * df0 + 1e-6
    assert abs(dft) <= 0.9 * abs(df0) + 1e-6
    np.testing.assert_allclose(result.point.x, x0 + t * d, rtol=1e-6)
    assert float(result.point.f) == pytest.approx(ft, rel=1e-6)
    assert int(tally.obj) == int(result.trials) + 1  # one objgrad per trial (+ the start)


def test_nan_trials_back_off():
    # f is NaN beyond x = 1: a first trial far out must back off, not fail.
    def fn(x):
        return jnp.where(x[0] < 1.0, (x[0] - 0.5) ** 2, jnp.nan)

    make = oracle_factory(fn, 1)

    @jax.jit
    def run(x0):
        oracle = make()
        point, oracle = oracle.objgrad(x0)
        return StrongWolfe().search(oracle, point, -point.g, jnp.asarray(10.0))[0]

    result = run(jnp.array([0.0]))
    assert bool(result.decrease) and np.isfinite(float(result.point.f))
    assert float(result.point.x[0]) < 1.0 and float(result.point.f) < 0.25


def test_no_decrease_along_ascent_direction():
    make = oracle_factory(lambda x: jnp.sum(x**2), 2)

    @jax.jit
    def run(x0):
        oracle = make()
        point, oracle = oracle.objgrad(x0)
        return StrongWolfe(max_trials=8).search(oracle, point, point.g, jnp.asarray(1.0))[0]

    result = run(jnp.array([1.0, 1.0]))
    assert not bool(result.decrease) and float(result.step_size) == 0.0
    assert int(result.trials) <= 8


def test_invalid_constants():
    with pytest.raises(snlp.InvalidArgumentError, match="c1, c2"):
        StrongWolfe(c1=0.9, c2=0.1)


# --- Armijo backtracking, the interface, scale invariance, precision limit -------


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_backtracking_armijo_sufficient_decrease(name):
    fn = FUNCTIONS[name]
    x0 = jnp.array([0.3, -0.2])
    search = BacktrackingArmijo(c1=1e-4, factor=0.5)
    point, d, result, tally = _steepest_search(search, fn, x0, 8.0)
    t = float(result.step_size)
    assert bool(result.decrease) and not bool(result.wolfe) and t > 0
    assert t == 8.0 * 0.5 ** (int(result.trials) - 1)  # the first acceptable power of 1/2
    f0, df0 = float(point.f), float(point.g @ d)
    ft = float(fn(x0 + t * d))
    assert ft <= f0 + 1e-4 * t * df0
    if int(result.trials) > 1:  # the previous, twice longer step was not acceptable
        assert float(fn(x0 + 2 * t * d)) > f0 + 1e-4 * 2 * t * df0
    np.testing.assert_allclose(result.point.g, jax.grad(fn)(x0 + t * d), rtol=1e-5)
    # One objective per trial, one gradient at the accepted point (plus the start).
    assert int(tally.obj) == int(result.trials) + 1 and int(tally.grad) == 2


def test_lbfgs_takes_any_line_search_and_rejects_anything_else():
    nlp = snlp.StatefulNLPModel(
        lambda x, s, b: (jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s),
        jnp.array([-1.2, 1.0]),
    )
    for search in (StrongWolfe(), BacktrackingArmijo()):
        stats = snlp.solve(nlp, snlp.solvers.LBFGS(line_search=search), max_iter=500)
        assert stats.status == "first_order", search
    assert isinstance(StrongWolfe(), AbstractLineSearch)
    assert isinstance(BacktrackingArmijo(), AbstractLineSearch)
    with pytest.raises(snlp.InvalidTypeError, match="line_search") as info:
        snlp.solvers.LBFGS(line_search="wolfe")
    assert isinstance(info.value, TypeError)
    with pytest.raises(snlp.InvalidArgumentError, match="factor"):
        BacktrackingArmijo(factor=1.5)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("search", [StrongWolfe(), BacktrackingArmijo()], ids=["wolfe", "armijo"])
def test_trial_steps_do_not_depend_on_the_scale_of_f(search):
    """c·f for c = 2^k (exact scaling): the same trials and the same step, over 400 decades."""
    make = oracle_factory(lambda x: x[0] * FUNCTIONS["quartic"](x[1:]), 3)

    @jax.jit
    def run(c):
        oracle = make()
        point, oracle = oracle.objgrad(jnp.array([c, 0.3, -0.2]))
        # The first coordinate carries c; search only along the others.
        g = point.g[1:] / jnp.max(jnp.abs(point.g[1:]))  # (‖g‖² would underflow)
        d = jnp.concatenate([jnp.zeros(1), -g / jnp.linalg.norm(g)])
        result, _ = search.search(oracle, point, d, jnp.asarray(20.0))
        return result.step_size, result.trials

    steps = {k: run(jnp.asarray(2.0**k)) for k in (-700, -300, 0, 300, 700)}
    for k, (t, trials) in steps.items():
        assert float(t) == float(steps[0][0]) and int(trials) == int(steps[0][1]), k


@pytest.mark.parametrize("search", [StrongWolfe(), BacktrackingArmijo()], ids=["wolfe", "armijo"])
def test_gives_up_quickly_at_the_precision_limit(search):
    """At the minimizer of a float32 function no step can show a decrease: the search
    says so (`at_precision`) instead of spending all its trials."""
    make = oracle_factory(lambda x: 1.0 + jnp.sum((x - 0.5) ** 2), 2)

    @jax.jit
    def run(x0):
        oracle = make()
        point, oracle = oracle.objgrad(x0)
        return search.search(oracle, point, -point.g / jnp.linalg.norm(point.g), jnp.asarray(1.0))[
            0
        ]

    result = run(jnp.array([0.5 + 1e-4, 0.5], jnp.float32))  # f = 1 + 1e-8: 1 to rounding
    assert not bool(result.decrease) and bool(result.at_precision)
    assert int(result.trials) < 30
