"""Steihaug–Toint truncated CG."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import oracle_factory

import statefulnlp as snlp
from statefulnlp.solvers import CGStatus, SteihaugCG


def _spd(n, seed=0, shift=0.5):
    M = np.random.default_rng(seed).normal(size=(n, n))
    return M.T @ M + shift * np.eye(n)


def _solve(A, g, radius, tol=1e-12, max_iter=None):
    n = len(g)
    A = jnp.asarray(A)
    make = oracle_factory(lambda x: 0.5 * x @ A @ x, n)

    @jax.jit
    def run(g):
        point = snlp.Evaluation(jnp.zeros(n, g.dtype), jnp.zeros((), g.dtype), g, None)
        return SteihaugCG(max_iter).solve(make(), point, jnp.asarray(radius, g.dtype), tol)

    return run(jnp.asarray(g))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("n", [3, 8, 15])
def test_interior_solution_in_at_most_n_iterations(n):
    A = _spd(n, seed=n, shift=float(n))  # well conditioned: exact arithmetic ends in n steps
    g = np.random.default_rng(1).normal(size=n)
    result, oracle = _solve(A, g, radius=1e6, tol=1e-9 * np.linalg.norm(g))
    assert int(result.status) == CGStatus.CONVERGED
    assert int(result.iterations) <= n
    assert int(oracle.tally.hprod) == int(result.iterations)
    np.testing.assert_allclose(result.step, np.linalg.solve(A, -g), rtol=1e-8, atol=1e-10)
    s = np.asarray(result.step)
    assert float(result.curvature) == pytest.approx(s @ A @ s, rel=1e-10)


@pytest.mark.usefixtures("x64")
def test_stops_on_the_boundary():
    A = _spd(6)
    g = np.ones(6) * 10
    result, _ = _solve(A, g, radius=0.1)
    assert int(result.status) == CGStatus.BOUNDARY
    assert np.linalg.norm(result.step) == pytest.approx(0.1, rel=1e-10)
    assert float(np.asarray(result.step) @ g) < 0  # still a descent step


@pytest.mark.usefixtures("x64")
def test_negative_curvature_goes_to_the_boundary():
    A = np.diag([1.0, -2.0, 3.0])
    g = np.array([0.1, 0.5, 0.1])
    result, _ = _solve(A, g, radius=2.0)
    assert int(result.status) == CGStatus.NEGATIVE_CURVATURE
    assert np.linalg.norm(result.step) == pytest.approx(2.0, rel=1e-10)
    s = np.asarray(result.step)
    model = g @ s + 0.5 * s @ A @ s
    assert model < 0


@pytest.mark.usefixtures("x64")
def test_max_iter_caps_the_work():
    A = _spd(10)
    g = np.random.default_rng(2).normal(size=10)
    result, oracle = _solve(A, g, radius=1e6, max_iter=3)
    assert int(result.iterations) == 3 and int(oracle.tally.hprod) == 3
    assert int(result.status) == CGStatus.MAX_ITER
