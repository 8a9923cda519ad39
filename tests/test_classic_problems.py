"""Validation on classic test problems (float64), against scipy under the same tolerance.

L-BFGS (default, 10 pairs) vs scipy L-BFGS-B (maxcor=10, ftol=0, gtol=1e-10); trunk
vs scipy trust-ncg with the same exact Hessian-vector product (gtol=1e-10); R2 is
reported beside them (scipy has no counterpart). Solved means
f − f* ≤ 1e-6·max(1, |f*|) for the known minimum f* (or one of the local minima
that Moré, Garbow & Hillstrom list, see `mgh.Problem`). The evaluation counts are
printed side by side at the end of the test run; `benchmarks/bench_mgh.py` compares
the evaluations until first solved.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from mgh import PROBLEMS

import statefulnlp as snlp

GTOL = 1e-10


def _ours(problem, solver, max_iter):
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (problem.f(x), s), jnp.asarray(problem.x0))
    stats = snlp.solve(nlp, solver, atol=GTOL, rtol=0.0, max_iter=max_iter)
    return float(stats.objective), stats.counters, stats.status.value


def _scipy(problem, method):
    vg = jax.jit(jax.value_and_grad(problem.f))
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(problem.f), (x,), (v,))[1])
    counts = {"obj": 0, "grad": 0, "hprod": 0}

    def fun(x):
        counts["obj"] += 1
        counts["grad"] += 1
        value, grad = vg(jnp.asarray(x))
        return float(value), np.asarray(grad)

    def hessp(x, v):
        counts["hprod"] += 1
        return np.asarray(hvp(jnp.asarray(x), jnp.asarray(v)))

    x0 = np.asarray(problem.x0, float)
    if method == "L-BFGS-B":
        opts = {"maxcor": 10, "gtol": GTOL, "ftol": 0.0, "maxiter": 20000, "maxfun": 40000}
        res = so.minimize(fun, x0, jac=True, method=method, options=opts)
    else:
        res = so.minimize(
            fun, x0, jac=True, hessp=hessp, method=method, options={"gtol": GTOL, "maxiter": 2000}
        )
    return float(res.fun), counts


@pytest.fixture(scope="module")
def results(report):
    rows = {}
    with jax.enable_x64(True):
        for p in PROBLEMS:
            rows[p.name] = {
                "lbfgs": _ours(p, snlp.solvers.LBFGS(), 20000),
                "trunk": _ours(p, snlp.solvers.Trunk(), 2000),
                "r2": _ours(p, snlp.solvers.R2(), 20000),
                "L-BFGS-B": _scipy(p, "L-BFGS-B"),
                "trust-ncg": _scipy(p, "trust-ncg"),
            }
    lines = [
        f"{'problem':32s} {'n':>3} | {'lbfgs f-f*':>11} {'#f':>6} | {'L-BFGS-B':>11} {'#f':>6} |"
        f" {'trunk f-f*':>11} {'#f':>4} {'#Hv':>6} | {'trust-ncg':>11} {'#f':>4} {'#Hv':>6} |"
        f" {'r2 f-f*':>11} {'#f':>6}"
    ]
    for p in PROBLEMS:
        r = rows[p.name]

        def gap(v, p=p):
            return f"{v - p.fstar:11.2e}" + ("" if p.solved(v) else "*")

        lines.append(
            f"{p.name:32s} {p.n:>3} | {gap(r['lbfgs'][0])} {r['lbfgs'][1]['obj']:>6} |"
            f" {gap(r['L-BFGS-B'][0])} {r['L-BFGS-B'][1]['obj']:>6} |"
            f" {gap(r['trunk'][0])} {r['trunk'][1]['obj']:>4} {r['trunk'][1]['hprod']:>6} |"
            f" {gap(r['trust-ncg'][0])} {r['trust-ncg'][1]['obj']:>4} {r['trust-ncg'][1]['hprod']:>6} |"
            f" {gap(r['r2'][0])} {r['r2'][1]['obj']:>6}"
        )
    solved = {
        key: sum(PROBLEMS[i].solved(rows[PROBLEMS[i].name][key][0]) for i in range(len(PROBLEMS)))
        for key in ("lbfgs", "L-BFGS-B", "trunk", "trust-ncg", "r2")
    }
    lines.append(f"solved (of {len(PROBLEMS)}): {solved}   (* = not solved)")
    report("classic test problems: statefulnlp vs scipy (float64, gtol 1e-10)", "\n".join(lines))
    return rows, solved


def test_there_are_at_least_twenty_problems():
    assert len(PROBLEMS) >= 20


@pytest.mark.parametrize("solver", ["lbfgs", "trunk"])
def test_solves_every_problem(results, solver):
    rows, _ = results
    unsolved = [p.name for p in PROBLEMS if not p.solved(rows[p.name][solver][0])]
    assert not unsolved, f"{solver} did not solve: {unsolved}"


def test_lbfgs_solves_at_least_as_many_as_scipy_lbfgsb(results):
    _, solved = results
    assert solved["lbfgs"] >= solved["L-BFGS-B"]


def test_trunk_solves_at_least_as_many_as_scipy_trust_ncg(results):
    _, solved = results
    assert solved["trunk"] >= solved["trust-ncg"]


def test_r2_makes_progress_everywhere(results):
    rows, _ = results
    with jax.enable_x64(True):
        for p in PROBLEMS:
            f_r2 = rows[p.name]["r2"][0]
            assert f_r2 <= float(p.f(jnp.asarray(p.x0))) + 1e-12
