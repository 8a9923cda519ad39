"""Regression test for the motivating case: a dropout mask kept in the state, solved by L-BFGS.

Each evaluation returns a freshly sampled mask. A line search that fed every
evaluation's state into the next would compare losses of different networks.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statefulnlp as snlp

P_DROP = 0.3
HIDDEN = 12


def dropout_loss(x, state, batch):
    mask, key = state
    X, y = batch
    h = jnp.tanh(X @ x["W1"] + x["b1"]) * mask / (1.0 - P_DROP)
    logits = h @ x["W2"]
    loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])
    key, sub = jax.random.split(key)
    new_mask = jax.random.bernoulli(sub, 1.0 - P_DROP, (HIDDEN,)).astype(mask.dtype)
    return loss, (new_mask, key)


def make_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
    x0 = {
        "W1": (0.5 * rng.normal(size=(5, HIDDEN))).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "W2": (0.5 * rng.normal(size=(HIDDEN, 2))).astype(np.float32),
    }
    key = jax.random.key(3)
    mask0 = jax.random.bernoulli(key, 1.0 - P_DROP, (HIDDEN,)).astype(jnp.float32)
    return snlp.StatefulNLPModel(dropout_loss, x0, state=(mask0, jax.random.key(4)), data=(X, y))


def test_propagate_is_refused_before_any_evaluation():
    nlp = make_problem()
    with pytest.raises(snlp.IncompatibleStatePolicyError) as info:
        snlp.solve(nlp, "lbfgs", state_policy="propagate")
    message = str(info.value)
    assert (
        "'lbfgs'" in message
        and "multi-evaluation" in message
        and "state_policy='freeze'" in message
    )
    assert nlp.counters.obj == 0 and nlp.counters.grad == 0


def test_freeze_gives_one_deterministic_function_per_iteration():
    nlp = make_problem()
    history = [(nlp.x0, nlp.state0, 0)]

    def record(nlp_, solver, stats):
        history.append((stats.solution, stats.state, stats.accepted))

    stats = snlp.solve(nlp, "lbfgs", state_policy="freeze", callback=record, max_iter=30)
    assert stats.iter == 30 or stats.status == "first_order"
    crossing_increases = 0
    for (x_k, s_k, _), (x_next, s_next, acc_next) in itertools.pairwise(history):
        f_k, g_k, _ = nlp.objgrad(x_k, s_k)
        f_k_next, expected = nlp.obj(x_next, s_k)  # the same frozen state s_k
        if acc_next > 0 and not np.array_equal(x_next, x_k):
            # Armijo on the frozen function f_k: f_k(x+) <= f_k(x) + c1 g_k'(x+ - x).
            assert float(f_k_next) <= float(f_k) + 1e-4 * float(g_k @ (x_next - x_k)) + 1e-7
            # The mask advanced exactly once: s_{k+1} is what f_k returned at x_{k+1}.
            np.testing.assert_array_equal(s_next[0], expected[0])
        f_moving, _ = nlp.obj(x_next, s_next)
        crossing_increases += float(f_moving) > float(f_k)
    # Comparing values across states (what propagate would do) is not a descent test:
    # with a new mask the loss goes up in some iterations even though every step
    # decreased its own frozen function.
    assert crossing_increases > 0


def test_reject_names_the_changed_leaves():
    nlp = make_problem()
    with pytest.raises(snlp.StateMutationError) as info:
        snlp.solve(nlp, "lbfgs", state_policy="reject")
    assert set(info.value.leaves) == {"[0]", "[1]"}
    assert "state_policy='freeze'" in str(info.value)
