"""Non-finite values, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_mlp, mlp_loss

import statefulnlp as snlp


def _poisoned_problem():
    """Batch 2 of 4 is NaN: reached when the callback advances the data."""
    batches = [jnp.full((3,), v) for v in (1.0, 2.0, jnp.nan, 3.0)]

    def fn(x, s, batch):
        return jnp.sum((x - batch) ** 2) + 0.1 * jnp.sum(x**4), s + 1

    return snlp.StatefulNLPModel(fn, jnp.zeros(3), state=jnp.int32(0), data=batches)


@pytest.mark.parametrize("solver", ["lbfgs", "r2", "trunk"])
def test_non_finite_after_a_batch_change_keeps_the_last_good_iterate(solver):
    nlp = _poisoned_problem()
    history = []

    def callback(p, s, stats):
        history.append((np.asarray(stats.solution), int(stats.state)))
        p.next_batch()

    stats = snlp.solve(nlp, solver, callback=callback, max_iter=50)
    assert stats.status == "exception" and "non-finite" in stats.message
    assert stats.iter == 2
    # The accepted iterate of iteration 2 (finite under its own batch) is returned.
    np.testing.assert_array_equal(np.asarray(stats.solution), history[-1][0])
    assert int(stats.state) == history[-1][1]
    assert np.isfinite(stats.objective) and np.isfinite(stats.dual_feas)


def test_non_finite_after_a_batch_change_one_step_solver():
    nlp = _poisoned_problem()
    history = []

    def callback(p, s, stats):
        history.append(np.asarray(stats.solution))
        p.next_batch()

    stats = snlp.solve(nlp, snlp.solvers.Optax(optax.sgd(0.1)), callback=callback, max_iter=50)
    assert stats.status == "exception"
    # x_2 was never evaluated finitely: the solve returns x_1, the last good iterate.
    np.testing.assert_array_equal(np.asarray(stats.solution), history[0])
    assert np.isfinite(stats.objective)


def test_non_finite_trials_are_survived():
    # log barrier: NaN/inf outside the domain, the minimum at x = 1.
    def fn(x, s, b):
        return jnp.sum(x - jnp.log(x)), s

    for solver in ("lbfgs", "r2", "trunk"):
        nlp = snlp.StatefulNLPModel(fn, jnp.full((3,), 8.0))
        stats = snlp.solve(nlp, solver, max_iter=500)
        assert stats.status == "first_order", solver
        np.testing.assert_allclose(stats.solution, 1.0, atol=1e-3)


def _mlp_run(solver):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=64)
    model, state = make_mlp()
    nlp = snlp.EquinoxNLPModel(model, state, mlp_loss, snlp.DataLoader((X, y), 16, seed=1))
    xs = []

    def callback(p, s, stats):
        xs.append(np.asarray(stats.solution))
        p.next_batch()

    stats = snlp.solve(nlp, solver, callback=callback, max_iter=8)
    return xs, stats


@pytest.mark.parametrize("solver", ["lbfgs", "r2", "trunk", "adam"])
def test_same_inputs_give_bitwise_identical_runs(solver):
    make = (lambda: snlp.solvers.Optax(optax.adam(1e-2))) if solver == "adam" else (lambda: solver)
    xs1, s1 = _mlp_run(make())
    xs2, s2 = _mlp_run(make())
    for a, b in zip(xs1, xs2):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(s1.state), jax.tree_util.tree_leaves(s2.state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (s1.objective, s1.dual_feas, s1.iter, s1.counters) == (
        s2.objective,
        s2.dual_feas,
        s2.iter,
        s2.counters,
    )
