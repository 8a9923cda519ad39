"""Solver behaviour through `solve`: statuses, limits, callbacks, logging, minibatches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statefulnlp as snlp
from statefulnlp import Status

SOLVERS = ["r2", "lbfgs", "trunk"]


def _nlp(fn, x0, state=None, data=None):
    return snlp.StatefulNLPModel(
        lambda x, s, b: (fn(x), s), jnp.asarray(x0, jnp.float32), state, data
    )


def _rosen(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@jax.custom_jvp
def _wrong_gradient_square(x):
    return jnp.sum(x**2)


@_wrong_gradient_square.defjvp
def _wrong_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.sum(x**2), jnp.sum(-2.0 * x * t)  # the gradient points uphill


@jax.custom_jvp
def _nan_gradient_below(x):
    return jnp.sum((x - 1.0) ** 2)


@_nan_gradient_below.defjvp
def _nan_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    g = jnp.where(x < 1.5, jnp.nan, 2.0 * (x - 1.0))
    return jnp.sum((x - 1.0) ** 2), jnp.sum(g * t)


def test_every_status_has_a_message():
    for status in Status:
        assert status.message and isinstance(status.message, str)
        assert Status.from_code(status.code) is status
    assert Status.FIRST_ORDER == "first_order"


@pytest.mark.parametrize("solver", [*SOLVERS, "gd"])
def test_first_order_with_default_tolerances(solver):
    nlp = _nlp(lambda x: 0.5 * jnp.sum(x**2), [3.0, -4.0])
    stats = snlp.solve(nlp, solver if solver != "gd" else snlp.solvers.GradientDescent(0.5))
    assert stats.status == "first_order" and stats.message == Status.FIRST_ORDER.message
    eps = np.finfo(np.float32).eps
    assert stats.dual_feas <= np.sqrt(eps) + np.sqrt(eps) * 5.0  # atol + rtol·‖g0‖, ‖g0‖ = 5
    assert stats.dual_feas == pytest.approx(float(jnp.linalg.norm(stats.solution)), rel=1e-5)
    assert stats.objective == pytest.approx(
        0.5 * float(jnp.sum(stats.solution**2)), rel=1e-5, abs=1e-12
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_max_iter(solver):
    stats = snlp.solve(_nlp(_rosen, [-1.2, 1.0, -1.2, 1.0]), solver, max_iter=3, atol=0, rtol=0)
    assert stats.status == "max_iter" and stats.iter == 3


def test_max_iter_zero_only_evaluates_x0():
    nlp = _nlp(_rosen, [-1.2, 1.0])
    stats = snlp.solve(nlp, "lbfgs", max_iter=0)
    assert stats.status == "max_iter" and stats.iter == 0 and nlp.counters.obj == 1
    np.testing.assert_array_equal(stats.solution, nlp.x0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_max_eval(solver):
    nlp = _nlp(_rosen, [-1.2, 1.0, -1.2, 1.0])
    stats = snlp.solve(nlp, solver, max_eval=15, atol=0, rtol=0, max_iter=10_000)
    assert stats.status == "max_eval"
    assert 15 <= stats.counters["obj"] == nlp.counters.obj <= 15 + 40  # checked between iterations


def test_max_time():
    nlp = _nlp(_rosen, np.tile([-1.2, 1.0], 50))
    stats = snlp.solve(nlp, "r2", max_time=0.3, max_iter=10**9, atol=0, rtol=0)
    assert stats.status == "max_time" and stats.elapsed_time >= 0.3


def test_user_stop_and_callback_arguments():
    nlp = _nlp(_rosen, [-1.2, 1.0])
    seen = []

    def callback(problem, solver, stats):
        assert problem is nlp and isinstance(solver, snlp.solvers.LBFGS)
        assert stats.status == "unknown"
        seen.append(stats.iter)
        return stats.iter == 3

    stats = snlp.solve(nlp, "lbfgs", callback=callback, atol=0, rtol=0)
    assert stats.status == "user" and stats.iter == 3 and seen == [1, 2, 3]


def test_callback_exceptions_pass_through():
    class Stop(Exception):
        pass

    def callback(problem, solver, stats):
        raise Stop("mine")

    with pytest.raises(Stop, match="mine"):
        snlp.solve(_nlp(_rosen, [-1.2, 1.0]), "lbfgs", callback=callback)


def test_user_objective_exceptions_pass_through():
    class Boom(Exception):
        pass

    calls = {"n": 0}

    def fn(x, s, b):
        calls["n"] += 1
        if calls["n"] > 1:  # fine while the problem is built, raises while the solve traces
            raise Boom("from fn")
        return jnp.sum(x**2), s

    nlp = snlp.StatefulNLPModel(fn, jnp.ones(2))
    with pytest.raises(Boom, match="from fn"):
        snlp.solve(nlp, "lbfgs")


@pytest.mark.parametrize(
    ("solver", "status"), [("lbfgs", "stalled"), ("r2", "small_step"), ("trunk", "small_step")]
)
def test_no_progress_statuses(solver, status):
    # Finite only at x0: every trial point is NaN, so no step can ever be accepted.
    x0 = jnp.array([1.0, 2.0])

    def fn(x):
        return jnp.where(jnp.all(x == x0), jnp.sum(x**2), jnp.nan) + 0.0 * jnp.sum(x)

    stats = snlp.solve(_nlp(fn, x0), solver, max_iter=5000)
    assert stats.status == status and stats.accepted == 0
    np.testing.assert_array_equal(stats.solution, x0)
    assert stats.objective == 5.0


@pytest.mark.parametrize(("solver", "status"), [("lbfgs", "stalled"), ("r2", "small_step")])
def test_wrong_gradient_never_moves_uphill(solver, status):
    stats = snlp.solve(_nlp(_wrong_gradient_square, [1.0, 2.0]), solver, max_iter=5000)
    assert stats.status == status
    assert stats.objective == pytest.approx(5.0)


@pytest.mark.parametrize("solver", ["lbfgs", "r2"])
def test_unbounded(solver):
    stats = snlp.solve(_nlp(lambda x: -jnp.sum(x), [0.0, 0.0]), solver, max_iter=10_000)
    assert stats.status == "unbounded"
    assert stats.objective < -1.0 / np.finfo(np.float32).eps


def test_nan_gradient_at_accepted_point_returns_last_good_iterate():
    nlp = _nlp(_nan_gradient_below, [3.0])
    stats = snlp.solve(nlp, "r2", max_iter=100)
    assert stats.status == "exception"
    assert (
        float(stats.solution[0]) >= 1.5
        and np.isfinite(stats.objective)
        and np.isfinite(stats.dual_feas)
    )


def test_verbose_prints_a_log_table(capsys):
    snlp.solve(_nlp(_rosen, [-1.2, 1.0]), "trunk", verbose=2, max_iter=6, atol=0, rtol=0)
    out = capsys.readouterr().out
    assert "statefulnlp: trunk (state policy: freeze)" in out
    assert "f(x)" in out and "Δ" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r.split()[0]) for r in rows] == [0, 2, 4, 6]


def test_quiet_by_default(capsys):
    snlp.solve(_nlp(_rosen, [-1.2, 1.0]), "lbfgs")
    assert capsys.readouterr().out == ""


@pytest.mark.usefixtures("x64")
def test_trunk_on_convex_quadratic_needs_at_most_n_cg_iterations():
    # float64: in float32 the last Newton step's decrease (~1e-9) is below the
    # rounding error of f ≈ -1.5, and a monotone solver stops there (stalled).
    n = 12
    A = jnp.diag(jnp.arange(10.0, 10.0 + n))
    b = jnp.linspace(-3.0, 3.0, n)
    nlp = snlp.StatefulNLPModel(lambda x, s, d: (0.5 * x @ A @ x - b @ x, s), jnp.zeros(n))
    per_subproblem = []
    stats = snlp.solve(
        nlp,
        "trunk",
        atol=1e-5,
        rtol=0,
        callback=lambda p, s, st: per_subproblem.append(int(st.solver_state.cg_iterations)),
    )
    assert stats.status == "first_order"
    assert max(per_subproblem) <= n  # at most n CG iterations per trust-region subproblem
    assert stats.counters["hprod"] == sum(per_subproblem) <= n  # and here at most n in all
    np.testing.assert_allclose(stats.solution, b / jnp.diag(A), rtol=1e-4, atol=1e-6)


def test_lbfgs_matches_reference_two_loop_on_a_quadratic():
    """Each L-BFGS step is along −H_k g_k from a reference two-loop over its own pairs."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(8, 8))
    A = M.T @ M + np.eye(8)
    b = rng.normal(size=8)
    mem = 3
    with jax.enable_x64(True):
        nlp = snlp.StatefulNLPModel(lambda x, s, d: (0.5 * x @ A @ x - b @ x, s), jnp.zeros(8))
        xs = [np.asarray(nlp.x0)]
        snlp.solve(
            nlp,
            snlp.solvers.LBFGS(mem=mem),
            callback=lambda p, s, st: xs.append(np.asarray(st.solution)),
            max_iter=6,
            atol=0,
            rtol=0,
        )
    grads = [A @ x - b for x in xs]
    for k in range(1, len(xs) - 1):
        S = [xs[i + 1] - xs[i] for i in range(max(0, k - mem), k)]
        Y = [grads[i + 1] - grads[i] for i in range(max(0, k - mem), k)]
        q = grads[k].copy()
        alphas = []
        for s, y in reversed(list(zip(S, Y))):
            a = (s @ q) / (s @ y)
            alphas.append(a)
            q -= a * y
        r = (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) * q
        for (s, y), a in zip(zip(S, Y), reversed(alphas)):
            r += s * (a - (y @ r) / (s @ y))
        step = xs[k + 1] - xs[k]
        cosine = -(step @ r) / (np.linalg.norm(step) * np.linalg.norm(r))
        assert cosine == pytest.approx(1.0, abs=1e-10)


def test_multi_batch_lbfgs_pairs_come_from_one_batch():
    """Curvature pairs satisfy y = A_B s for the batch B they were formed on."""
    rng = np.random.default_rng(1)
    mats = []
    for _ in range(4):
        M = rng.normal(size=(5, 5))
        mats.append(M.T @ M + np.eye(5))
    batches = [
        (jnp.asarray(A, jnp.float32), jnp.asarray(rng.normal(size=5), jnp.float32)) for A in mats
    ]

    def fn(x, s, batch):
        A, b = batch
        return 0.5 * x @ A @ x - b @ x, s

    nlp = snlp.StatefulNLPModel(fn, jnp.zeros(5), data=batches)
    stats = snlp.solve(
        nlp,
        snlp.solvers.LBFGS(mem=4),
        callback=lambda p, s, st: p.next_batch(),
        max_iter=12,
        atol=0,
        rtol=0,
    )
    memory = stats.solver_state.memory
    valid = np.asarray(memory.valid)
    assert valid.sum() >= 3
    S, Y = (np.asarray(a) for a in memory.chronological())
    for s, y in zip(S[valid], Y[valid]):
        errors = [np.linalg.norm(A @ s - y) / np.linalg.norm(y) for A in mats]
        assert min(errors) < 1e-4, errors


def test_optax_schedule_is_honoured():
    schedule = optax.piecewise_constant_schedule(0.1, {3: 0.0})
    nlp = _nlp(lambda x: jnp.sum(x**2), [1.0])
    xs = []
    snlp.solve(
        nlp,
        snlp.solvers.Optax(optax.sgd(schedule)),
        callback=lambda p, s, st: xs.append(float(st.solution[0])),
        max_iter=6,
        atol=0,
        rtol=0,
    )
    np.testing.assert_allclose(xs[:3], [0.8, 0.64, 0.512], rtol=1e-6)
    assert xs[3:] == [xs[2]] * 3  # the learning rate dropped to zero after 3 steps


def test_optax_lbfgs_is_multi_evaluation_and_converges():
    nlp = _nlp(_rosen, [-1.2, 1.0])
    stats = snlp.solve(nlp, snlp.solvers.Optax(optax.lbfgs()), max_iter=500)
    assert stats.state_policy == "freeze"
    assert stats.status == "first_order"
    assert stats.counters["obj"] > stats.iter  # line-search evaluations are counted


def test_solver_by_name_class_or_instance():
    for solver in ("lbfgs", "LBFGS", snlp.solvers.LBFGS, snlp.solvers.LBFGS(mem=3)):
        assert snlp.solve(_nlp(_rosen, [-1.2, 1.0]), solver).status == "first_order"
    with pytest.raises(snlp.InvalidArgumentError, match="cannot be built without arguments"):
        snlp.solve(_nlp(_rosen, [-1.2, 1.0]), "optax")
