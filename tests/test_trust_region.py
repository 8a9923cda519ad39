"""The trust-region radius rule (JSOSolvers' rules) as a component, and how Trunk uses it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import statefulnlp as snlp
from statefulnlp.solvers import TrustRegionRadius


def test_radius_rules():
    rule = TrustRegionRadius(eta1=1e-4, eta2=0.95, decrease=1 / 3, increase=1.5)
    assert float(rule.initial(jnp.float32)) == 1.0
    assert not bool(rule.successful(5e-5)) and bool(rule.successful(1e-4))
    # failed: a third of the step; successful: unchanged; very successful: 1.5·‖s‖ if larger
    assert float(rule.update(2.0, 0.0, 0.9)) == pytest.approx(0.3)
    assert float(rule.update(2.0, 0.5, 2.0)) == 2.0
    assert float(rule.update(2.0, 0.99, 2.0)) == 3.0
    assert float(rule.update(2.0, 0.99, 0.5)) == 2.0  # an interior step does not grow it
    assert float(rule.update(jnp.float32(1e30), 1.0, 1e30)) == pytest.approx(
        1 / np.sqrt(np.finfo(np.float32).eps), rel=1e-6
    )  # capped at 1/sqrt(eps)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"eta1": 0.5, "eta2": 0.4}, "eta1"),
        ({"decrease": 1.5}, "decrease"),
        ({"increase": 0.5}, "increase"),
        ({"initial_radius": 0.0}, "initial_radius"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, word):
    with pytest.raises(snlp.InvalidArgumentError, match=word) as info:
        TrustRegionRadius(**kwargs)
    assert isinstance(info.value, ValueError)
    with pytest.raises(snlp.InvalidArgumentError, match=word):
        snlp.solvers.Trunk(**kwargs)


def test_trunk_radius_after_a_backtrack_restarts_from_the_step_taken():
    """A full step that fails and an Armijo backtrack that succeeds: the next radius is
    based on the backtracked length t·‖s‖, not on the radius that produced the failure
    (with JSOSolvers' rule it would stay at Δ, and the next iteration would fail again)."""

    def fn(x, s, b):  # a Gaussian well: negative curvature at x0 = 1.5, so CG goes to
        return 1.0 - jnp.exp(-jnp.sum(x**2)), s  # the boundary, 4 away: x = -2.5, too far

    nlp = snlp.StatefulNLPModel(fn, jnp.array([1.5]))
    seen = []
    snlp.solve(
        nlp,
        snlp.solvers.Trunk(initial_radius=4.0),
        max_iter=1,
        atol=0.0,
        rtol=0.0,
        callback=lambda p, s, st: seen.append((st.solver_state, st.objective)),
    )
    state, f1 = seen[0]
    assert int(state.cg_status) == snlp.solvers.CGStatus.NEGATIVE_CURVATURE
    assert int(state.backtracks) >= 1 and float(state.step_norm) > 0  # accepted after backtracking
    assert f1 < float(fn(jnp.array([1.5]), None, None)[0])
    assert float(state.step_norm) < 4.0
    assert float(state.radius) <= 1.5 * float(state.step_norm) + 1e-6
    if float(state.ratio) < 0.95:
        assert float(state.radius) == pytest.approx(float(state.step_norm))
