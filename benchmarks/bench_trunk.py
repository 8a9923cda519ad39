"""Trust-region Newton-CG: statefulnlp trunk vs scipy trust-ncg with the same exact HVP.

Both use the forward-over-reverse Hessian-vector product of the same JAX
function (jitted for scipy). optimistix has no Hessian-vector-product trust
region, so its closest comparable method, BFGS with a classical trust region,
is reported beside them. Target ‖∇f‖₂ ≤ 1e-6, float64.

    python benchmarks/bench_trunk.py
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import cold_and_warm, report, save  # noqa: E402
from bench_lbfgs import GTOL, logistic_problem, rosenbrock_problem  # noqa: E402

import statefulnlp as snlp  # noqa: E402


def run_trunk(f, x0):
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (f(x), s), x0)

    def run():
        stats = snlp.solve(nlp, "trunk", atol=GTOL, rtol=0.0, max_iter=10_000)
        return stats.solution, stats.iter, stats.counters["obj"], stats.counters["hprod"]

    return run


def run_scipy(f, x0):
    import scipy.optimize as so

    vg = jax.jit(jax.value_and_grad(f))
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])
    counts = {"f": 0, "hv": 0}

    def fun(x):
        counts["f"] += 1
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g)

    def hessp(x, v):
        counts["hv"] += 1
        return np.asarray(hvp(jnp.asarray(x), jnp.asarray(v)))

    def run():
        counts["f"] = counts["hv"] = 0
        res = so.minimize(
            fun,
            np.asarray(x0),
            jac=True,
            hessp=hessp,
            method="trust-ncg",
            options={"gtol": GTOL, "maxiter": 10_000},
        )
        return jnp.asarray(res.x), int(res.nit), counts["f"], counts["hv"]

    return run


def run_optimistix_tr(f, x0):
    import optimistix as optx

    def optx_verbose(**kwargs):  # optimistix calls verbose(...) each step; stay quiet
        del kwargs

    class TrustBFGS(optx.AbstractBFGS):
        rtol: float
        atol: float
        norm: Callable = optx.max_norm
        use_inverse: bool = False
        descent: optx.DoglegDescent = optx.DoglegDescent()
        search: optx.ClassicalTrustRegion = optx.ClassicalTrustRegion()
        verbose: Callable = optx_verbose

    solver = TrustBFGS(rtol=1e-14, atol=1e-14)

    @jax.jit
    def solve(x):
        sol = optx.minimise(lambda y, args: f(y), solver, x, max_steps=100_000, throw=False)
        return sol.value, sol.stats["num_steps"]

    def run():
        x, k = solve(x0)
        return x, int(k), None, None

    return run


RUNNERS = {
    "statefulnlp trunk": run_trunk,
    "scipy trust-ncg": run_scipy,
    "optimistix BFGS+trust region": run_optimistix_tr,
}


def main(repeat: int = 3) -> None:
    all_rows = []
    for name, f, x0 in (logistic_problem(), rosenbrock_problem()):
        grad = jax.jit(jax.grad(f))
        rows = []
        for method, make in RUNNERS.items():
            try:
                runner = functools.partial(make, f, x0)
                cold, warm, (x, iters, fe, hv) = cold_and_warm(runner, repeat)
            except Exception as err:
                rows.append({"problem": name, "method": method, "error": repr(err)[:160]})
                continue
            g = float(jnp.linalg.norm(grad(x)))
            rows.append(
                {
                    "problem": name,
                    "method": method,
                    "cold (s)": cold,
                    "warm (s)": warm,
                    "iters": iters,
                    "f evals": fe if fe is not None else "",
                    "Hv": hv if hv is not None else "",
                    "final |g|": g,
                    "reached": g <= GTOL,
                }
            )
        base = next(r for r in rows if r["method"] == "scipy trust-ncg")
        for r in rows:
            if "warm (s)" in r:
                r["warm / scipy"] = r["warm (s)"] / base["warm (s)"]
        columns = ["method", "cold (s)", "warm (s)", "warm / scipy", "iters", "f evals", "Hv"]
        report(f"{name}: time to ‖∇f‖ <= {GTOL:g}", rows, [*columns, "final |g|", "reached"])
        all_rows += rows
    save("trunk", {"gtol": GTOL, "rows": all_rows})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
