"""Evaluations until solved on the Moré–Garbow–Hillstrom problems: statefulnlp vs scipy.

For every problem of `tests/mgh.py` (float64, the standard starting points):

* statefulnlp `LBFGS()` (10 pairs) against scipy L-BFGS-B (maxcor=10);
* statefulnlp `Trunk()` against scipy trust-ncg, both with the same exact
  Hessian-vector product (jitted forward-over-reverse of the same JAX function).

Both sides run with tight tolerances (gtol 1e-10, L-BFGS-B ftol=0) and are read
at iteration boundaries (our callback after each iteration, scipy's callback
after each of its iterations): the figure is the number of objective evaluations
made when an iterate *first* counts as solved, f − f* ≤ 1e-6·max(1, |f*|)
(a documented local minimum counts too, see `mgh.Problem.solved`), so different
final stopping rules do not distort it. Hessian-vector products are counted the
same way for the trust-region pair. The summary is the geometric mean over the
problems both sides solve of ours / scipy (goal: ≤ 1.0); problems only one side
solves are listed.

    python benchmarks/bench_mgh.py
"""

from __future__ import annotations

import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from _bench import save, table

import statefulnlp as snlp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
from mgh import PROBLEMS

GTOL = 1e-10
MAX_ITER = 20_000


def ours(problem, solver) -> dict:
    """Evaluations (obj, hprod) at the first iterate that counts as solved, and at the end."""
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (problem.f(x), s), jnp.asarray(problem.x0))
    first: dict = {}

    def callback(nlp_, solver_, stats):
        if not first and problem.solved(float(stats.objective)):
            first.update(obj=stats.counters["obj"], hprod=stats.counters["hprod"], iter=stats.iter)

    stats = snlp.solve(nlp, solver, atol=GTOL, rtol=0.0, max_iter=MAX_ITER, callback=callback)
    if not first and stats.iter == 0 and problem.solved(float(stats.objective)):
        first.update(obj=stats.counters["obj"], hprod=0, iter=0)
    return {
        "solved": bool(first),
        "first": first,
        "final_obj": stats.counters["obj"],
        "final_f": float(stats.objective),
        "status": stats.status.value,
    }


def scipy_run(problem, method) -> dict:
    import scipy.optimize as so

    vg = jax.jit(jax.value_and_grad(problem.f))
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(problem.f), (x,), (v,))[1])
    value = jax.jit(problem.f)
    counts = {"obj": 0, "hprod": 0, "iter": 0}
    first: dict = {}

    def fun(x):
        counts["obj"] += 1
        f, g = vg(jnp.asarray(x))
        return float(f), np.asarray(g)

    def hessp(x, v):
        counts["hprod"] += 1
        return np.asarray(hvp(jnp.asarray(x), jnp.asarray(v)))

    def callback(xk):
        counts["iter"] += 1
        if not first and problem.solved(float(value(jnp.asarray(xk)))):
            first.update(obj=counts["obj"], hprod=counts["hprod"], iter=counts["iter"])

    x0 = np.asarray(problem.x0, float)
    if method == "L-BFGS-B":
        options = {
            "maxcor": 10,
            "gtol": GTOL,
            "ftol": 0.0,
            "maxiter": MAX_ITER,
            "maxfun": 2 * MAX_ITER,
        }
        res = so.minimize(fun, x0, jac=True, method=method, callback=callback, options=options)
    else:
        options = {"gtol": GTOL, "maxiter": MAX_ITER}
        res = so.minimize(
            fun, x0, jac=True, hessp=hessp, method=method, callback=callback, options=options
        )
    return {
        "solved": bool(first),
        "first": first,
        "final_obj": counts["obj"],
        "final_f": float(res.fun),
        "status": str(res.message)[:40],
    }


PAIRS = {
    "lbfgs": (lambda: snlp.solvers.LBFGS(), "L-BFGS-B"),
    "trunk": (lambda: snlp.solvers.Trunk(), "trust-ncg"),
}


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def compare(name: str, problems=PROBLEMS) -> dict:
    make, method = PAIRS[name]
    rows, ratios, hv_ratios, only = [], [], [], []
    for p in problems:
        a, b = ours(p, make()), scipy_run(p, method)
        row = {
            "problem": p.name,
            "n": p.n,
            f"{name} #f": a["first"].get("obj", "—"),
            f"{method} #f": b["first"].get("obj", "—"),
        }
        if name == "trunk":
            row[f"{name} #Hv"] = a["first"].get("hprod", "—")
            row[f"{method} #Hv"] = b["first"].get("hprod", "—")
        if a["solved"] and b["solved"]:
            ratio = a["first"]["obj"] / b["first"]["obj"]
            ratios.append(ratio)
            row["ratio #f"] = ratio
            if name == "trunk" and b["first"]["hprod"] > 0 and a["first"]["hprod"] > 0:
                hv_ratios.append(a["first"]["hprod"] / b["first"]["hprod"])
                row["ratio #Hv"] = hv_ratios[-1]
        elif a["solved"] != b["solved"]:
            only.append(f"{p.name}: solved by {name if a['solved'] else method} only")
        row["ours final"] = a["status"]
        rows.append(row)
    summary = {
        "pair": f"{name} vs scipy {method}",
        "problems": len(problems),
        "solved (ours)": sum(isinstance(r[f"{name} #f"], int) for r in rows),
        "solved (scipy)": sum(isinstance(r[f"{method} #f"], int) for r in rows),
        "geomean ratio #f": geomean(ratios),
        "compared": len(ratios),
    }
    if name == "trunk":
        summary["geomean ratio #Hv"] = geomean(hv_ratios)
    return {"rows": rows, "summary": summary, "only one side": only}


def main() -> None:
    jax.config.update("jax_enable_x64", True)  # here, not at import (tests import this)
    results = {}
    for name in PAIRS:
        out = compare(name)
        results[name] = out
        method = PAIRS[name][1]
        print(f"\n{name} vs scipy {method}: objective evaluations until first solved")
        columns = ["problem", "n", f"{name} #f", f"{method} #f", "ratio #f"]
        if name == "trunk":
            columns += [f"{name} #Hv", f"{method} #Hv", "ratio #Hv"]
        table(out["rows"], [*columns, "ours final"])
        for line in out["only one side"]:
            print("  " + line)
        print("summary:", out["summary"])
    save("mgh", {"gtol": GTOL, "results": results})


if __name__ == "__main__":
    main()
