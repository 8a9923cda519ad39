"""The strong-Wolfe line search on its own, through an oracle on 1-D and n-D functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import oracle_factory

import statefulnlp as snlp
from statefulnlp.solvers import StrongWolfe

FUNCTIONS = {
    "quadratic": lambda x: jnp.sum((x - 3.0) ** 2),
    "quartic": lambda x: jnp.sum(x**4 - 2 * x**2 + 0.5 * x),
    "exp": lambda x: jnp.sum(jnp.exp(x) - 2.0 * x),
    "steep_then_flat": lambda x: jnp.sum(jnp.log1p(jnp.exp(5 * (1 - x)))),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("step0", [1e-3, 1.0, 50.0])
def test_strong_wolfe_conditions_hold(name, step0):
    fn = FUNCTIONS[name]
    x0 = jnp.array([0.3, -0.2])
    search = StrongWolfe(c1=1e-4, c2=0.9)
    make = oracle_factory(fn, 2)

    @jax.jit
    def run(x0):
        oracle = make()
        point, oracle = oracle.objgrad(x0)
        d = -point.g
        result, oracle = search.search(oracle, point, d, jnp.asarray(step0, x0.dtype))
        return point, d, result, oracle.tally

    point, d, result, tally = run(x0)
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
