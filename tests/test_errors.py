"""Bad input everywhere gets a typed error naming the argument; user errors pass through.

Each case is (what to call, the builtin it must also be, words the message must contain).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statefulnlp as snlp
from statefulnlp import traits


def _pure(x, state, batch):
    return jnp.sum(x**2), state


def _nlp():
    return snlp.StatefulNLPModel(_pure, jnp.ones(3))


class _ArrayStep(snlp.solvers.AbstractSolver):
    """A solver whose setting is an array: it cannot be a static argument of jit."""

    scale: jax.Array

    def init(self, point):
        return None

    def step(self, oracle, point, solver_state):
        return (
            snlp.solvers.Step(point.x - self.scale * point.g, jnp.asarray(True), None),
            None,
            oracle,
        )


def _solve_array_step():
    traits.register(_ArrayStep, one_step_safe=True, name="test-array-step")
    snlp.solve(_nlp(), _ArrayStep(jnp.ones(3)))


def _solve(**kwargs):
    return lambda: snlp.solve(_nlp(), kwargs.pop("solver", "lbfgs"), **kwargs)


CASES = {
    # problem constructors
    "fn not callable": (lambda: snlp.StatefulNLPModel("nope", jnp.ones(2)), TypeError, "fn"),
    "x0 integer": (lambda: snlp.StatefulNLPModel(_pure, jnp.arange(3)), TypeError, "x0"),
    "x0 empty": (lambda: snlp.StatefulNLPModel(_pure, {}), ValueError, "x0"),
    "x0 NaN": (lambda: snlp.StatefulNLPModel(_pure, jnp.array([1.0, jnp.nan])), ValueError, "x0"),
    "x0 string leaf": (lambda: snlp.StatefulNLPModel(_pure, ["a"]), TypeError, "x0"),
    "fn returns scalar": (
        lambda: snlp.StatefulNLPModel(lambda x, s, b: jnp.sum(x), jnp.ones(2)),
        TypeError,
        "pair",
    ),
    "fn returns vector": (
        lambda: snlp.StatefulNLPModel(lambda x, s, b: (x, s), jnp.ones(2)),
        TypeError,
        "scalar",
    ),
    "fn returns 3-tuple": (
        lambda: snlp.StatefulNLPModel(lambda x, s, b: (1, 2, 3), jnp.ones(2)),
        TypeError,
        "3-tuple",
    ),
    "fn returns int loss": (
        lambda: snlp.StatefulNLPModel(lambda x, s, b: (jnp.int32(1), s), jnp.ones(2)),
        TypeError,
        "float",
    ),
    "state changes dtype": (
        lambda: snlp.StatefulNLPModel(
            lambda x, s, b: (jnp.sum(x), s.astype(jnp.float32)), jnp.ones(2), state=jnp.int32(0)
        ),
        ValueError,
        "dtype",
    ),
    "state changes structure": (
        lambda: snlp.StatefulNLPModel(
            lambda x, s, b: (jnp.sum(x), {"a": s}), jnp.ones(2), state=jnp.zeros(2)
        ),
        ValueError,
        "structure",
    ),
    "state changes shape": (
        lambda: snlp.StatefulNLPModel(
            lambda x, s, b: (jnp.sum(x), s[:1]), jnp.ones(2), state=jnp.zeros(2)
        ),
        ValueError,
        "shape",
    ),
    "state non-array leaf": (
        lambda: snlp.StatefulNLPModel(_pure, jnp.ones(2), state={"k": "text"}),
        TypeError,
        "state",
    ),
    "data empty list": (
        lambda: snlp.StatefulNLPModel(_pure, jnp.ones(2), data=[]),
        ValueError,
        "data",
    ),
    "data empty generator": (
        lambda: snlp.StatefulNLPModel(_pure, jnp.ones(2), data=iter([])),
        ValueError,
        "data",
    ),
    "data number": (lambda: snlp.StatefulNLPModel(_pure, jnp.ones(2), data=42), TypeError, "data"),
    "data ragged batches": (
        lambda: _ragged(),
        ValueError,
        "data",
    ),
    "mesh not a mesh": (
        lambda: snlp.StatefulNLPModel(_pure, jnp.ones(2), mesh="cpu"),
        TypeError,
        "mesh",
    ),
    "loader ragged arrays": (
        lambda: snlp.DataLoader((np.ones((4, 2)), np.ones(3)), 2),
        ValueError,
        "arrays",
    ),
    "loader batch_size 0": (lambda: snlp.DataLoader(np.ones((4, 2)), 0), ValueError, "batch_size"),
    "loader batch too big": (lambda: snlp.DataLoader(np.ones((4, 2)), 8), ValueError, "batch_size"),
    "loader no samples": (lambda: snlp.DataLoader(np.ones((0, 2)), 1), ValueError, "arrays"),
    "loader string": (lambda: snlp.DataLoader("abc", 1), TypeError, "arrays"),
    "loader negative seed": (
        lambda: snlp.DataLoader(np.ones((4, 2)), 2, seed=-1),
        ValueError,
        "seed",
    ),
    "equinox model not a module": (
        lambda: snlp.EquinoxNLPModel(object(), None, _pure, None),
        TypeError,
        "model",
    ),
    "equinox loss not callable": (lambda: _eqx(loss=3), TypeError, "loss"),
    "accuracy without predict": (lambda: _eqx().accuracy(_eqx().x0, None), ValueError, "predict"),
    # methods
    "obj wrong length": (lambda: _nlp().obj(jnp.ones(4)), ValueError, "x"),
    "hprod wrong length v": (lambda: _nlp().hprod(jnp.ones(3), jnp.ones(2)), ValueError, "v"),
    "obj wrong dtype": (lambda: _nlp().obj(jnp.ones(3, jnp.int32)), TypeError, "x"),
    "obj wrong state": (lambda: _nlp().obj(jnp.ones(3), {"s": jnp.ones(2)}), ValueError, "state"),
    # solve
    "solve nlp not a problem": (lambda: snlp.solve("problem", "lbfgs"), TypeError, "nlp"),
    "solve unknown solver": (_solve(solver="bfgs"), KeyError, "solver"),
    "solve non-solver": (_solve(solver=object()), TypeError, "solver"),
    "solver with an array setting": (
        _solve_array_step,
        TypeError,
        "unhashable",
    ),
    "solve unknown policy": (_solve(state_policy="frozen"), KeyError, "state_policy"),
    "solve policy not a str": (_solve(state_policy=1), TypeError, "state_policy"),
    "solve negative atol": (_solve(atol=-1.0), ValueError, "atol"),
    "solve NaN rtol": (_solve(rtol=float("nan")), ValueError, "rtol"),
    "solve infinite atol": (_solve(atol=float("inf")), ValueError, "atol"),
    "solve string rtol": (_solve(rtol="1e-3"), TypeError, "rtol"),
    "solve negative max_iter": (_solve(max_iter=-1), ValueError, "max_iter"),
    "solve float max_iter": (_solve(max_iter=2.5), TypeError, "max_iter"),
    "solve negative max_eval": (_solve(max_eval=-3), ValueError, "max_eval"),
    "solve NaN max_time": (_solve(max_time=float("nan")), ValueError, "max_time"),
    "solve negative verbose": (_solve(verbose=-1), ValueError, "verbose"),
    "solve callback not callable": (_solve(callback=5), TypeError, "callback"),
    "solve checkpoint_every alone": (_solve(checkpoint_every=3), ValueError, "checkpoint_every"),
    "solve resume not a path": (_solve(resume=3.5), TypeError, "resume"),
    "propagate with lbfgs": (_solve(state_policy="propagate"), ValueError, "state_policy"),
    "non-finite objective at x0": (
        lambda: snlp.solve(
            snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(jnp.log(x)), s), -jnp.ones(2)), "lbfgs"
        ),
        FloatingPointError,
        "x0",
    ),
    # solver settings
    "lbfgs mem 0": (lambda: snlp.solvers.LBFGS(mem=0), ValueError, "mem"),
    "lbfgs mem float": (lambda: snlp.solvers.LBFGS(mem=2.5), ValueError, "mem"),
    "r2 eta out of range": (lambda: snlp.solvers.R2(eta1=2.0), ValueError, "eta1"),
    "trunk bad factors": (lambda: snlp.solvers.Trunk(decrease=2.0), ValueError, "decrease"),
    "trunk bad cg": (lambda: snlp.solvers.Trunk(cg="cg"), TypeError, "cg"),
    "optax not a transformation": (lambda: snlp.solvers.Optax("adam"), TypeError, "transformation"),
    "optax bad declaration": (
        lambda: snlp.solvers.Optax(optax.adam(1e-3), one_step_safe="yes"),
        TypeError,
        "one_step_safe",
    ),
    "gd negative rate": (lambda: snlp.solvers.GradientDescent(-1.0), ValueError, "learning_rate"),
    "wolfe constants": (lambda: snlp.solvers.StrongWolfe(c1=0.95, c2=0.9), ValueError, "c1"),
    "lsr1 mem 0": (lambda: snlp.LSR1Model(_nlp(), mem=0), ValueError, "mem"),
    # traits
    "register without bool": (
        lambda: traits.register(snlp.solvers.R2, one_step_safe="no"),
        TypeError,
        "one_step_safe",
    ),
    "register non-solver": (lambda: traits.register(dict, one_step_safe=True), TypeError, "cls"),
    "traits of unknown name": (lambda: traits.of("newton"), KeyError, "solver"),
    "traits of a number": (lambda: traits.of(3.0), TypeError, "solver"),
    # inputs that mean something else
    "x0 with no element": (lambda: snlp.StatefulNLPModel(_pure, jnp.zeros(0)), ValueError, "x0"),
    "data=[X, y] list": (
        lambda: snlp.StatefulNLPModel(
            _pure, jnp.ones(2), data=[np.ones((4, 3), np.float32), np.zeros(4, np.int32)]
        ),
        ValueError,
        "data=(X, y)",
    ),
    "accuracy without state": (
        lambda: _classifier().accuracy(_classifier().x0),
        TypeError,
        "state",
    ),
    "accuracy with 1-D predict": (
        lambda: _classifier(predict=lambda m, s, X: jax.vmap(m)(X)[:, 0]).accuracy(
            _classifier().x0, None
        ),
        ValueError,
        "predict",
    ),
    "accuracy with float labels": (
        lambda: _classifier().accuracy(_classifier().x0, None, (jnp.ones((3, 2)), jnp.zeros(3))),
        TypeError,
        "labels",
    ),
    # warm starts
    "solve x0 wrong length": (_solve(x0=jnp.ones(4)), ValueError, "x0"),
    "solve x0 wrong structure": (_solve(x0={"w": jnp.ones(3)}), ValueError, "x0"),
    "solve x0 NaN": (_solve(x0=jnp.array([1.0, jnp.nan, 0.0])), ValueError, "x0"),
    "solve x0 wrong dtype": (_solve(x0=np.ones(3, np.int32)), TypeError, "x0"),
    "solve state wrong structure": (_solve(state={"a": jnp.ones(1)}), ValueError, "state"),
    # callbacks and checkpoints
    "callback returns a number": (_solve(callback=lambda *a: 1), TypeError, "callback"),
    "callback returns a vector": (
        _solve(callback=lambda *a: jnp.array([True, False])),
        TypeError,
        "callback",
    ),
    "checkpoint is a directory": (
        lambda: snlp.solve(_nlp(), checkpoint="."),
        ValueError,
        "checkpoint",
    ),
    "checkpoint parent missing": (
        lambda: snlp.solve(_nlp(), checkpoint="/nonexistent-dir/run.ckpt"),
        ValueError,
        "checkpoint",
    ),
}


def _ragged():
    nlp = snlp.StatefulNLPModel(
        lambda x, s, b: (jnp.sum(x) * jnp.sum(b), s),
        jnp.ones(2),
        data=(b for b in [jnp.ones(2), jnp.ones(2, jnp.int32)]),
    )
    nlp.next_batch()


def _classifier(predict=None):
    import equinox as eqx
    import jax

    model = eqx.nn.Linear(2, 2, key=jax.random.key(0))
    return snlp.EquinoxNLPModel(
        model,
        None,
        lambda m, s, b: (jnp.sum(jax.vmap(m)(b[0]) ** 2), s),
        (jnp.ones((3, 2)), jnp.zeros(3, jnp.int32)),
        test_data=(jnp.ones((3, 2)), jnp.zeros(3, jnp.int32)),
        predict=predict or (lambda m, s, X: jax.vmap(m)(X)),
    )


def _eqx(loss=None):
    import equinox as eqx
    import jax

    model = eqx.nn.Linear(2, 2, key=jax.random.key(0))

    def default_loss(m, s, b):
        return jnp.sum(jax.vmap(m)(b[0]) ** 2), s

    return snlp.EquinoxNLPModel(
        model,
        None,
        default_loss if loss is None else loss,
        (jnp.ones((3, 2)), jnp.zeros(3, jnp.int32)),
    )


def test_at_least_thirty_bad_inputs():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_typed_error(case, clean_registry):
    call, builtin, words = CASES[case]
    with pytest.raises(snlp.StatefulNLPError) as info:
        call()
    assert isinstance(info.value, builtin), f"{type(info.value).__mro__} is not a {builtin}"
    assert words in str(info.value), str(info.value)


def test_user_errors_pass_through_unchanged():
    class MyError(Exception):
        pass

    def fn(x, state, batch):
        raise MyError("from the user")

    with pytest.raises(MyError, match="from the user"):
        snlp.StatefulNLPModel(fn, jnp.ones(2))


def test_inputs_are_never_mutated():
    x0 = {"w": np.linspace(0.0, 1.0, 4)}
    state = {"count": np.zeros((), np.int32), "ema": np.zeros(4)}
    X = np.arange(24.0).reshape(6, 4)
    copies = (x0["w"].copy(), state["count"].copy(), state["ema"].copy(), X.copy())

    def fn(x, s, batch):
        loss = jnp.mean((batch[0] @ x["w"] - 1.0) ** 2)
        return loss, {"count": s["count"] + 1, "ema": 0.9 * s["ema"] + 0.1 * x["w"]}

    loader = snlp.DataLoader((X,), 3)
    nlp = snlp.StatefulNLPModel(fn, x0, state, loader)
    x0_flat = np.asarray(nlp.x0).copy()
    for solver in ("lbfgs", "r2", "trunk"):
        snlp.solve(nlp, solver, max_iter=5, callback=lambda p, s, st: p.next_batch())
    np.testing.assert_array_equal(x0["w"], copies[0])
    np.testing.assert_array_equal(state["count"], copies[1])
    np.testing.assert_array_equal(state["ema"], copies[2])
    np.testing.assert_array_equal(X, copies[3])
    assert set(state) == {"count", "ema"} and set(x0) == {"w"}
    np.testing.assert_array_equal(np.asarray(nlp.x0), x0_flat)
    assert int(nlp.state0["count"]) == 0
