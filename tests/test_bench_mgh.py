"""benchmarks/bench_mgh.py on two small problems, so the script does not rot (no timing)."""

from __future__ import annotations

import importlib
import os
import sys

import jax
from mgh import PROBLEMS

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks")


def test_evaluations_until_first_solved_on_both_sides():
    sys.path.insert(0, BENCHMARKS)
    try:
        with jax.enable_x64(True):
            bench = importlib.import_module("bench_mgh")
            beale = next(p for p in PROBLEMS if p.name == "Beale")
            for name in ("lbfgs", "trunk"):
                out = bench.compare(name, problems=(beale,))
                row, summary = out["rows"][0], out["summary"]
                assert summary["solved (ours)"] == summary["solved (scipy)"] == 1
                assert 0 < row["ratio #f"] < 10 and row[f"{name} #f"] > 1
    finally:
        sys.path.remove(BENCHMARKS)
