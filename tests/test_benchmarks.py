"""The benchmark scripts' statefulnlp parts, on small sizes, so the scripts do not rot.

The peers (optimistix, jaxopt, torch, scipy) are only needed by the full scripts
(`pip install ".[bench]"`); nothing here times anything.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, BENCHMARKS)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(BENCHMARKS)


def test_lbfgs_memory_grows_like_two_vectors_per_pair(bench):
    """The compiled L-BFGS loop holds O(mem·n): each extra pair costs 2 n-vectors
    (S and Y as the loop's arguments, updated in place: no temporary copy)."""
    memory = bench("bench_memory")
    n = 4096
    small = memory.lbfgs_memory(n, 2)["total / (n·4 bytes)"]
    large = memory.lbfgs_memory(n, 6)["total / (n·4 bytes)"]
    assert large - small == pytest.approx(2 * (6 - 2), abs=0.5)
    assert small < 4 * 2 + 20  # and a bounded number of other n-vectors


def test_driver_benchmark_runs_both_paths(bench):
    driver = bench("bench_driver")
    assert driver.ours(50) > 0
    assert driver.ours(5, callback=lambda *a: None) > 0
