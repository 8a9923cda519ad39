"""Warm starts: solve(nlp, solver, x0=..., state=...) starts anywhere, changes nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statefulnlp as snlp


def _fn(x, state, batch):
    loss = jnp.sum((x["w"] - batch) ** 2) + jnp.sum(jnp.cos(x["b"]))
    return loss, {"count": state["count"] + 1, "last": x["w"][0]}


def _problem():
    return snlp.StatefulNLPModel(
        _fn,
        {"w": jnp.zeros(3), "b": jnp.full(2, 0.5)},
        state={"count": jnp.int32(0), "last": jnp.float32(0.0)},
        data=jnp.arange(3.0),
    )


def _first_objective(nlp, **kwargs):
    seen = []
    snlp.solve(nlp, "lbfgs", max_iter=1, callback=lambda p, s, st: seen.append(st), **kwargs)
    return seen[0]


def test_flat_and_pytree_x0_start_at_the_same_point():
    nlp = _problem()
    start = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array([0.1, 0.2])}
    flat = nlp.flatten(start)
    a = snlp.solve(nlp, "lbfgs", x0=start, max_iter=3)
    b = snlp.solve(nlp, "lbfgs", x0=flat, max_iter=3)
    np.testing.assert_array_equal(np.asarray(a.solution), np.asarray(b.solution))
    # The first iteration ran from the given point: f there is f(start).
    f_start = float(nlp.obj(flat, nlp.state0)[0])
    assert _first_objective(nlp, x0=flat).objective != f_start  # one step was taken
    zero_steps = snlp.solve(nlp, "lbfgs", x0=flat, max_iter=0)
    assert zero_steps.objective == f_start
    np.testing.assert_array_equal(np.asarray(zero_steps.solution), np.asarray(flat))


def test_state_given_is_where_the_solve_starts():
    nlp = _problem()
    state = {"count": jnp.int32(40), "last": jnp.float32(7.0)}
    stats = snlp.solve(nlp, "lbfgs", state=state, max_iter=3)
    # Under freeze the count advances once per accepted step, from 40.
    assert int(stats.state["count"]) == 40 + stats.accepted


def test_the_problem_and_the_inputs_are_unchanged():
    nlp = _problem()
    x0, state0 = np.asarray(nlp.x0).copy(), jax.tree_util.tree_map(np.asarray, nlp.state0)
    start = np.full(5, 2.0, np.float32)
    state = {"count": np.int32(3), "last": np.float32(1.0)}
    snlp.solve(nlp, "lbfgs", x0=start, state=state, max_iter=5)
    np.testing.assert_array_equal(np.asarray(nlp.x0), x0)
    assert int(nlp.state0["count"]) == int(state0["count"])
    np.testing.assert_array_equal(start, np.full(5, 2.0, np.float32))
    assert int(state["count"]) == 3


def test_chain_adam_then_lbfgs_continues_from_adams_point():
    nlp = _problem()
    a = snlp.solve(nlp, snlp.solvers.Optax(optax.adam(0.1)), max_iter=30)
    b = snlp.solve(nlp, "lbfgs", x0=a.solution, state=a.state)
    assert a.state_policy == "propagate" and b.state_policy == "freeze"
    assert b.objective <= a.objective and b.status == "first_order"
    assert int(b.state["count"]) == int(a.state["count"]) + b.accepted


def test_warm_started_solve_resumes_bit_for_bit(tmp_path):
    path = tmp_path / "warm.ckpt"
    start = jnp.array([3.0, -1.0, 2.0, 1.0, -2.0])
    state = {"count": jnp.int32(5), "last": jnp.float32(0.0)}
    full = snlp.solve(_problem(), "lbfgs", x0=start, state=state, max_iter=6, atol=0, rtol=0)
    snlp.solve(
        _problem(), "lbfgs", x0=start, state=state, max_iter=3, checkpoint=path, atol=0, rtol=0
    )
    resumed = snlp.solve(
        _problem(), "lbfgs", x0=start, state=state, max_iter=6, resume=path, atol=0, rtol=0
    )
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))
    assert int(resumed.state["count"]) == int(full.state["count"])
    assert resumed.counters == full.counters
    # Resuming without x0/state continues the same run; with another x0 it is refused.
    again = snlp.solve(_problem(), "lbfgs", max_iter=6, resume=path, atol=0, rtol=0)
    np.testing.assert_array_equal(np.asarray(again.solution), np.asarray(full.solution))
    with pytest.raises(snlp.CheckpointError, match="x0"):
        snlp.solve(_problem(), "lbfgs", x0=jnp.zeros(5), resume=path)
