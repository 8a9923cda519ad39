"""Scale invariance: every solver solves c·f for c over many decades, in about as many iterations.

f is a nonconvex, coupled test function (extended Rosenbrock plus a quartic);
c runs over 300 decades in float64 and over the range where c·f and its
gradient are normal numbers in float32. The stopping test is relative
(atol = 0), as any absolute threshold is not scale-free. c is the problem's
minibatch, so one compiled solve serves every c (`next_batch` moves to the next).

For c a power of two, c·f is computed exactly, so the iterates must be the same
as for f, bit for bit: the number of iterations is equal. For c a power of ten,
rounding differs slightly and the count may differ a little.
"""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import statefulnlp as snlp

SOLVERS = ["lbfgs", "trunk", "r2"]
MAX_ITER = {"lbfgs": 300, "trunk": 300, "r2": 20_000}


def _f(x):
    rosen = jnp.sum(100.0 * (x[1::2] - x[::2] ** 2) ** 2 + (1.0 - x[::2]) ** 2)
    return rosen + 0.1 * jnp.sum(x**4) + 0.5 * jnp.sum(x[:-1] * x[1:])


def _scaled(x, state, c):
    return c * _f(x), state


def _solve_each(solver, cs, dtype, rtol):
    x0 = jnp.asarray([-1.2, 1.0, -0.5, 0.8], dtype)
    nlp = snlp.StatefulNLPModel(_scaled, x0, data=[jnp.asarray(c, dtype) for c in cs])
    out = []
    for _ in cs:
        stats = snlp.solve(nlp, solver, atol=0.0, rtol=rtol, max_iter=MAX_ITER[solver])
        out.append(stats)
        nlp.next_batch()
    return out


def _check(solver, cs, runs, fref, exact, ftol):
    base = runs[cs.index(1.0)] if 1.0 in cs else None
    for c, stats in zip(cs, runs):
        info = f"{solver}, c={c:g}: {stats.status} after {stats.iter} iterations"
        assert stats.status == "first_order", info
        assert abs(stats.objective / c - fref) <= ftol * abs(fref), info
        if base is None:
            continue
        if exact:
            assert stats.iter == base.iter, info
        else:
            assert abs(stats.iter - base.iter) <= max(3, 0.25 * base.iter), info


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("solver", SOLVERS)
def test_float64_over_300_decades(solver):
    cs = [2.0**k for k in (-500, -250, -100, 0, 100, 250, 500)]
    runs = _solve_each(solver, cs, jnp.float64, 1e-8)
    fref = runs[cs.index(1.0)].objective
    _check(solver, cs, runs, fref, exact=True, ftol=1e-12)
    cs10 = [10.0**k for k in range(-150, 151, 30)]
    _check(
        solver, cs10, _solve_each(solver, cs10, jnp.float64, 1e-8), fref, exact=False, ftol=1e-10
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_over_its_range(solver):
    # f(x0) ≈ 30 and ‖∇f(x0)‖ ≈ 250: c·f stays a normal float32 from 1e-30 to 1e35.
    cs = [2.0**k for k in (-96, -48, 0, 48, 112)]
    runs = _solve_each(solver, cs, jnp.float32, 1e-3)
    fref = runs[cs.index(1.0)].objective
    _check(solver, cs, runs, fref, exact=True, ftol=1e-2)
    cs10 = [10.0**k for k in range(-30, 36, 5)]
    _check(solver, cs10, _solve_each(solver, cs10, jnp.float32, 1e-3), fref, exact=False, ftol=1e-2)


def test_the_reported_case_mean_of_1e4_x_squared():
    """mean((1e4·x)²) from x0 = (1, 1) in float32 (issue 16: L-BFGS stalled at f = 8.6e6)."""
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.mean((1e4 * x) ** 2), s), jnp.ones(2))
    for solver in SOLVERS:
        stats = snlp.solve(nlp, solver, atol=0.0, rtol=1e-4, max_iter=200)
        assert stats.status == "first_order", solver
        assert stats.objective <= 1e-7 * 1e8, solver
