"""Every example runs in its --quick mode (in this process, so JAX is imported once)."""

from __future__ import annotations

import importlib
import os
import sys

import jax
import pytest
from test_datasets import write_mnist

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


@pytest.fixture(scope="module")
def examples():
    sys.path.insert(0, os.path.abspath(EXAMPLES))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(os.path.abspath(EXAMPLES))


def test_digits_cnn_main_job(examples, tmp_path, capsys):
    accuracies = examples("digits_cnn").main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "state policy freeze" in out and "test accuracy" in out
    assert 0.0 <= accuracies["lbfgs"] <= 1.0
    assert (tmp_path / "digits_cnn_lbfgs.png").stat().st_size > 10_000


def test_digits_cnn_compare_all_solvers(examples, tmp_path, capsys):
    accuracies = examples("digits_cnn").main(["--quick", "--compare", "--out", str(tmp_path)])
    assert set(accuracies) == {"lbfgs", "r2", "trunk", "adam"}
    out = capsys.readouterr().out
    assert "state policy propagate" in out  # adam
    assert (tmp_path / "digits_cnn_compare.png").exists()


def test_gru_stateful(examples):
    results = examples("gru_stateful").main(["--quick"])
    assert set(results) == {"lbfgs", "adam"}


def test_dropout_mask(examples, capsys):
    result = examples("dropout_mask_lbfgs").main(["--quick"])
    out = capsys.readouterr().out
    assert "IncompatibleStatePolicyError" in out and "evaluations made: 0" in out
    assert "StateMutationError" in out
    assert result["final"] < result["initial"]
    assert result["armijo_holds"] == result["accepted"] > 0


def test_curve_fitting_trunk(examples):
    result = examples("curve_fitting_trunk").main(["--quick"])
    assert result["gap"] <= 1e-6 * 1.0  # solved in the sense of the classic-problem tests


def test_mnist_on_small_idx_files(examples, tmp_path, capsys):
    write_mnist(tmp_path, n_train=64, n_test=32)
    result = examples("mnist_cnn").main(
        ["--quick", "--data", str(tmp_path), "--batch-size", "32", "--out", str(tmp_path)]
    )
    assert 0.0 <= result["accuracy"] <= 1.0


def test_mnist_missing_files_exit_cleanly(examples, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        examples("mnist_cnn").main(["--quick", "--data", str(tmp_path / "nothing")])
    assert info.value.code == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_flax_digits(examples, tmp_path):
    pytest.importorskip("flax")
    result = examples("flax_digits").main(["--quick", "--out", str(tmp_path)])
    assert 0.0 <= result["accuracy"] <= 1.0


def test_pinn_quick(examples, tmp_path, capsys):
    x64_before = jax.config.read("jax_enable_x64")
    result = examples("pinn").main(["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith("relative L2 error: ")
    error = float(last.removeprefix("relative L2 error: "))
    assert error <= 5e-2
    assert error == pytest.approx(result["error"], rel=1e-3)
    # Adam under propagate, then L-BFGS (warm-started) under freeze, in float64
    assert "float64" in out and "under propagate" in out and "under freeze" in out
    assert jax.config.read("jax_enable_x64") == x64_before  # x64 does not leak into this process
    assert (tmp_path / "pinn_adam_lbfgs.png").stat().st_size > 10_000
