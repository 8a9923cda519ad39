"""Evaluation overhead: nlp.objgrad / nlp.hprod vs raw jitted JAX on the same batch.

The CNN of examples/digits_cnn.py on the digits data, batch 256, float32. The
baselines are what a user would write by hand on the parameter pytree:
`jax.jit(jax.value_and_grad(loss, has_aux=True))` and a jitted
forward-over-reverse `jax.jvp` of the gradient. Calls are interleaved and the
median per-call time is compared. Target: ratio <= 1.02 (> 1.10 is a bug).

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _bench import save, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))
from digits_cnn import LeNet, loss

import statefulnlp as snlp
from statefulnlp.datasets import digits_split


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved to share machine noise."""
    samples = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(repeat: int = 300) -> None:
    X, _, y, _ = digits_split(images=True)
    batch = (jnp.asarray(X[:256]), jnp.asarray(y[:256]))
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(0))
    state = (bn_state, jax.random.key(1))
    nlp = snlp.EquinoxNLPModel(model, state, loss, batch)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def tree_loss(p, s, b):
        return loss(eqx.combine(p, static), s, b)

    raw_vg = jax.jit(jax.value_and_grad(tree_loss, has_aux=True))
    grad_tree = jax.grad(tree_loss, has_aux=True)
    raw_hvp = jax.jit(
        lambda p, v, s, b: jax.jvp(lambda q: grad_tree(q, s, b), (p,), (v,), has_aux=True)
    )

    x = nlp.x0
    v_flat = jnp.asarray(np.random.default_rng(0).normal(size=nlp.nvar), jnp.float32)
    v_tree = nlp.unflatten(v_flat)
    # Same numbers from both paths (and everything compiled before timing).
    (f_raw, _), g_raw = raw_vg(params, state, batch)
    f_ours, g_ours, _ = nlp.objgrad(x, state)
    assert np.allclose(f_raw, f_ours, rtol=1e-6)
    assert np.allclose(
        jax.flatten_util.ravel_pytree(g_raw)[0].sum(), g_ours.sum(), rtol=1e-4, atol=1e-5
    )
    raw_hvp(params, v_tree, state, batch)
    nlp.hprod(x, v_flat, state)

    t = interleaved(
        {
            "raw objgrad": lambda: raw_vg(params, state, batch),
            "nlp.objgrad": lambda: nlp.objgrad(x, state),
            "raw hprod": lambda: raw_hvp(params, v_tree, state, batch),
            "nlp.hprod": lambda: nlp.hprod(x, v_flat, state),
        },
        repeat,
    )
    rows = [
        {
            "what": "objgrad",
            "raw (ms)": 1e3 * t["raw objgrad"],
            "statefulnlp (ms)": 1e3 * t["nlp.objgrad"],
            "ratio": t["nlp.objgrad"] / t["raw objgrad"],
        },
        {
            "what": "hprod",
            "raw (ms)": 1e3 * t["raw hprod"],
            "statefulnlp (ms)": 1e3 * t["nlp.hprod"],
            "ratio": t["nlp.hprod"] / t["raw hprod"],
        },
    ]
    print(
        f"CNN on digits, batch 256, float32, {nlp.nvar} variables, median of {repeat} interleaved calls"
    )
    table(rows, ["what", "raw (ms)", "statefulnlp (ms)", "ratio"])
    save("overhead", {"nvar": nlp.nvar, "batch": 256, "repeat": repeat, "rows": rows})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
