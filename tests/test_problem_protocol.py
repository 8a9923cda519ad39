"""The public problem protocol: a problem class written by a user solves with every solver.

The class below implements only the documented members of `AbstractNLPModel`
(no StatefulNLPModel underneath): a least-squares fit with its own minibatch
stream, whose state counts evaluations. Reading any private attribute of it
from `statefulnlp.solvers` fails the test.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import statefulnlp as snlp


class Regression(snlp.AbstractNLPModel):
    """y ≈ X w + b on rows taken 16 at a time from generated data."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self._X = jnp.asarray(rng.normal(size=(64, 3)), jnp.float32)
        w_true = jnp.array([1.0, -2.0, 0.5])
        self._y = self._X @ w_true + 0.3
        self._start = 0
        self._version = 0
        self._objective = snlp.Objective.from_function(
            self._loss, {"w": jnp.zeros(3), "b": jnp.zeros(())}, jnp.int32(0)
        )

    @staticmethod
    def _loss(params, count, batch):
        X, y = batch
        residual = X @ params["w"] + params["b"] - y
        return jnp.mean(residual**2), count + 1

    def __getattribute__(self, name):
        if name.startswith("_") and not name.startswith("__"):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("statefulnlp.solvers"):
                raise AssertionError(f"{caller} read the private attribute {name} of a problem")
        return object.__getattribute__(self, name)

    # -- the protocol -------------------------------------------------------------
    @property
    def objective(self):
        return self._objective

    @property
    def x0(self):
        return jnp.zeros(4)

    @property
    def state0(self):
        return jnp.int32(0)

    @property
    def batch(self):
        rows = slice(self._start, self._start + 16)
        return self._X[rows], self._y[rows]

    @property
    def batch_version(self):
        return self._version

    def next_batch(self):
        self._start = (self._start + 16) % 64
        self._version += 1

    @property
    def data_kind(self):
        return "regression-rows"

    @property
    def exact_resume(self):
        return True

    def data_position(self):
        return {"start": self._start}

    def restore_data_position(self, position):
        self._start = int(position["start"])


def _advance(nlp, solver, stats):
    nlp.next_batch()


CASES = {
    "lbfgs": (lambda p: p, "lbfgs"),
    "r2": (lambda p: p, "r2"),
    "trunk": (lambda p: p, "trunk"),
    "adam": (lambda p: p, snlp.solvers.Optax(optax.adam(0.05))),
    "lsr1+trunk": (snlp.LSR1Model, "trunk"),
    "lbfgs-model+trunk": (snlp.LBFGSModel, "trunk"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_defined_problem_solves_with_every_solver(case):
    wrap, solver = CASES[case]
    problem = wrap(Regression())
    full_batch = snlp.solve(problem, solver, max_iter=300)
    assert full_batch.status in ("first_order", "max_iter")
    assert full_batch.objective < 1e-3  # the data are exactly linear
    np.testing.assert_allclose(
        np.asarray(full_batch.solution), [0.3, 1.0, -2.0, 0.5], atol=2e-2
    )  # b, then w
    assert int(full_batch.state) >= full_batch.accepted  # the state was carried
    version = problem.batch_version
    minibatch = snlp.solve(problem, solver, x0=full_batch.solution, max_iter=20, callback=_advance)
    assert minibatch.status in ("first_order", "max_iter") and minibatch.objective < 5e-2
    assert problem.batch_version == version + minibatch.iter  # the driver saw every batch


def test_a_user_defined_problem_checkpoints_and_resumes_exactly(tmp_path):
    path = tmp_path / "run.ckpt"
    full = snlp.solve(Regression(), "lbfgs", max_iter=8, callback=_advance, atol=0, rtol=0)
    snlp.solve(Regression(), "lbfgs", max_iter=4, callback=_advance, checkpoint=path)
    resumed = snlp.solve(
        Regression(), "lbfgs", max_iter=8, callback=_advance, resume=path, atol=0, rtol=0
    )
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))
    assert int(resumed.state) == int(full.state)

    class Huber(Regression):  # the same data, another objective
        @staticmethod
        def _loss(params, count, batch):
            X, y = batch
            return jnp.mean(optax.huber_loss(X @ params["w"] + params["b"], y)), count + 1

    with pytest.raises(snlp.CheckpointError, match="mismatch in the problem"):
        snlp.solve(Huber(), "lbfgs", max_iter=8, callback=_advance, resume=path)


def test_a_problem_missing_a_required_member_says_which():
    class Incomplete(snlp.AbstractNLPModel):
        pass

    with pytest.raises(snlp.InvalidTypeError, match=r"nlp: Incomplete .* `objective`"):
        snlp.solve(Incomplete(), "lbfgs")
