"""`safe_norm`: the norm every relative test of the solvers rests on, at any scale."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statefulnlp._tree import safe_norm


def _reference(v: np.ndarray) -> float:
    """‖v‖ in exact-enough arithmetic: Python floats scaled by the largest entry."""
    values = [float(a) for a in v]
    scale = max(abs(a) for a in values)
    if scale == 0.0:
        return 0.0
    return scale * sum((a / scale) ** 2 for a in values) ** 0.5


@given(
    exponent=st.integers(-300, 300),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**31 - 1),
)
def test_float64_norm_is_exact_at_any_scale(exponent, n, seed):
    with jax.enable_x64(True):
        v = np.random.default_rng(seed).normal(size=n) * 10.0**exponent
        norm = float(safe_norm(jnp.asarray(v, jnp.float64)))
    assert norm == pytest.approx(_reference(v), rel=1e-14)


@given(
    exponent=st.integers(-30, 34),
    n=st.integers(1, 300),
    seed=st.integers(0, 2**31 - 1),
)
def test_float32_norm_is_accurate_at_any_scale(exponent, n, seed):
    v = (np.random.default_rng(seed).normal(size=n) * 10.0**exponent).astype(np.float32)
    norm = float(safe_norm(jnp.asarray(v)))
    assert norm == pytest.approx(_reference(v), rel=1e-5)


def test_norms_past_the_squares_range_and_special_values():
    # Squares of 1e30 overflow float32 and squares of 1e-30 underflow it; the norm does not.
    assert float(safe_norm(jnp.full(4, 1e30, jnp.float32))) == pytest.approx(2e30, rel=1e-6)
    assert float(safe_norm(jnp.full(4, 1e-30, jnp.float32))) == pytest.approx(2e-30, rel=1e-6)
    assert float(safe_norm(jnp.zeros(3))) == 0.0
    assert float(safe_norm(jnp.zeros(0))) == 0.0
    assert float(safe_norm(jnp.array([1.0, jnp.inf]))) == np.inf
    assert np.isnan(float(safe_norm(jnp.array([1.0, jnp.nan]))))
    # A norm past the largest float is inf, not a wrapped or zero value.
    assert float(safe_norm(jnp.full(4, 3e38, jnp.float32))) == np.inf
    # float16 (too narrow for the one-pass form) takes the two-pass form.
    assert float(safe_norm(jnp.full(4, 3e4, jnp.float16))) == pytest.approx(6e4, rel=1e-3)
