"""Property tests: every solver x state policy x generated objective and state.

For each registered solver (plus the quasi-Newton models with trunk and both
kinds of optax transformation) and each policy, hypothesis draws an objective
(a mix of a random SPD quadratic and a nonconvex sum with random curvature), a
starting point, a state structure (None, or a nested pytree with a counter, a
PRNG key and an array) and whether the objective mutates its state. Either the
documented error is raised, or the policy's invariants hold on every iteration
(checked through a callback), and the device-side run without a callback obeys
them too and ends at the same objective.

Shapes are fixed and every choice is data, so each (solver, policy, state
structure) compiles once however many examples run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import statefulnlp as snlp
from statefulnlp import traits

N = 4
MAX_ITER = 25


def evolve(state, x, mutate):
    """The state update of the generated objectives (pure Python/JAX, reused by the checks)."""
    if state is None:
        return None
    key_data = jax.random.key_data(state["key"])
    new_key = jax.random.key_data(jax.random.split(state["key"])[0])
    return {
        "count": state["count"] + mutate,
        "key": jax.random.wrap_key_data(jnp.where(mutate > 0, new_key, key_data)),
        "ema": jnp.where(mutate > 0, 0.5 * state["ema"] + 0.5 * jnp.tanh(x[:3]), state["ema"]),
    }


def objective(x, state, batch):
    quad = 0.5 * x @ batch["A"] @ x - batch["c"] @ x
    nonconvex = jnp.sum(batch["a"] * (x - batch["c"]) ** 2 + batch["b"] * jnp.cos(x))
    loss = batch["w"][0] * quad + batch["w"][1] * nonconvex
    if state is not None:
        # The loss depends on the state, so using a wrong state changes the function.
        loss = loss + 0.05 * jnp.sum(state["ema"]) * jnp.sum(x)
    return loss, evolve(state, x, batch["mutate"])


@st.composite
def problems(draw):
    floats = st.floats(-1.0, 1.0, allow_nan=False, width=32)
    M = np.array(draw(st.lists(floats, min_size=N * N, max_size=N * N)), np.float32).reshape(N, N)
    A = M.T @ M + 0.5 * np.eye(N, dtype=np.float32)
    c = np.array(draw(st.lists(floats, min_size=N, max_size=N)), np.float32)
    a = np.array(draw(st.lists(st.floats(0.25, 2.0, width=32), min_size=N, max_size=N)), np.float32)
    b = np.array(draw(st.lists(st.floats(-1.5, 1.5, width=32), min_size=N, max_size=N)), np.float32)
    kind = draw(st.sampled_from(["quadratic", "nonconvex", "mixed"]))
    w = {"quadratic": [1.0, 0.0], "nonconvex": [0.0, 1.0], "mixed": [0.5, 0.5]}[kind]
    x0 = np.array(
        draw(st.lists(st.floats(-2.0, 2.0, width=32), min_size=N, max_size=N)), np.float32
    )
    mutate = draw(st.booleans())
    batch = {
        "A": A,
        "c": c,
        "a": a,
        "b": b,
        "w": np.array(w, np.float32),
        "mutate": np.int32(mutate),
    }
    return x0, batch, mutate


def make_state(kind, seed=0):
    if kind == "none":
        return None
    return {
        "count": jnp.int32(0),
        "key": jax.random.key(seed),
        "ema": jnp.zeros(3, jnp.float32),
    }


SOLVERS = {
    "r2": lambda: snlp.solvers.R2(),
    "lbfgs": lambda: snlp.solvers.LBFGS(mem=3),
    "trunk": lambda: snlp.solvers.Trunk(),
    "trunk+lsr1": lambda: snlp.solvers.Trunk(),
    "trunk+lbfgsmodel": lambda: snlp.solvers.Trunk(),
    "gd": lambda: snlp.solvers.GradientDescent(0.05),
    "adam": lambda: snlp.solvers.Optax(optax.adam(0.05)),
    "optax-lbfgs": lambda: snlp.solvers.Optax(optax.lbfgs()),
}
# One instance per name so that the compiled loops are shared across examples.
_INSTANCES = {name: make() for name, make in SOLVERS.items()}


def test_every_registered_solver_is_covered():
    covered = {traits.of(s).name for s in _INSTANCES.values()}
    assert set(traits.registered()) <= covered | {"optax"}


def _problem(name, x0, batch, state):
    nlp = snlp.StatefulNLPModel(objective, jnp.asarray(x0), state=state, data=batch)
    if name == "trunk+lsr1":
        return snlp.LSR1Model(nlp, mem=3)
    if name == "trunk+lbfgsmodel":
        return snlp.LBFGSModel(nlp, mem=3)
    return nlp


def _same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        return False
    for u, v in zip(la, lb):
        if hasattr(u, "dtype") and jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        if not np.array_equal(np.asarray(u), np.asarray(v)):
            return False
    return True


@pytest.mark.parametrize("policy", ["propagate", "freeze", "reject"])
@pytest.mark.parametrize("solver_name", list(SOLVERS))
@pytest.mark.parametrize("state_kind", ["none", "nested"])
@given(problem=problems())
def test_policy_invariants(solver_name, policy, state_kind, problem):
    x0, batch, mutate = problem
    solver = _INSTANCES[solver_name]
    one_step = traits.of(solver).one_step_safe
    state0 = make_state(state_kind)
    nlp = _problem(solver_name, x0, batch, state0)
    batch_j = jax.tree_util.tree_map(jnp.asarray, batch)

    if policy == "propagate" and not one_step:
        with pytest.raises(snlp.IncompatibleStatePolicyError, match="freeze"):
            snlp.solve(nlp, solver, state_policy=policy, max_iter=MAX_ITER)
        assert nlp.counters.obj == 0  # refused before any evaluation
        return

    if policy == "reject" and mutate and state_kind != "none":
        with pytest.raises(snlp.StateMutationError) as info:
            snlp.solve(nlp, solver, state_policy=policy, max_iter=MAX_ITER)
        # count and key always change; ema only where tanh(x) moves it.
        assert (
            {"['count']", "['key']"}
            <= set(info.value.leaves)
            <= {"['count']", "['ema']", "['key']"}
        )
        return

    history = []

    def record(nlp_, solver_, stats):
        history.append((stats.solution, stats.state, stats.accepted, stats.objective))

    stats = snlp.solve(nlp, solver, state_policy=policy, max_iter=MAX_ITER, callback=record)
    assert stats.state_policy == policy
    assert stats.status in {"first_order", "max_iter", "stalled", "small_step"}
    assert len(history) == stats.iter

    x_prev, s_prev, acc_prev = jnp.asarray(x0), state0, 0
    for x_k, s_k, acc_k, f_k in history:
        accepted = acc_k > acc_prev
        if one_step:
            # The single evaluation of the iteration is at x_{k-1}; its state is s_k
            # (propagate: each evaluation's state feeds the next).
            assert _same(s_k, evolve(s_prev, x_prev, batch_j["mutate"]))
        elif accepted:
            # freeze/reject: s_k is the state returned at the accepted point by the
            # frozen function of the iteration, and the reported f is that function's.
            assert _same(s_k, evolve(s_prev, x_k, batch_j["mutate"]))
            f_ref, _ = objective(x_k, s_prev, batch_j)
            np.testing.assert_allclose(f_k, float(f_ref), rtol=1e-5, atol=1e-6)
        else:
            assert _same(s_k, s_prev) and np.array_equal(x_k, x_prev)  # rejected: nothing moves
        x_prev, s_prev, acc_prev = x_k, s_k, acc_k

    if state_kind == "nested":
        count = int(stats.state["count"])
        if not mutate:
            assert count == 0
        elif one_step:
            assert count in (stats.iter, stats.iter + 1)
            # propagate keeps the state of the evaluation that stopped the solve.
            extra = 1 if (policy == "propagate" and stats.status == "first_order") else 0
            assert count == stats.iter + extra
        else:
            # freeze: the state advanced exactly once per accepted step.
            assert count == stats.accepted

    # The whole solve on the device (no callback: one lax.while_loop) obeys the same
    # invariants and ends at the same place. It is a different compiled program from
    # the per-iteration one, so the comparison allows for floating-point rounding.
    nlp2 = _problem(solver_name, x0, batch, state0)
    stats2 = snlp.solve(nlp2, solver, state_policy=policy, max_iter=MAX_ITER)
    assert stats2.status in {"first_order", "max_iter", "stalled", "small_step"}
    assert abs(stats2.objective - stats.objective) <= 1e-3 * max(1.0, abs(stats.objective))
    if state_kind == "nested" and mutate:
        count2 = int(stats2.state["count"])
        if one_step:
            extra = 1 if (policy == "propagate" and stats2.status == "first_order") else 0
            assert count2 == stats2.iter + extra
        else:
            assert count2 == stats2.accepted


@given(problem=problems())
def test_reject_on_pure_objective_equals_freeze(problem):
    x0, batch, _ = problem
    batch = dict(batch, mutate=np.int32(0))
    runs = []
    for policy in ("freeze", "reject"):
        nlp = snlp.StatefulNLPModel(objective, jnp.asarray(x0), make_state("nested"), batch)
        runs.append(snlp.solve(nlp, "lbfgs", state_policy=policy, max_iter=MAX_ITER))
    assert np.array_equal(runs[0].solution, runs[1].solution)
    assert runs[0].iter == runs[1].iter
