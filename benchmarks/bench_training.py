"""Minibatch training throughput on the digits CNN (batch 256, float32).

* statefulnlp L-BFGS under freeze, a new minibatch every iteration (callback);
* statefulnlp with the optax adapter (adam) under propagate, same callback;
* a hand-written jitted adam training step in a Python loop over the same batches
  (the baseline for the adapter: same arithmetic, no statefulnlp).

Reports iterations/s and samples/s after a warm-up (compilation excluded).

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _bench import save, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))
from digits_cnn import LeNet, loss

import statefulnlp as snlp
from statefulnlp.datasets import digits_split

BATCH = 256


def problem():
    X, _, y, _ = digits_split(images=True)
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(0))
    loader = snlp.DataLoader((X, y), BATCH, seed=0)
    return (
        snlp.EquinoxNLPModel(model, (bn_state, jax.random.key(1)), loss, loader),
        loader,
        model,
        bn_state,
    )


def ours(solver, iters):
    nlp, *_ = problem()

    def advance(p, s, st):
        p.next_batch()

    snlp.solve(nlp, solver, callback=advance, max_iter=3, atol=0, rtol=0)  # compile
    t = time.perf_counter()
    stats = snlp.solve(nlp, solver, callback=advance, max_iter=iters, atol=0, rtol=0)
    jax.block_until_ready(stats.solution)
    return time.perf_counter() - t, stats.counters["obj"]


def handwritten_adam(iters, lr=3e-3):
    _, loader, model, bn_state = problem()
    params, static = eqx.partition(model, eqx.is_inexact_array)
    tx = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, state, batch):
        def f(p):
            return loss(eqx.combine(p, static), state, batch)

        (value, state), grads = jax.value_and_grad(f, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, state, value

    state = (bn_state, jax.random.key(1))
    opt_state = tx.init(params)
    order = jnp.asarray(loader.order(0))
    params, opt_state, state, _ = step(params, opt_state, state, loader.batch(0, 0, order))
    t = time.perf_counter()
    epoch, index = 0, 0
    for _ in range(iters):
        params, opt_state, state, _value = step(
            params, opt_state, state, loader.batch(epoch, index, order)
        )
        index += 1
        if index == len(loader):
            index, epoch = 0, epoch + 1
            order = jnp.asarray(loader.order(epoch))
    jax.block_until_ready(params)
    return time.perf_counter() - t, iters


def main(iters: int = 200) -> None:
    runs = {
        "hand-written jitted adam loop": handwritten_adam(iters),
        "statefulnlp Optax(adam), propagate": ours(snlp.solvers.Optax(optax.adam(3e-3)), iters),
        "statefulnlp LBFGS, freeze": ours(snlp.solvers.LBFGS(mem=10), iters),
    }
    base = runs["hand-written jitted adam loop"][0]
    rows = []
    for name, (seconds, evals) in runs.items():
        rows.append(
            {
                "method": name,
                "iter/s": iters / seconds,
                "samples/s": iters * BATCH / seconds,
                "evals/iter": evals / iters,
                "time / hand-written": seconds / base,
            }
        )
    print(f"digits CNN, batch {BATCH}, {iters} iterations after warm-up")
    table(rows, ["method", "iter/s", "samples/s", "evals/iter", "time / hand-written"])
    save("training", {"batch": BATCH, "iterations": iters, "rows": rows})


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
