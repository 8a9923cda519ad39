"""Shared helpers of the benchmark scripts: timing, machine facts, JSON results."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def timeit(fn: Callable[[], Any], repeat: int = 5, number: int = 1) -> float:
    """Median over `repeat` runs of the time of `number` calls of fn (seconds per call)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            out = fn()
        block(out)
        times.append((time.perf_counter() - t) / number)
    return statistics.median(times)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import equinox
    import numpy
    import optax

    import statefulnlp

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "equinox": equinox.__version__,
        "optax": optax.__version__,
        "numpy": numpy.__version__,
        "statefulnlp": statefulnlp.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    return info


def save(name: str, payload: dict[str, Any]) -> str:
    """Write `results/<name>_<backend>.json` and return its path."""
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}_{jax.default_backend()}.json")
    with open(path, "w") as fh:
        json.dump({"machine": machine(), **payload}, fh, indent=2, default=str)
    print(f"\nsaved {path}")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned text table."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).rjust(widths[c]) for c in columns))


def cold_and_warm(
    make: Callable[[], Callable[[], tuple]], repeat: int, min_seconds: float = 1.0
) -> tuple[float, float, tuple]:
    """Time a solver runner: the first call after `jax.clear_caches()` (compilation
    included) and the best of at least `repeat` further calls: more, up to 200, until
    `min_seconds` of warm calls have run; one only if the cold call took over 10 s.
    Returns (cold, warm, last result), where a result is a tuple whose first entry is
    the solution.

    Warm time is the minimum, not the median: on a shared 2-core machine other load
    only ever adds time, and the same rule is applied to every method in a table."""
    jax.clear_caches()
    run = make()
    t = time.perf_counter()
    result = run()
    block(result[0])
    cold = time.perf_counter() - t
    warm: list[float] = []
    if cold > 10.0:  # a method this slow is timed once more, not `repeat` times
        repeat = 1
    while len(warm) < repeat or (sum(warm) < min_seconds and len(warm) < 200):
        t = time.perf_counter()
        result = run()
        block(result[0])
        warm.append(time.perf_counter() - t)
    return cold, min(warm), result


def report(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print a result table and the errors of the methods that failed."""
    print(f"\n{title}")
    table(rows, columns)
    for r in rows:
        if "error" in r:
            print(f"  {r['method']}: {r['error']}")
