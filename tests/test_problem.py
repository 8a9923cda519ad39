"""The problem layer: derivatives, counters, batches, state, retracing, dtypes, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import quartic_problem

import statefulnlp as snlp


def _flat_reference(fn, x0, state, batch):
    """jax.grad / jax.hessian of fn through ravel_pytree (independent of our flattener)."""
    flat0, unravel = jax.flatten_util.ravel_pytree(x0)

    def f(z):
        return fn(unravel(z), state, batch)[0]

    return flat0, f


@pytest.mark.usefixtures("x64")
def test_derivatives_match_jax_in_float64():
    fn, x0, batch = quartic_problem(jnp.float64)
    nlp = snlp.StatefulNLPModel(fn, x0, data=batch)
    assert nlp.x0.dtype == jnp.float64
    flat0, f = _flat_reference(fn, x0, None, batch)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = flat0 + jnp.asarray(rng.normal(size=flat0.shape))
        v = jnp.asarray(rng.normal(size=flat0.shape))
        fx, _ = nlp.obj(x, None)
        g, _ = nlp.grad(x, None)
        fo, go, _ = nlp.objgrad(x, None)
        hv, _ = nlp.hprod(x, v, None)
        np.testing.assert_allclose(fx, f(x), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(g, jax.grad(f)(x), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(go, g, rtol=0, atol=1e-12)
        assert float(fo) == float(fx)  # objgrad's loss is obj's loss
        np.testing.assert_allclose(hv, jax.hessian(f)(x) @ v, rtol=1e-10, atol=1e-10)


def test_flat_layout_follows_tree_leaves():
    x0 = {"b": jnp.arange(2.0), "a": jnp.ones((2, 2))}
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x["a"]) + jnp.sum(x["b"]), s), x0)
    np.testing.assert_array_equal(nlp.x0, jnp.concatenate([jnp.ones(4), jnp.arange(2.0)]))
    back = nlp.unflatten(nlp.x0)
    np.testing.assert_array_equal(back["a"], x0["a"])
    np.testing.assert_array_equal(nlp.flatten(back), nlp.x0)
    assert nlp.nvar == 6


def test_counters_count_each_kind():
    fn, x0, batch = quartic_problem()
    nlp = snlp.StatefulNLPModel(fn, x0, data=batch)
    x, v = nlp.x0, jnp.ones(nlp.nvar)
    nlp.obj(x)
    nlp.obj(x)
    nlp.grad(x)
    nlp.objgrad(x)
    nlp.hprod(x, v)
    assert (nlp.counters.obj, nlp.counters.grad, nlp.counters.hprod) == (3, 2, 1)
    nlp.reset_counters()
    assert (nlp.counters.obj, nlp.counters.grad, nlp.counters.hprod) == (0, 0, 0)


def test_state_flows_through_every_method():
    def fn(x, state, batch):
        return jnp.sum(x**2), {"count": state["count"] + 1, "last": jnp.sum(x)}

    state0 = {"count": 0, "last": 0.0}
    nlp = snlp.StatefulNLPModel(fn, jnp.ones(3), state=state0)
    _f, s1 = nlp.obj(nlp.x0, nlp.state0)
    assert int(s1["count"]) == 1 and float(s1["last"]) == 3.0
    _, s2 = nlp.grad(nlp.x0, s1)
    _, _, s3 = nlp.objgrad(nlp.x0, s2)
    _, s4 = nlp.hprod(nlp.x0, jnp.ones(3), s3)
    assert int(s4["count"]) == 4
    assert state0 == {"count": 0, "last": 0.0}  # the user's state is untouched


def test_minibatches_advance_and_wrap_per_epoch():
    X = np.arange(10, dtype=np.float32)[:, None]
    loader = snlp.DataLoader((X, X), batch_size=3, shuffle=True, seed=4)
    assert len(loader) == 3  # the short last batch is dropped

    def fn(x, state, batch):
        return jnp.sum(x * batch[0]), state

    nlp = snlp.StatefulNLPModel(fn, jnp.ones(1), data=loader)
    seen = []
    for _ in range(7):
        seen.append(tuple(np.asarray(nlp.batch[0][:, 0]).tolist()))
        nlp.next_batch()
    epoch0 = seen[:3]
    flat0 = sorted(v for b in epoch0 for v in b)
    assert len(set(flat0)) == 9  # 9 distinct samples in one epoch, none repeated
    assert seen[3:6] != epoch0  # reshuffled for epoch 1
    order1 = loader.order(1)
    assert seen[3] == tuple(float(i) for i in order1[:3])
    assert seen[6] == tuple(float(i) for i in loader.order(2)[:3])  # wrapped into epoch 2


def test_list_and_generator_streams_reiterate():
    batches = [jnp.full((2,), float(i)) for i in range(3)]

    def fn(x, state, batch):
        return jnp.sum(x * batch), state

    for data in (batches, (b for b in batches)):
        nlp = snlp.StatefulNLPModel(fn, jnp.ones(2), data=data)
        values = []
        for _ in range(7):
            values.append(float(nlp.obj(nlp.x0)[0]))
            nlp.next_batch()
        assert values == [0.0, 2.0, 4.0, 0.0, 2.0, 4.0, 0.0]


def test_no_retrace_across_minibatches():
    X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    loader = snlp.DataLoader((X,), batch_size=16)

    def fn(x, state, batch):
        return jnp.mean((batch[0] @ x) ** 2), state

    nlp = snlp.StatefulNLPModel(fn, jnp.ones(3), data=loader)
    for _ in range(10):
        nlp.obj(nlp.x0)
        nlp.objgrad(nlp.x0)
        nlp.hprod(nlp.x0, nlp.x0)
        nlp.next_batch()
    assert nlp.trace_counts == {"obj": 1, "objgrad": 1, "hprod": 1}


def test_batchnorm_state_changes_and_is_usable():
    from conftest import digits_split, make_mlp, mlp_loss, mlp_predict

    Xtr, Xte, ytr, yte = digits_split()
    model, state = make_mlp()
    nlp = snlp.EquinoxNLPModel(
        model, state, mlp_loss, snlp.DataLoader((Xtr, ytr), 32), (Xte, yte), predict=mlp_predict
    )
    _f, s1 = nlp.obj(nlp.x0, nlp.state0)
    before = jax.tree_util.tree_leaves(nlp.state0[0])
    after = jax.tree_util.tree_leaves(s1[0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))  # BN statistics moved
    assert not np.array_equal(
        jax.random.key_data(nlp.state0[1]), jax.random.key_data(s1[1])
    )  # dropout key advanced
    f2, s2 = nlp.obj(nlp.x0, s1)  # the new state is a valid input
    assert np.isfinite(float(f2))
    acc = nlp.accuracy(nlp.x0, s2)
    assert 0.0 <= acc <= 1.0
    model2 = nlp.to_model(nlp.x0)
    assert jax.tree_util.tree_structure(model2) == jax.tree_util.tree_structure(model)


def test_leaf_dtypes_are_kept():
    x0 = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3, jnp.float32)}
    seen = {}

    def fn(x, state, batch):
        seen["dtypes"] = (x["a"].dtype, x["b"].dtype)
        return jnp.sum(x["a"].astype(jnp.float32)) + jnp.sum(x["b"]), state

    nlp = snlp.StatefulNLPModel(fn, x0)
    assert nlp.x0.dtype == jnp.float32  # result_type of the leaves
    nlp.obj(nlp.x0)
    assert seen["dtypes"] == (jnp.bfloat16, jnp.float32)  # each leaf in its own dtype
    assert nlp.unflatten(nlp.x0)["a"].dtype == jnp.bfloat16


def test_bfloat16_model_evaluates():
    def fn(x, state, batch):
        return jnp.sum(x**2), state

    nlp = snlp.StatefulNLPModel(fn, jnp.ones(4, jnp.bfloat16))
    assert nlp.x0.dtype == jnp.bfloat16
    f, g, _ = nlp.objgrad(nlp.x0)
    assert f.dtype == jnp.bfloat16 and float(f) == 4.0
    np.testing.assert_array_equal(np.asarray(g, np.float32), 2 * np.ones(4))


def test_float64_when_x64_enabled():
    with jax.enable_x64(True):
        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), np.ones(3))
        assert nlp.x0.dtype == jnp.float64
    nlp32 = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), np.ones(3))
    assert nlp32.x0.dtype == jnp.float32


def test_inputs_are_not_mutated():
    x0 = {"w": np.ones(3)}
    state = {"c": np.zeros(2)}
    data = (np.arange(6.0).reshape(3, 2),)
    copies = (x0["w"].copy(), state["c"].copy(), data[0].copy())

    def fn(x, s, b):
        return jnp.sum(x["w"]) + jnp.sum(b[0]), {"c": s["c"] + 1}

    nlp = snlp.StatefulNLPModel(fn, x0, state, data)
    nlp.objgrad(nlp.x0)
    x0["w"][0] = 100.0  # later changes by the user do not leak in either
    np.testing.assert_array_equal(nlp.unflatten(nlp.x0)["w"], np.ones(3))
    np.testing.assert_array_equal(copies[1], state["c"])
    np.testing.assert_array_equal(copies[2], data[0])


# ---------------------------------------------------------------------------
# Bad calls (the constructors' bad input is in test_errors.py).


def _pure(x, state, batch):
    return jnp.sum(x**2), state


def test_bad_calls_are_clear_errors():
    nlp = snlp.StatefulNLPModel(_pure, jnp.ones(3), state=jnp.zeros(2))
    with pytest.raises(
        snlp.InvalidArgumentError, match=r"x: expected a flat vector of shape \(3,\)"
    ):
        nlp.obj(jnp.ones(4), nlp.state0)
    with pytest.raises(snlp.InvalidArgumentError, match=r"v: expected a flat vector"):
        nlp.hprod(nlp.x0, jnp.ones(2), nlp.state0)
    with pytest.raises(snlp.InvalidTypeError, match="dtype float32"):
        nlp.obj(jnp.ones(3, jnp.int32), nlp.state0)
    with pytest.raises(snlp.InvalidArgumentError, match="state"):
        nlp.obj(nlp.x0, {"other": jnp.zeros(2)})
    with pytest.raises(snlp.InvalidArgumentError, match="state"):
        nlp.grad(nlp.x0, jnp.zeros(3))
    with pytest.raises(snlp.InvalidTypeError, match="x: expected an array"):
        nlp.obj(object(), nlp.state0)
