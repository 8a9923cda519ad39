"""Flax NNX models: derivatives, training with BatchNorm + dropout, reject, accuracy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

from conftest import digits_split  # noqa: E402

import statefulnlp as snlp  # noqa: E402


class Net(nnx.Module):
    """A small CNN for 8x8 digits with BatchNorm and dropout."""

    def __init__(self, rngs, dtype=jnp.float32):
        self.conv = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.bn = nnx.BatchNorm(8, rngs=rngs, param_dtype=dtype, dtype=dtype)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(8 * 4 * 4, 10, rngs=rngs, param_dtype=dtype, dtype=dtype)

    def __call__(self, x):
        h = jax.nn.relu(self.bn(self.conv(x[..., None])))
        h = nnx.avg_pool(h, window_shape=(2, 2), strides=(2, 2))
        h = self.drop(h.reshape(h.shape[0], -1))
        return self.out(h)


def ce_loss(model, batch):
    X, y = batch
    logits = model(X)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def predict(model, X):
    return model(X)


def _data():
    Xtr, Xte, ytr, yte = digits_split()
    return Xtr.reshape(-1, 8, 8), Xte.reshape(-1, 8, 8), ytr, yte


def test_derivatives_match_jax_on_the_merged_module():
    with jax.enable_x64(True):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
        X = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)))

        def loss(m, batch):
            return jnp.sum(jnp.tanh(m(batch)) ** 2)

        nlp = snlp.FlaxNLPModel(model, loss, X)
        graphdef, params, state = nnx.split(model, nnx.Param, ...)
        _, unravel = jax.flatten_util.ravel_pytree(params)

        def f(z):
            return loss(nnx.merge(graphdef, unravel(z), state), X)

        x = nlp.x0 + 0.1
        v = jnp.linspace(-1.0, 1.0, nlp.nvar)
        # Our flat layout may order leaves differently: compare through unflatten.
        z = jax.flatten_util.ravel_pytree(nlp.unflatten(x))[0]
        np.testing.assert_allclose(nlp.obj(x)[0], f(z), rtol=1e-12)
        g = nlp.grad(x)[0]
        np.testing.assert_allclose(
            jax.flatten_util.ravel_pytree(nlp.unflatten(g))[0], jax.grad(f)(z), rtol=1e-10
        )
        hv = nlp.hprod(x, v)[0]
        vz = jax.flatten_util.ravel_pytree(nlp.unflatten(v))[0]
        np.testing.assert_allclose(
            jax.flatten_util.ravel_pytree(nlp.unflatten(hv))[0],
            jax.hessian(f)(z) @ vz,
            rtol=1e-10,
            atol=1e-12,
        )


def test_state_is_everything_but_the_parameters():
    nlp = snlp.FlaxNLPModel(
        Net(nnx.Rngs(0)), ce_loss, (jnp.ones((4, 8, 8)), jnp.zeros(4, jnp.int32))
    )
    paths = {
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(nlp.state0)[0]
    }
    assert any("mean" in p for p in paths) and any("rngs" in p for p in paths)
    _, s1 = nlp.obj(nlp.x0)
    flat0 = dict(jax.tree_util.tree_flatten_with_path(nlp.state0)[0])
    moved = {
        jax.tree_util.keystr(p)
        for p, leaf in jax.tree_util.tree_flatten_with_path(s1)[0]
        if not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        and not np.array_equal(leaf, flat0[p])
    }
    # BatchNorm statistics and the dropout stream's counter moved (NNX keeps the key).
    assert any("mean" in p for p in moved) and any("var" in p for p in moved)
    assert any("count" in p for p in moved)
    model = nlp.to_model(nlp.x0, s1)
    assert isinstance(model, Net)


def test_lbfgs_under_freeze_and_adam_under_propagate_on_digits():
    Xtr, Xte, ytr, yte = _data()
    results = {}
    for name, solver, iters in (
        ("lbfgs", "lbfgs", 150),
        ("adam", snlp.solvers.Optax(optax.adam(3e-3)), 300),
    ):
        nlp = snlp.FlaxNLPModel(
            Net(nnx.Rngs(0)),
            ce_loss,
            snlp.DataLoader((Xtr, ytr), 128, seed=0),
            (Xte, yte),
            predict=predict,
        )
        stats = snlp.solve(nlp, solver, callback=lambda p, s, st: p.next_batch(), max_iter=iters)
        results[name] = (stats, nlp.accuracy(stats.solution, stats.state))
        assert stats.state_policy == ("freeze" if name == "lbfgs" else "propagate")
    assert results["lbfgs"][1] > 0.9, results["lbfgs"][1]
    assert results["adam"][1] > 0.9, results["adam"][1]


def test_reject_on_a_module_that_updates_batchnorm_statistics():
    nlp = snlp.FlaxNLPModel(
        Net(nnx.Rngs(0)), ce_loss, (jnp.ones((4, 8, 8)), jnp.zeros(4, jnp.int32))
    )
    with pytest.raises(snlp.StateMutationError) as info:
        snlp.solve(nlp, "lbfgs", state_policy="reject")
    assert any("bn" in leaf and "mean" in leaf for leaf in info.value.leaves)


def test_flax_errors():
    with pytest.raises(snlp.InvalidTypeError, match="model"):
        snlp.FlaxNLPModel(object(), ce_loss, None)
    with pytest.raises(snlp.InvalidArgumentError, match="variables"):
        snlp.FlaxNLPModel(
            Net(nnx.Rngs(0)),
            ce_loss,
            (jnp.ones((4, 8, 8)), jnp.zeros(4, jnp.int32)),
            variables=nnx.Cache,
        )
    nlp = snlp.FlaxNLPModel(
        Net(nnx.Rngs(0)), ce_loss, (jnp.ones((4, 8, 8)), jnp.zeros(4, jnp.int32))
    )
    with pytest.raises(snlp.InvalidArgumentError, match="predict"):
        nlp.accuracy(nlp.x0, nlp.state0)
