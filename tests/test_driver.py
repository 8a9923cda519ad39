"""The host loop as a user meets it: messages, the verbose log, callback verdicts, dtypes."""

from __future__ import annotations

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import statefulnlp as snlp


def _rosenbrock(x, state, batch):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), state


# The three ways the driver runs a solve: one device call, chunks, one iteration per call.
PATHS = {
    "one_call": {},
    "chunks": {"max_time": 1e6},
    "callback": {"callback": lambda nlp, solver, stats: None},
}


@pytest.mark.parametrize("path", list(PATHS))
def test_nonfinite_error_reports_the_values_found(path):
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(jnp.log(x - 2.0)), s), jnp.ones(2))
    with pytest.raises(snlp.NonFiniteError) as info:
        snlp.solve(nlp, "lbfgs", **PATHS[path])
    message = str(info.value)
    assert "f = nan" in message, message
    assert "f = 0.0" not in message and "‖g‖ = 0.0" not in message, message


def test_state_mutation_error_names_equinox_state_entries():
    model, state = eqx.nn.make_with_state(eqx.nn.Sequential)(
        [
            eqx.nn.Linear(3, 4, key=jax.random.key(0)),
            eqx.nn.BatchNorm(4, axis_name="batch", mode="batch"),
        ]
    )

    def loss(model, state, batch):
        out, state = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(
            batch, state
        )
        return jnp.mean(out**2), state

    nlp = snlp.EquinoxNLPModel(model, state, loss, jnp.arange(15.0).reshape(5, 3))
    with pytest.raises(snlp.StateMutationError) as info:
        snlp.solve(nlp, "lbfgs", state_policy="reject")
    assert "flat index" not in str(info.value)
    assert info.value.leaves, "the changed leaves are listed"
    for leaf in info.value.leaves:
        assert "Sequential.layers[1]" in leaf, leaf  # the BatchNorm that owns the entry


def _log_table(output: str) -> tuple[list[str], list[list[float]]]:
    lines = [line for line in output.splitlines() if line.strip()]
    header_at = next(i for i, line in enumerate(lines) if line.split()[0] == "iter")
    header = lines[header_at].split()
    rows = [[float(v.rstrip("s")) for v in line.split()] for line in lines[header_at + 1 :]]
    return header, rows


@pytest.mark.parametrize("solver", ["r2", "trunk", "lbfgs"])
def test_verbose_log_labels_each_column_with_its_own_value(solver, capsys):
    """Read the printed table back; each named column equals solver.diagnostics()."""
    nlp = snlp.StatefulNLPModel(_rosenbrock, jnp.array([-1.2, 1.0, -0.5]))
    seen = {}

    def record(nlp, solver_obj, stats):
        seen[stats.iter] = {
            k: float(v) for k, v in solver_obj.diagnostics(stats.solver_state).items()
        }

    snlp.solve(nlp, solver, verbose=1, max_iter=8, callback=record)
    header, rows = _log_table(capsys.readouterr().out)
    assert header[:3] == ["iter", "f(x)", "‖∇f‖"] and header[-1] == "time"
    columns = header[3:-1]
    assert sorted(columns) == sorted(seen[1])  # every diagnostic is shown
    for row in rows[1:]:
        iteration = int(row[0])
        for name, value in zip(columns, row[3:-1]):
            expected = seen[iteration][name]
            assert value == pytest.approx(expected, rel=1e-2, abs=1e-300), (name, iteration)


@pytest.mark.parametrize("verdict", [True, np.True_, np.bool_(True), jnp.asarray(True)])
def test_any_true_boolean_scalar_from_the_callback_stops(verdict):
    nlp = snlp.StatefulNLPModel(_rosenbrock, jnp.zeros(3))
    stats = snlp.solve(nlp, "lbfgs", callback=lambda *a: verdict)
    assert stats.status == "user" and stats.iter == 1


@pytest.mark.parametrize("verdict", [None, False, np.False_, jnp.asarray(False)])
def test_none_or_false_from_the_callback_goes_on(verdict):
    nlp = snlp.StatefulNLPModel(_rosenbrock, jnp.zeros(3))
    stats = snlp.solve(nlp, "lbfgs", callback=lambda *a: verdict, max_iter=5)
    assert stats.status == "max_iter" and stats.iter == 5


def test_problem_built_in_x64_and_solved_outside_says_what_to_do():
    with jax.enable_x64(True):
        nlp = snlp.StatefulNLPModel(_rosenbrock, np.zeros(3))
        inside = snlp.solve(nlp, "lbfgs")
    assert inside.status == "first_order"
    with pytest.raises(snlp.InvalidTypeError, match=re.escape("jax.enable_x64(True)")):
        snlp.solve(nlp, "lbfgs")
    assert nlp.counters.obj == inside.counters["obj"]  # refused before any evaluation


def test_float32_problem_solves_under_x64():
    nlp = snlp.StatefulNLPModel(_rosenbrock, jnp.zeros(3))
    with jax.enable_x64(True):
        stats = snlp.solve(nlp, "lbfgs")
    assert stats.status == "first_order" and stats.solution.dtype == jnp.float32


def test_the_stopping_measure_is_the_solvers(clean_registry):
    """A solver that measures stationarity its own way stops, and reports, by that measure."""

    class InfinityNorm(snlp.solvers.LBFGS):
        def stationarity(self, point):
            return jnp.max(jnp.abs(point.g))

    snlp.traits.register(InfinityNorm, one_step_safe=False)
    nlp = snlp.StatefulNLPModel(_rosenbrock, jnp.array([-1.2, 1.0, 0.5, 2.0]))
    stats = snlp.solve(nlp, InfinityNorm(), atol=1e-3, rtol=0)
    _, g, _ = nlp.objgrad(stats.solution, nlp.state0)
    assert stats.status == "first_order"
    assert stats.dual_feas == pytest.approx(float(jnp.max(jnp.abs(g))), rel=1e-5)
    assert stats.dual_feas <= 1e-3
