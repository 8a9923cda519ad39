"""Checkpoint and resume: exact continuation, safe format, clear errors."""

from __future__ import annotations

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import make_mlp, mlp_loss
from hypothesis import given
from hypothesis import strategies as st

import statefulnlp as snlp

TOTAL = 24


def _same_tree(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _mlp_problem():
    """BatchNorm + dropout-key state, a DataLoader advanced from the callback."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=96)
    model, state = make_mlp()
    return snlp.EquinoxNLPModel(model, state, mlp_loss, snlp.DataLoader((X, y), 16, seed=3))


def _advance(nlp, solver, stats):
    nlp.next_batch()


SOLVERS = {
    "lbfgs": snlp.solvers.LBFGS(mem=4),
    "r2": snlp.solvers.R2(),
    "trunk": snlp.solvers.Trunk(),
    "adam": snlp.solvers.Optax(optax.adam(1e-2)),
}


@pytest.mark.parametrize("name", list(SOLVERS))
@given(stop=st.integers(min_value=1, max_value=TOTAL - 1))
def test_interrupted_then_resumed_equals_uninterrupted(name, stop, tmp_path_factory):
    solver = SOLVERS[name]
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    full_nlp = _mlp_problem()
    full = snlp.solve(full_nlp, solver, callback=_advance, max_iter=TOTAL, atol=0, rtol=0)

    first = _mlp_problem()
    snlp.solve(first, solver, callback=_advance, max_iter=stop, checkpoint=path, atol=0, rtol=0)
    again = _mlp_problem()  # a fresh problem, as in a new process
    resumed = snlp.solve(
        again, solver, callback=_advance, max_iter=TOTAL, resume=path, atol=0, rtol=0
    )

    assert resumed.iter == full.iter == TOTAL
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))
    _same_tree(resumed.state, full.state)
    _same_tree(resumed.solver_state, full.solver_state)
    assert resumed.counters == full.counters
    assert resumed.objective == full.objective and resumed.status == full.status


def test_checkpoint_every_and_file_format(tmp_path):
    path = tmp_path / "every.ckpt"
    nlp = _mlp_problem()
    seen = []

    def callback(p, solver, stats):
        p.next_batch()
        if stats.iter in (1, 4, 7):
            if path.exists():
                with np.load(path, allow_pickle=False) as data:
                    seen.append(json.loads(bytes(data["__meta__"]).decode())["iter"])
            else:
                seen.append(None)

    snlp.solve(nlp, "lbfgs", callback=callback, max_iter=7, checkpoint=path, checkpoint_every=3)
    # Written after iterations 3 and 6 (after their callbacks), then at the end.
    assert seen == [None, 3, 6]
    with np.load(path, allow_pickle=False) as data:  # loads without pickle
        meta = json.loads(bytes(data["__meta__"]).decode())
        assert meta["iter"] == 7 and meta["solver"] == "lbfgs" and meta["state_policy"] == "freeze"
        assert meta["data_position"] == {"epoch": 1, "index": 1}  # 7 batches of 6 per epoch
        assert all(data[k].dtype != object for k in data.files)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_keyboard_interrupt_writes_a_checkpoint(tmp_path):
    path = tmp_path / "interrupt.ckpt"

    def callback(p, solver, stats):
        p.next_batch()
        if stats.iter == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        snlp.solve(_mlp_problem(), "lbfgs", callback=callback, max_iter=20, checkpoint=path)
    resumed = snlp.solve(
        _mlp_problem(), "lbfgs", callback=_advance, max_iter=12, resume=path, atol=0, rtol=0
    )
    full = snlp.solve(_mlp_problem(), "lbfgs", callback=_advance, max_iter=12, atol=0, rtol=0)
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))


def test_quasi_newton_memory_is_checkpointed(tmp_path):
    path = tmp_path / "qn.ckpt"

    def fn(x, s, b):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

    def make():
        return snlp.LSR1Model(snlp.StatefulNLPModel(fn, jnp.array([-1.2, 1.0, -1.2, 1.0])))

    full = snlp.solve(make(), "trunk", max_iter=15, atol=0, rtol=0)
    snlp.solve(make(), "trunk", max_iter=6, atol=0, rtol=0, checkpoint=path)
    resumed = snlp.solve(make(), "trunk", max_iter=15, atol=0, rtol=0, resume=path)
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))


def _write_valid(tmp_path):
    path = tmp_path / "valid.ckpt"
    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(3))
    snlp.solve(nlp, "lbfgs", max_iter=2, checkpoint=path)
    return path


def test_bad_checkpoints_are_clear_errors(tmp_path):
    path = _write_valid(tmp_path)
    pure = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(3))

    with pytest.raises(snlp.CheckpointError, match="no checkpoint file"):
        snlp.solve(pure, "lbfgs", resume=tmp_path / "missing.ckpt")

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(snlp.CheckpointError, match=r"not a readable checkpoint|truncated|metadata"):
        snlp.solve(pure, "lbfgs", resume=truncated)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(snlp.CheckpointError):
        snlp.solve(pure, "lbfgs", resume=garbage)

    other_size = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(4))
    with pytest.raises(snlp.CheckpointError, match="nvar=3"):
        snlp.solve(other_size, "lbfgs", resume=path)
    with pytest.raises(snlp.CheckpointError, match="solver='lbfgs'"):
        snlp.solve(pure, "r2", resume=path)
    with pytest.raises(snlp.CheckpointError, match=r"solver's settings.*mem=2"):
        snlp.solve(pure, snlp.solvers.LBFGS(mem=2), resume=path)
    with pytest.raises(snlp.CheckpointError, match="state_policy"):
        snlp.solve(pure, "lbfgs", state_policy="reject", resume=path)
    with jax.enable_x64(True):
        pure64 = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), np.ones(3))
        with pytest.raises(snlp.CheckpointError, match="dtype"):
            snlp.solve(pure64, "lbfgs", resume=path)

    # A leaf tampered with inside a valid archive.
    tampered = tmp_path / "tampered.ckpt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "leaf_00000.npy":
                buf = __import__("io").BytesIO()
                np.save(buf, np.zeros(7, np.float32))
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises(snlp.CheckpointError, match=r"\.x is float32\[7\]"):
        snlp.solve(pure, "lbfgs", resume=tampered)


def test_checkpoint_arguments_are_checked(tmp_path):
    pure = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(3))
    with pytest.raises(snlp.InvalidArgumentError, match="checkpoint_every"):
        snlp.solve(pure, "lbfgs", checkpoint_every=5)
    with pytest.raises(snlp.InvalidTypeError, match="checkpoint"):
        snlp.solve(pure, "lbfgs", checkpoint=3)
    with pytest.raises(snlp.InvalidArgumentError, match="checkpoint_every"):
        snlp.solve(pure, "lbfgs", checkpoint=tmp_path / "a", checkpoint_every=0)


# ---------------------------------------------------------------------------
# A checkpoint belongs to one solve; resume never reports what it did not compute


def _quadratic(target):
    return snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum((x - target) ** 2), s), jnp.zeros(4))


def _rosenbrock():
    def fn(x, s, b):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

    return snlp.StatefulNLPModel(fn, jnp.zeros(4))


def test_resume_refuses_a_checkpoint_of_another_objective(tmp_path):
    path = tmp_path / "rosenbrock.ckpt"
    snlp.solve(_rosenbrock(), "lbfgs", checkpoint=path)  # converged: first_order
    other = _quadratic(7.0)  # same size, dtype, solver, policy and data kind
    with pytest.raises(snlp.CheckpointError, match="mismatch in the problem"):
        snlp.solve(other, "lbfgs", resume=path)
    assert other.counters.obj == 0


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path):
    path = tmp_path / "run.ckpt"

    def fn(x, s, b):
        return jnp.sum((x - b) ** 2), s

    writer = snlp.StatefulNLPModel(fn, jnp.zeros(4), data=jnp.ones(4))
    snlp.solve(writer, "lbfgs", max_iter=1, checkpoint=path)
    reader = snlp.StatefulNLPModel(fn, jnp.zeros(4), data=2 * jnp.ones(4))  # other numbers
    with pytest.raises(snlp.CheckpointError, match="does not belong to this problem"):
        snlp.solve(reader, "lbfgs", resume=path)


def test_refused_resume_puts_the_data_position_back(tmp_path):
    path = tmp_path / "run.ckpt"
    snlp.solve(_mlp_problem(), "lbfgs", max_iter=3, checkpoint=path, callback=_advance)
    reader = _mlp_problem()
    reader.next_batch()
    batch = np.asarray(reader.batch[0])
    with pytest.raises(snlp.CheckpointError, match="state policy"):
        snlp.solve(reader, "lbfgs", state_policy="reject", resume=path)
    np.testing.assert_array_equal(np.asarray(reader.batch[0]), batch)


def test_resume_refuses_other_solver_settings(tmp_path):
    path = tmp_path / "adam.ckpt"
    nlp = _mlp_problem()
    snlp.solve(nlp, snlp.solvers.Optax(optax.adam(1e-2)), max_iter=2, checkpoint=path)
    with pytest.raises(snlp.CheckpointError, match="solver's settings"):
        snlp.solve(_mlp_problem(), snlp.solvers.Optax(optax.adam(1e-3)), resume=path)
    resumed = snlp.solve(
        _mlp_problem(), snlp.solvers.Optax(optax.adam(1e-2)), max_iter=3, resume=path
    )
    assert resumed.iter == 3


def test_resumed_values_are_this_problems(tmp_path):
    path = tmp_path / "run.ckpt"
    nlp = _rosenbrock()
    snlp.solve(nlp, "lbfgs", max_iter=5, checkpoint=path)
    resumed = snlp.solve(_rosenbrock(), "lbfgs", max_iter=5, resume=path)  # stops at once
    f, g, _ = nlp.objgrad(resumed.solution, nlp.state0)
    assert resumed.objective == pytest.approx(float(f), rel=1e-6)
    assert resumed.dual_feas == pytest.approx(float(jnp.linalg.norm(g)), rel=1e-4)


# ---------------------------------------------------------------------------
# No lost work


def test_exception_from_the_callback_leaves_a_checkpoint_then_propagates(tmp_path):
    path = tmp_path / "run.ckpt"

    class Stop(Exception):
        pass

    error = Stop("from the user's callback")

    def callback(nlp, solver, stats):
        nlp.next_batch()
        if stats.iter == 5:
            raise error

    with pytest.raises(Stop) as info:
        snlp.solve(_mlp_problem(), "lbfgs", callback=callback, max_iter=TOTAL, checkpoint=path)
    assert info.value is error  # unchanged
    full = snlp.solve(_mlp_problem(), "lbfgs", callback=_advance, max_iter=8, atol=0, rtol=0)
    resumed = snlp.solve(
        _mlp_problem(), "lbfgs", callback=_advance, max_iter=8, resume=path, atol=0, rtol=0
    )
    np.testing.assert_array_equal(np.asarray(resumed.solution), np.asarray(full.solution))
    _same_tree(resumed.state, full.state)


def test_exception_from_fn_leaves_a_checkpoint_then_propagates(tmp_path):
    path = tmp_path / "run.ckpt"

    def fn(x, s, batch):
        if batch.shape[0] == 3:  # the third batch is malformed: fn raises while tracing
            raise ValueError("bad batch")
        return jnp.sum((x - jnp.mean(batch)) ** 2), s

    batches = [jnp.ones(2), 2 * jnp.ones(2), jnp.ones(3)]
    nlp = snlp.StatefulNLPModel(fn, jnp.zeros(2), data=batches)
    with pytest.raises(ValueError, match="bad batch"):
        snlp.solve(nlp, "r2", callback=_advance, max_iter=10, checkpoint=path)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
    assert meta["iter"] == 2  # the last completed iteration


def test_unwritable_checkpoint_is_refused_before_any_evaluation(tmp_path):
    for bad in (tmp_path, tmp_path / "missing" / "run.ckpt"):
        nlp = _rosenbrock()
        with pytest.raises(snlp.InvalidArgumentError, match="checkpoint"):
            snlp.solve(nlp, "lbfgs", checkpoint=bad)
        assert nlp.counters.obj == 0


def test_corrupt_checkpoint_messages_are_plain(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(snlp.CheckpointError) as info:
        snlp.solve(_rosenbrock(), "lbfgs", resume=garbage)
    message = str(info.value)
    assert "allow_pickle" not in message and "\\x" not in message and "NUMPY" not in message


def test_checkpoint_of_another_format_version_is_refused_by_name(tmp_path):
    """A file written by another statefulnlp (its carry laid out differently) is refused."""
    from statefulnlp._checkpoint import VERSION

    path, old = tmp_path / "run.ckpt", tmp_path / "old.ckpt"
    snlp.solve(_rosenbrock(), "lbfgs", max_iter=3, checkpoint=path)
    with np.load(path, allow_pickle=False) as data:
        arrays = dict(data)
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    meta["version"] = VERSION - 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(old, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(
        snlp.CheckpointError, match=f"version {VERSION - 1}.*reads version {VERSION}"
    ):
        snlp.solve(_rosenbrock(), "lbfgs", resume=old)
    snlp.solve(_rosenbrock(), "lbfgs", max_iter=6, resume=path)  # the file as written resumes
