"""A solver chain: Adam under propagate, then L-BFGS under freeze from Adam's point and state.

The model is the small BatchNorm + dropout MLP of conftest on the digits split of
the design; the state is (BatchNorm statistics, dropout key). Adam is stopped
early (as in the Adam-then-L-BFGS workflow), L-BFGS refines from there.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from conftest import digits_split, make_mlp, mlp_loss, mlp_predict

import statefulnlp as snlp

ADAM_ITERS, LBFGS_ITERS = 50, 30


def _snapshot(tree):
    """A host copy of every array leaf (typed PRNG keys as their key data)."""

    def host(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return np.array(leaf) if hasattr(leaf, "shape") else leaf

    return jax.tree_util.tree_map(host, tree)


def _same(a, b, rtol: float = 0.0) -> bool:
    """Equal pytrees: integer and key leaves exactly, float leaves within `rtol`."""
    la, ta = jax.tree_util.tree_flatten(_snapshot(a))
    lb, tb = jax.tree_util.tree_flatten(_snapshot(b))

    def close(x, y):
        if np.issubdtype(np.asarray(x).dtype, np.inexact):
            return np.allclose(x, y, rtol=rtol, atol=0.0)
        return np.array_equal(x, y)

    return ta == tb and all(close(x, y) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def chain():
    X_train, X_test, y_train, y_test = digits_split()
    model, state = make_mlp(0)
    nlp = snlp.EquinoxNLPModel(
        model, state, mlp_loss, (X_train, y_train), test_data=(X_test, y_test), predict=mlp_predict
    )
    x0_before, state0_before = _snapshot(nlp.x0), _snapshot(nlp.state0)

    a = snlp.solve(
        nlp, snlp.solvers.Optax(optax.adam(3e-3)), max_iter=ADAM_ITERS, atol=0.0, rtol=0.0
    )
    first: list[snlp.Stats] = []

    def record_first(problem, solver, stats):
        if not first:
            first.append(stats)

    b = snlp.solve(
        nlp,
        "lbfgs",
        x0=a.solution,
        state=a.state,
        callback=record_first,
        max_iter=LBFGS_ITERS,
        atol=0.0,
        rtol=0.0,
    )
    return {
        "nlp": nlp,
        "a": a,
        "b": b,
        "first": first[0],
        "x0_before": x0_before,
        "state0_before": state0_before,
    }


def test_each_stage_gets_its_default_policy(chain):
    assert chain["a"].state_policy == snlp.StatePolicy.PROPAGATE
    assert chain["b"].state_policy == snlp.StatePolicy.FREEZE
    assert chain["a"].iter == ADAM_ITERS and chain["b"].iter == LBFGS_ITERS


def test_lbfgs_reaches_at_least_adams_accuracy(chain):
    nlp, a, b = chain["nlp"], chain["a"], chain["b"]
    acc_adam = nlp.accuracy(a.solution, a.state)
    acc_chain = nlp.accuracy(b.solution, b.state)
    assert acc_chain >= acc_adam, (acc_adam, acc_chain)
    # and L-BFGS really refined: the training loss at its point (with its state) is lower
    assert float(nlp.obj(b.solution, b.state)[0]) < float(nlp.obj(a.solution, a.state)[0])


def test_lbfgs_started_from_adams_point_and_state(chain):
    nlp, a, first = chain["nlp"], chain["a"], chain["first"]
    # L-BFGS's first step has no curvature pairs: x1 = x_start - t * g(x_start, s_start)
    # with t > 0, the gradient of the first frozen function at Adam's point and state.
    g_start, _ = nlp.grad(a.solution, a.state)
    step = np.asarray(first.solution - a.solution, np.float64)
    g = np.asarray(g_start, np.float64)
    cosine = step @ -g / (np.linalg.norm(step) * np.linalg.norm(g))
    assert cosine > 1.0 - 1e-4
    # Under freeze, the state after the first accepted step is the state returned by
    # the loss at x1 under the *starting* state: Adam's final state.
    # (Float leaves to rounding: the loop and nlp.obj are compiled separately.)
    _, expected_state = nlp.obj(first.solution, a.state)
    assert _same(first.state, expected_state, rtol=1e-5)
    # ... and not what a cold start from the problem's own state would give.
    _, cold_state = nlp.obj(first.solution, nlp.state0)
    assert not _same(first.state, cold_state, rtol=1e-5)


def test_the_problem_is_unchanged(chain):
    nlp = chain["nlp"]
    assert _same(nlp.x0, chain["x0_before"])
    assert _same(nlp.state0, chain["state0_before"])
    assert not _same(nlp.x0, chain["b"].solution)
