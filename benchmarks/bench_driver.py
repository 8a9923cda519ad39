"""Per-iteration driver overhead, in microseconds.

1. Fully jitted path (no callback): statefulnlp gradient descent on a tiny
   quadratic (n = 10) for 100 000 iterations, against a hand-written
   `lax.while_loop` making the same update with the same jitted gradient.
   The difference per iteration is what the driver adds on the device
   (policy bookkeeping, counters, stopping tests).
2. Callback path: the same with a no-op callback (one host round trip per
   iteration) against a Python loop calling a jitted step function.

    python benchmarks/bench_driver.py
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from _bench import save, table

import statefulnlp as snlp

N = 10


def f(x):
    return 0.5 * jnp.sum(x**2)


# x <- x - 2x = -x: the iterate flips sign forever, so no stopping test ends the run
# early and both loops make exactly the same number of iterations.
LR = 2.0


def ours(iters, callback=None):
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (f(x), s), jnp.ones(N))
    solver = snlp.solvers.GradientDescent(LR)
    snlp.solve(nlp, solver, max_iter=5, atol=0, rtol=0, callback=callback)
    t = time.perf_counter()
    stats = snlp.solve(nlp, solver, max_iter=iters, atol=0, rtol=0, callback=callback)
    jax.block_until_ready(stats.solution)
    return time.perf_counter() - t


def raw_while(iters):
    grad = jax.grad(f)

    @jax.jit
    def run(x):
        return jax.lax.fori_loop(0, iters, lambda i, x: x - LR * grad(x), x)

    run(jnp.ones(N)).block_until_ready()
    t = time.perf_counter()
    run(jnp.ones(N)).block_until_ready()
    return time.perf_counter() - t


def raw_python_loop(iters):
    grad = jax.grad(f)
    step = jax.jit(lambda x: (x - LR * grad(x), f(x)))
    x = jnp.ones(N)
    step(x)
    t = time.perf_counter()
    for _ in range(iters):
        x, value = step(x)
        float(value)  # one small transfer per iteration, as the driver does
    return time.perf_counter() - t


def main(iters: int = 100_000, callback_iters: int = 2_000) -> None:
    t_ours = ours(iters)
    t_raw = raw_while(iters)
    t_cb = ours(callback_iters, callback=lambda p, s, st: None)
    t_py = raw_python_loop(callback_iters)
    rows = [
        {
            "path": "fully jitted (no callback)",
            "iterations": iters,
            "statefulnlp (us/iter)": 1e6 * t_ours / iters,
            "hand-written (us/iter)": 1e6 * t_raw / iters,
            "overhead (us/iter)": 1e6 * (t_ours - t_raw) / iters,
        },
        {
            "path": "callback every iteration",
            "iterations": callback_iters,
            "statefulnlp (us/iter)": 1e6 * t_cb / callback_iters,
            "hand-written (us/iter)": 1e6 * t_py / callback_iters,
            "overhead (us/iter)": 1e6 * (t_cb - t_py) / callback_iters,
        },
    ]
    print(f"gradient descent on a {N}-variable quadratic")
    table(rows, list(rows[0]))
    save("driver", {"n": N, "rows": rows})


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
