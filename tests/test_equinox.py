"""Every Equinox state idiom works in every solve (issue: "Attempted to use old state").

Equinox's `State.set` invalidates the State object it is called on, so a library
that hands the same State to the loss twice (a line search, an HVP, the
re-evaluation at x_k) breaks on models that use their state directly. These
tests use the idioms of Equinox's own documentation: `make_with_state` models
calling `state.get`/`state.set` directly, `SpectralNorm` called without vmap,
`BatchNorm` in both modes under Equinox's vmapped pattern.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statefulnlp as snlp


class Counted(eqx.Module):
    """A layer whose state counts its calls: state.get / state.set, no vmap."""

    linear: eqx.nn.Linear
    calls: eqx.nn.StateIndex

    def __init__(self, key):
        self.linear = eqx.nn.Linear(4, 3, key=key)
        self.calls = eqx.nn.StateIndex(jnp.zeros((), jnp.float32))

    def __call__(self, X, state):
        n = state.get(self.calls)
        state = state.set(self.calls, n + 1)
        return jax.vmap(self.linear)(X), state


def _direct(key):
    model, state = eqx.nn.make_with_state(Counted)(key)

    def loss(model, state, batch):
        X, y = batch
        out, state = model(X, state)
        return jnp.mean(jax.nn.log_softmax(out)[jnp.arange(len(y)), y] ** 2), state

    return model, state, loss


def _spectral(key):
    k1, k2 = jax.random.split(key)
    model, state = eqx.nn.make_with_state(eqx.nn.SpectralNorm)(
        eqx.nn.Linear(4, 3, key=k1), "weight", key=k2
    )

    def loss(model, state, batch):
        X, y = batch
        rows = []
        for i in range(X.shape[0]):  # called directly, one sample at a time
            out, state = model(X[i], state)
            rows.append(out)
        out = jnp.stack(rows)
        return jnp.mean((out - jax.nn.one_hot(y, 3)) ** 2), state

    return model, state, loss


def _batchnorm(mode):
    def build(key):
        k1, k2 = jax.random.split(key)
        model, state = eqx.nn.make_with_state(eqx.nn.Sequential)(
            [
                eqx.nn.Linear(4, 8, key=k1),
                eqx.nn.BatchNorm(8, axis_name="batch", mode=mode),
                eqx.nn.Lambda(jnp.tanh),
                eqx.nn.Linear(8, 3, key=k2),
            ]
        )

        def loss(model, state, batch):
            X, y = batch
            vmapped = jax.vmap(
                model, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
            )  # Equinox's documented pattern
            out, state = vmapped(X, state)
            return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(len(y)), y]), state

        return model, state, loss

    return build


MODELS = {
    "state_get_set": _direct,
    "spectral_norm": _spectral,
    "batchnorm_ema": _batchnorm("ema"),
    "batchnorm_batch": _batchnorm("batch"),
}

SOLVERS = {
    "lbfgs": snlp.solvers.LBFGS(mem=3),
    "r2": snlp.solvers.R2(),
    "trunk": snlp.solvers.Trunk(),
    "adam": snlp.solvers.Optax(optax.adam(1e-2)),
}


def _problem(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=24)
    model, state, loss = MODELS[name](jax.random.key(0))
    return snlp.EquinoxNLPModel(model, state, loss, snlp.DataLoader((X, y), 8, seed=1))


def _advance(nlp, solver, stats):
    nlp.next_batch()


def _assert_state_advanced(stats, nlp):
    assert np.isfinite(stats.objective)
    changed = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(
            jax.tree_util.tree_leaves(stats.state), jax.tree_util.tree_leaves(nlp.state0)
        )
    ]
    assert any(changed)  # the loss's `set` reached the result


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("model", list(MODELS))
def test_equinox_state_idioms_solve_with_every_solver(model, solver):
    nlp = _problem(model)
    stats = snlp.solve(nlp, SOLVERS[solver], max_iter=3)  # the on-device loop
    assert stats.iter == 3
    _assert_state_advanced(stats, nlp)


@pytest.mark.parametrize("model", list(MODELS))
def test_equinox_state_idioms_on_the_callback_path(model):
    # Trunk makes every kind of evaluation (objgrad, obj, HVPs) within one iteration.
    nlp = _problem(model)
    stats = snlp.solve(nlp, "trunk", max_iter=3, callback=_advance)
    assert stats.iter == 3
    _assert_state_advanced(stats, nlp)


@pytest.mark.parametrize("model", list(MODELS))
def test_equinox_state_idioms_in_direct_evaluations(model):
    nlp = _problem(model)
    x, s = nlp.x0, nlp.state0
    f, s1 = nlp.obj(x, s)
    g, _ = nlp.grad(x, s)
    f2, g2, _ = nlp.objgrad(x, s)
    hv, _ = nlp.hprod(x, jnp.ones_like(x), s)
    assert float(f) == pytest.approx(float(f2))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g2), rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(hv)))
    # The state the loss was given is still usable afterwards (it was never consumed).
    f_again, _ = nlp.obj(x, s)
    assert float(f_again) == float(f)
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s)


def test_equinox_state_idiom_survives_checkpoint_and_resume(tmp_path):
    path = tmp_path / "run.ckpt"
    full = snlp.solve(_problem("state_get_set"), "lbfgs", max_iter=6, callback=_advance)
    snlp.solve(_problem("state_get_set"), "lbfgs", max_iter=3, callback=_advance, checkpoint=path)
    resumed = snlp.solve(
        _problem("state_get_set"), "lbfgs", max_iter=6, callback=_advance, resume=path
    )
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.state), jax.tree_util.tree_leaves(full.state)
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
