"""Shared fixtures and the hypothesis profiles.

Profiles (choose with HYPOTHESIS_PROFILE=name):
  ci        the default: derandomized, no deadline (compiles are slow), enough
            examples for the property tests to mean something on 2 cores;
  thorough  many more examples, for a run on demand;
  dev       a quick smoke run.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module.

    The whole suite in one process compiles hundreds of solve loops; kept alive they
    exhausted memory in XLA's compiler late in the run (an abort while compiling, in
    test_reliability), while each module alone passes.
    """
    yield
    from statefulnlp.solvers import _loop

    _loop.compiled.cache_clear()
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def clean_registry():
    """Let the test register solvers of its own; the registry is restored afterwards."""
    from statefulnlp import traits

    saved = dict(traits._REGISTRY)
    try:
        yield
    finally:
        traits._REGISTRY.clear()
        traits._REGISTRY.update(saved)


@pytest.fixture
def x64():
    """Run the test with 64-bit floats enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------
# Shared problems


def quartic_fn(x, state, batch):
    """A pytree-shaped nonconvex problem with coupling between leaves."""
    a, b = batch
    w, v = x["w"], x["v"]
    loss = (
        jnp.sum((a @ w - b) ** 2)
        + 0.1 * jnp.sum(w**4)
        + jnp.sum(jnp.sin(v) * w[:2])
        + jnp.sum(v**2)
    )
    return loss, state


def quartic_problem(dtype=None):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    b = rng.normal(size=6)
    x0 = {"w": rng.normal(size=4), "v": rng.normal(size=(2,))}
    if dtype is not None:
        x0 = jax.tree_util.tree_map(lambda z: jnp.asarray(z, dtype), x0)
        a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    return quartic_fn, x0, (a, b)


def digits_split():
    """The digits split fixed by the design: pixels / 16, stratified, random_state=0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


class MLPWithBN(eqx.Module):
    """A small MLP with BatchNorm (state) and dropout (key in the state)."""

    l1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    l2: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __init__(self, key, n_in=64, hidden=16, n_out=10):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(n_in, hidden, key=k1)
        self.bn = eqx.nn.BatchNorm(hidden, axis_name="batch", mode="batch")
        self.l2 = eqx.nn.Linear(hidden, n_out, key=k2)
        self.dropout = eqx.nn.Dropout(0.1)

    def __call__(self, x, state, key):
        h = jax.nn.relu(self.l1(x))
        h, state = self.bn(h, state)
        h = self.dropout(h, key=key)
        return self.l2(h), state


def mlp_loss(model, state, batch):
    """Cross-entropy of MLPWithBN; the dropout key lives in the state and is split each call."""
    X, y = batch
    bn_state, key = state
    key, sub = jax.random.split(key)
    keys = jax.random.split(sub, X.shape[0])
    logits, bn_state = jax.vmap(model, axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None))(
        X, bn_state, keys
    )
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(X.shape[0]), y])
    return ce, (bn_state, key)


def mlp_predict(model, state, X):
    bn_state, key = state
    keys = jax.random.split(key, X.shape[0])
    logits, _ = jax.vmap(model, axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None))(
        X, bn_state, keys
    )
    return logits


def oracle_factory(fn, n, hessian=None, memory=None):
    """A builder of the frozen oracle of f(x) (no state, no batch), to call inside jit."""
    import statefulnlp as snlp
    from statefulnlp._evaluate import Tally

    nlp = snlp.StatefulNLPModel(lambda x, s, b: (fn(x), s), jnp.zeros(n))

    def make():
        return snlp.Oracle(
            core=nlp.objective,
            state=None,
            batch=None,
            consts=None,
            hessian=hessian,
            memory=memory,
            check_mutation=False,
            tally=Tally.zeros(0),
        )

    return make


EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, "examples"))


def import_example(name: str):
    """The example script `examples/<name>.py` as a module (tests reuse its models)."""
    sys.path.insert(0, EXAMPLES)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(EXAMPLES)


def make_mlp(seed=0):
    model, bn_state = eqx.nn.make_with_state(MLPWithBN)(jax.random.key(seed))
    return model, (bn_state, jax.random.key(seed + 1))


# ---------------------------------------------------------------------------
# Reports: tables that tests want shown at the end of the run (e.g. evaluation
# counts beside scipy's). Printed in the terminal summary, so CI logs keep them.

_REPORTS: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def report():
    def add(title: str, text: str) -> None:
        _REPORTS.append((title, text))

    return add


def pytest_terminal_summary(terminalreporter):
    for title, text in _REPORTS:
        terminalreporter.section(title)
        terminalreporter.write_line(text)
