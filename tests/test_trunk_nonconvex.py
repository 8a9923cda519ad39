"""Trunk (exact Hessian-vector products) on a small recurrent model with a new minibatch
every iteration, under `freeze`.

Issue 16: trunk diverged on such a problem (‖g‖ 0.7 → 9, a test error 100× a naive
baseline) while L-BFGS and LSR1+trunk were fine. Causes found: the CG forcing term
decreased by 0.9 at every iteration whatever ‖g‖ did, so CG solved each minibatch's
Newton system ever more exactly and the iterates chased each batch; after an Armijo
backtrack the radius stayed where it was, so the next iteration again tried a boundary
step that failed; and steps judged on a gradient estimate could increase f_k.

The model: a GRU over windows of a noisy signal, each window from a zero hidden state;
its state is a running mean of the inputs (used to center them, as BatchNorm's
statistics), updated at each accepted step, so f_k depends on s_k.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from conftest import import_example

import statefulnlp as snlp

# The GRU forecaster of examples/gru_stateful.py, smaller.
Forecaster = import_example("gru_stateful").Forecaster

STREAMS, WINDOW, HIDDEN = 16, 12, 8


def _windows(seed=0, n_windows=6):
    t = np.arange(STREAMS * WINDOW * n_windows + 1, dtype=np.float32)
    rng = np.random.default_rng(seed)
    signal = np.sin(0.3 * t) + 0.5 * np.sin(0.05 * t + 1.0) + 0.05 * rng.normal(size=t.size)
    signal = signal.astype(np.float32)
    per = (signal.size - 1) // STREAMS
    x = signal[: STREAMS * per].reshape(STREAMS, per)
    y = signal[1 : STREAMS * per + 1].reshape(STREAMS, per)
    return [
        {"x": x[:, k : k + WINDOW], "y": y[:, k : k + WINDOW]}
        for k in range(0, per - WINDOW + 1, WINDOW)
    ]


def _loss(model, mean, batch):
    x = batch["x"] - mean
    _, preds = jax.vmap(model.run)(jnp.zeros((STREAMS, HIDDEN)), x)
    new_mean = 0.9 * mean + 0.1 * jnp.mean(batch["x"])
    return jnp.mean((preds + mean - batch["y"]) ** 2), jax.lax.stop_gradient(new_mean)


def _data_loss(model, mean, windows):
    batches = [jax.tree_util.tree_map(jnp.asarray, w) for w in windows]
    return float(np.mean([float(_loss(model, mean, b)[0]) for b in batches]))


def _train(solver, windows, iters, seed):
    nlp = snlp.EquinoxNLPModel(
        Forecaster(jax.random.key(seed), hidden=HIDDEN), jnp.zeros(()), _loss, windows
    )
    before = {"x": nlp.x0, "state": nlp.state0}
    decreases = []

    def callback(problem, solver_, stats):
        # f_k is the loss on this iteration's batch from this iteration's state s_k
        # (the state the previous iteration ended with): compare it at x_k and x_{k+1}.
        if not np.array_equal(np.asarray(stats.solution), np.asarray(before["x"])):
            f_old, _ = problem.obj(before["x"], before["state"])
            f_new, _ = problem.obj(stats.solution, before["state"])
            decreases.append(float(f_old) - float(f_new))
        before["x"], before["state"] = stats.solution, stats.state
        problem.next_batch()

    stats = snlp.solve(nlp, solver, callback=callback, max_iter=iters, atol=0.0, rtol=0.0)
    return _data_loss(nlp.to_model(stats.solution), stats.state, windows), decreases, stats


def test_trunk_decreases_every_minibatch_function_and_matches_lbfgs():
    windows = _windows()
    naive = float(np.mean([np.mean((w["x"] - w["y"]) ** 2) for w in windows]))
    lbfgs, _, _ = _train("lbfgs", windows, 80, seed=0)
    trunk, decreases, stats = _train("trunk", windows, 80, seed=0)
    assert stats.accepted >= 60 and len(decreases) == stats.accepted
    assert min(decreases) > 0  # f_k(x_{k+1}) < f_k(x_k) at every accepted step
    assert lbfgs < naive
    assert trunk <= 1.5 * lbfgs, (trunk, lbfgs, naive)
