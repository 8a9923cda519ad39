"""Helpers shared by the example scripts: argument parsing, progress, plots."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field

import statefulnlp as snlp


def parser(description: str, iters: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--iters", type=int, default=iters, help="solver iterations (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="minibatch size (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few iterations only (used by the tests)")
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
        help="directory for the figures (default: examples/out)",
    )
    return p


@dataclass
class Progress:
    """A solve callback: a new minibatch every iteration, a log line now and then.

    Records the training loss of every iteration and the test accuracy every
    `eval_every` iterations (for the curves).
    """

    label: str
    eval_every: int = 50
    log_every: int = 25
    losses: list[float] = field(default_factory=list)
    accuracy: list[tuple[int, float]] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, nlp, solver, stats) -> None:
        nlp.next_batch()
        self.losses.append(stats.objective)
        line = None
        if stats.iter % self.eval_every == 0:
            acc = nlp.accuracy(stats.solution, stats.state)
            self.accuracy.append((stats.iter, acc))
            line = f"test accuracy {100 * acc:5.2f}%"
        if stats.iter % self.log_every == 0 or line:
            elapsed = time.perf_counter() - self.start
            extra = f"  {line}" if line else ""
            print(
                f"[{self.label}] iter {stats.iter:5d}  loss {stats.objective:.4e}  "
                f"|g| {stats.dual_feas:.2e}  {elapsed:6.1f}s{extra}",
                flush=True,
            )


def plot_curves(runs: dict[str, Progress], path: str, title: str) -> None:
    """Training loss and test accuracy of each run, on one figure, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        ax_loss.plot(range(1, len(run.losses) + 1), run.losses, label=name, lw=1)
        if run.accuracy:
            its, accs = zip(*run.accuracy)
            ax_acc.plot(its, [100 * a for a in accs], marker="o", label=name)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (minibatch)")
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("test accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"saved {path}")


def solver_for(name: str, nlp):
    """(problem, solver) for a solver name of the examples."""
    import optax

    if name == "lbfgs":
        return nlp, snlp.solvers.LBFGS(mem=10)
    if name == "r2":
        return nlp, snlp.solvers.R2()
    if name == "trunk":
        return snlp.LSR1Model(nlp, mem=10), snlp.solvers.Trunk()
    if name == "adam":
        return nlp, snlp.solvers.Optax(optax.adam(3e-3))
    raise SystemExit(f"unknown solver {name!r}")


SOLVER_CHOICES = ("lbfgs", "r2", "trunk", "adam")


def train(name: str, nlp, iters: int) -> tuple[Progress, float]:
    """Train `nlp` with the solver `name`, a new minibatch every iteration.

    Prints progress and a summary; returns the recorded curves and the test accuracy.
    """
    problem, solver = solver_for(name, nlp)
    progress = Progress(name, eval_every=max(iters // 4, 1), log_every=max(iters // 16, 1))
    policy = snlp.traits.of(solver).default_policy
    print(f"[{name}] {nlp.nvar} variables, state policy {policy.value}, {iters} iterations")
    t0 = time.perf_counter()
    stats = snlp.solve(problem, solver, callback=progress, max_iter=iters, atol=0.0, rtol=0.0)
    accuracy = nlp.accuracy(stats.solution, stats.state)
    print(
        f"[{name}] {stats.status.value}: {stats.iter} iterations in "
        f"{time.perf_counter() - t0:.1f}s, {stats.counters['obj']} evaluations; "
        f"test accuracy {100 * accuracy:.2f}%"
    )
    return progress, accuracy
