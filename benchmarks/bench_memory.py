"""Peak memory of the compiled programs, read from XLA's `memory_analysis()`.

* L-BFGS: the compiled solve loop on a separable quadratic for several n and
  mem; the total (arguments + temporaries) should grow like (2·mem + c)·n.
* hprod vs the gradient: the compiled forward-over-reverse HVP of the digits
  CNN against the compiled loss+gradient (target: ≤ 3× the gradient's
  temporaries).

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _bench import save, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))
from digits_cnn import LeNet, loss

import statefulnlp as snlp
from statefulnlp._evaluate import StateRule
from statefulnlp.datasets import digits_split
from statefulnlp.solvers._loop import Inputs, Limits, Program, compiled


def mib(nbytes: int) -> float:
    return nbytes / 2**20


def analysis(compiled) -> dict[str, int]:
    m = compiled.memory_analysis()
    return {
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "temp": m.temp_size_in_bytes,
        "alias": m.alias_size_in_bytes,
    }


def lbfgs_memory(n: int, mem: int) -> dict:
    def fn(x, s, b):
        return 0.5 * jnp.sum(jnp.arange(1, n + 1, dtype=x.dtype) * x**2), s

    nlp = snlp.StatefulNLPModel(fn, jnp.ones(n, jnp.float32))
    rule = StateRule(snlp.StatePolicy.FREEZE, one_step=False)
    program = Program(nlp.objective, snlp.solvers.LBFGS(mem=mem), rule, None)
    tol = (np.float32(1e-6), np.float32(0.0))
    jitted = compiled(program)
    inputs = Inputs(None, nlp.consts)
    limits = Limits(np.int32(10), np.int32(10), np.int32(100))
    carry, _ = jitted.first((nlp.x0, nlp.state0, tol, None), inputs, limits)
    lowered = jitted.run.lower(carry, inputs, limits)
    a = analysis(lowered.compile())
    total = a["argument"] + a["temp"]
    return {
        "n": n,
        "mem": mem,
        **{k + " (MiB)": mib(v) for k, v in a.items()},
        "total / (n·4 bytes)": total / (4 * n),
    }


def hvp_vs_grad() -> dict:
    X, _, y, _ = digits_split(images=True)
    batch = (jnp.asarray(X[:256]), jnp.asarray(y[:256]))
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(0))
    state = (bn_state, jax.random.key(1))
    nlp = snlp.EquinoxNLPModel(model, state, loss, batch)
    x, v = nlp.x0, jnp.ones(nlp.nvar)
    consts = nlp.consts
    grad = analysis(nlp._evaluator("objgrad").lower(x, state, batch, consts).compile())
    hvp = analysis(nlp._evaluator("hprod").lower(x, v, state, batch, consts).compile())
    return {
        "nvar": nlp.nvar,
        "objgrad temp (MiB)": mib(grad["temp"]),
        "hprod temp (MiB)": mib(hvp["temp"]),
        "hprod / objgrad temp": hvp["temp"] / max(grad["temp"], 1),
    }


def main() -> None:
    rows = [lbfgs_memory(n, mem) for n in (10_000, 100_000, 1_000_000) for mem in (5, 10, 20)]
    print("L-BFGS solve loop (float32): memory_analysis of the compiled program")
    table(rows, ["n", "mem", "argument (MiB)", "temp (MiB)", "total / (n·4 bytes)"])
    # Fit total ≈ a·mem + b (in units of n floats) at the largest n.
    big = [r for r in rows if r["n"] == 1_000_000]
    slope, intercept = np.polyfit(
        [r["mem"] for r in big], [r["total / (n·4 bytes)"] for r in big], 1
    )
    print(f"at n = 1e6: total ≈ {slope:.2f}·mem + {intercept:.1f} vectors of n floats")
    h = hvp_vs_grad()
    print("\ndigits CNN, batch 256: temporaries of the compiled HVP vs loss+gradient")
    table([h], list(h))
    save(
        "memory",
        {"lbfgs": rows, "lbfgs_fit": {"per_mem": slope, "constant": intercept}, "hvp_vs_grad": h},
    )


if __name__ == "__main__":
    main()
