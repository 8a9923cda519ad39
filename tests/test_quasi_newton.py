"""Quasi-Newton pieces: the two-loop recursion, the direct BFGS/SR1 operators, the models."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import statefulnlp as snlp
from statefulnlp._quasi_newton import BFGSOperator, PairMemory, SR1Operator, two_loop


def _pairs(n, k, seed=0):
    """k curvature pairs of a random SPD quadratic (s'y > 0)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    A = M.T @ M + np.eye(n)
    S = rng.normal(size=(k, n))
    return S, S @ A


def _dense_inverse_bfgs(S, Y):
    s, y = S[-1], Y[-1]
    H = (s @ y) / (y @ y) * np.eye(len(s))
    for s, y in zip(S, Y):
        rho = 1.0 / (s @ y)
        V = np.eye(len(s)) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


def _dense_bfgs(S, Y):
    s, y = S[-1], Y[-1]
    B = (y @ y) / (s @ y) * np.eye(len(s))
    for s, y in zip(S, Y):
        Bs = B @ s
        B = B - np.outer(Bs, Bs) / (s @ Bs) + np.outer(y, y) / (y @ s)
    return B


def _dense_sr1(S, Y):
    s, y = S[-1], Y[-1]
    B = (y @ y) / (s @ y) * np.eye(len(s))
    for s, y in zip(S, Y):
        u = y - B @ s
        if abs(u @ s) > 1.5e-8 * np.linalg.norm(s) * np.linalg.norm(u):
            B = B + np.outer(u, u) / (u @ s)
    return B


def _memory(S, Y, mem):
    memory = PairMemory.empty(mem, S.shape[1], jnp.float64)
    for s, y in zip(S, Y):
        memory = memory.push(jnp.asarray(s), jnp.asarray(y), jnp.asarray(True))
    return memory


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(("k", "mem"), [(1, 5), (3, 5), (5, 5), (8, 5)])
def test_two_loop_matches_dense_inverse_bfgs(k, mem):
    n = 7
    S, Y = _pairs(n, k)
    g = np.random.default_rng(5).normal(size=n)
    Hg = two_loop(_memory(S, Y, mem), jnp.asarray(g))
    kept = slice(max(0, k - mem), k)  # only the newest `mem` pairs are used
    np.testing.assert_allclose(
        Hg, _dense_inverse_bfgs(S[kept], Y[kept]) @ g, rtol=1e-10, atol=1e-12
    )


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize(
    ("operator", "dense"), [(BFGSOperator, _dense_bfgs), (SR1Operator, _dense_sr1)]
)
@pytest.mark.parametrize("k", [1, 4, 9])
def test_direct_operators_match_dense_recursions(operator, dense, k):
    n, mem = 6, 4
    S, Y = _pairs(n, k, seed=k)
    op = operator(mem)
    memory = op.init(n, jnp.float64)
    for s, y in zip(S, Y):
        memory = op.push(memory, jnp.asarray(s), jnp.asarray(y))
    kept = slice(max(0, k - mem), k)
    B = dense(S[kept], Y[kept])
    v = np.random.default_rng(7).normal(size=n)
    np.testing.assert_allclose(op.apply(memory, jnp.asarray(v)), B @ v, rtol=1e-9, atol=1e-10)
    # The secant equation holds for the newest pair.
    np.testing.assert_allclose(op.apply(memory, jnp.asarray(S[-1])), Y[-1], rtol=1e-9, atol=1e-10)


def test_bfgs_skips_pairs_without_positive_curvature():
    op = BFGSOperator(3)
    memory = op.init(2, jnp.float32)
    memory = op.push(memory, jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0]))
    assert int(memory.pairs.count) == 0
    np.testing.assert_array_equal(op.apply(memory, jnp.array([2.0, 3.0])), [2.0, 3.0])


def _rosenbrock_nlp(n=6):
    def fn(x, s, b):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

    return snlp.StatefulNLPModel(fn, jnp.tile(jnp.array([-1.2, 1.0]), n // 2))


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("model", [snlp.LSR1Model, snlp.LBFGSModel])
def test_trunk_on_quasi_newton_models(model):
    nlp = _rosenbrock_nlp()
    qn = model(nlp, mem=5)
    stats = snlp.solve(qn, "trunk", atol=1e-8, rtol=0.0, max_iter=2000)
    assert stats.status == "first_order"
    np.testing.assert_allclose(stats.solution, np.ones(6), atol=1e-5)
    assert int(qn.memory.pairs.count) == 5  # the memory is stored back after the solve
    assert nlp.counters.hprod == stats.counters["hprod"] > 0  # quasi-Newton products, counted


def test_quasi_newton_model_interface():
    nlp = _rosenbrock_nlp(2)
    qn = snlp.LBFGSModel(nlp, mem=2)
    assert qn.nvar == 2 and np.array_equal(qn.x0, nlp.x0) and qn.model is nlp
    v = jnp.array([1.0, 2.0])
    hv, _ = qn.hprod(qn.x0, v)
    np.testing.assert_array_equal(hv, v)  # B0 = I before any pair
    qn.push(jnp.array([1.0, 0.0]), jnp.array([3.0, 0.0]))
    hv, _ = qn.hprod(qn.x0, jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(hv, [3.0, 0.0])
    f, _ = qn.obj(qn.x0)
    assert nlp.counters.obj == 1 and float(f) == float(nlp.obj(nlp.x0)[0])
    qn.reset()
    assert int(qn.memory.pairs.count) == 0


def test_quasi_newton_model_errors():
    nlp = _rosenbrock_nlp(2)
    with pytest.raises(snlp.InvalidArgumentError, match="mem"):
        snlp.LSR1Model(nlp, mem=0)
    with pytest.raises(snlp.InvalidTypeError, match="nlp"):
        snlp.LSR1Model("problem")
    with pytest.raises(snlp.InvalidTypeError, match="already a quasi-Newton"):
        snlp.LSR1Model(snlp.LBFGSModel(nlp))
    qn = snlp.LSR1Model(nlp)
    with pytest.raises(snlp.InvalidArgumentError, match="s: expected shape"):
        qn.push(jnp.ones(3), jnp.ones(2))
    for solver in ("lbfgs", "r2"):
        with pytest.raises(snlp.InvalidArgumentError, match="never uses"):
            snlp.solve(qn, solver)
    assert nlp.counters.obj == 0
