"""Monotonicity under an inexact gradient: no accepted step increases f_k, and no solver
ends at a point worse than the best point it accepted.

The gradient is the true one plus a rotation of relative size `delta` (a custom JVP);
f itself is exact. Before issue 16, trunk judged steps where f barely changes on the
gradient alone and accepted increases of f (f = 1.0000000000135 > f(x0) = 1).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statefulnlp as snlp

DELTAS = (0.3, 0.9, 1.5)


def _true(x):
    return 1.0 + 1e-9 * (jnp.sum((x - 0.3) ** 2) + jnp.sum(jnp.sin(3.0 * x)))


@jax.custom_jvp
def _inexact(x, delta):
    return _true(x)


@_inexact.defjvp
def _inexact_jvp(primals, tangents):
    x, delta = primals
    tx, _ = tangents
    g = 1e-9 * (2.0 * (x - 0.3) + 3.0 * jnp.cos(3.0 * x))
    wrong = jnp.sin(17.0 * x + jnp.arange(x.shape[0]))
    g = g + delta * jnp.linalg.norm(g) * wrong / jnp.linalg.norm(wrong)
    return _true(x), jnp.vdot(g, tx)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("solver", ["trunk", "lbfgs", "r2"])
def test_no_accepted_step_increases_f(solver):
    def fn(x, state, delta):
        return _inexact(x, delta), state

    rng = np.random.default_rng(0)
    starts = [jnp.asarray(rng.normal(size=5)) for _ in range(2)]
    nlp = snlp.StatefulNLPModel(fn, starts[0], data=[jnp.asarray(d) for d in DELTAS])
    for delta in DELTAS:
        for x0 in starts:
            f0 = float(_true(x0))
            values = [f0]
            stats = snlp.solve(
                nlp,
                solver,
                x0=x0,
                max_iter=150,
                atol=0.0,
                rtol=1e-8,
                callback=lambda p, s, st, values=values: values.append(st.objective),
            )
            info = f"{solver}, delta={delta}: {stats.status}"
            assert all(b <= a for a, b in itertools.pairwise(values)), info
            assert stats.objective <= min(values) and stats.objective <= f0, info
            assert float(_true(stats.solution)) == pytest.approx(stats.objective, rel=1e-15), info
        nlp.next_batch()
