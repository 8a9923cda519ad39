"""A physics-informed network for a 2-D Poisson problem: Adam, then L-BFGS from Adam's result.

Solves -Δu = 2π² sin(πx) sin(πy) on the unit square with u = 0 on the boundary
(exact solution u = sin(πx) sin(πy)). The network is an Equinox MLP (tanh) and the
boundary condition is built in (hard constraint): u_θ(x, y) = x(1−x)·y(1−y)·N_θ(x, y),
so the loss is the mean squared PDE residual at the collocation points alone.

The collocation points are **state**: the loss draws them from a PRNG key carried
in the state (one uniform point in each cell of a square grid, a "jittered grid")
and returns the advanced key. So

* Adam runs under `propagate` (the default for one-step solvers): one evaluation
  per iteration, each on fresh points — nothing is ever compared across two sets;
* L-BFGS then starts from Adam's iterate and state and runs under `freeze` (the
  default for multi-evaluation solvers): every evaluation of iteration k — the line
  search's trial points and both gradients of the curvature pair — uses the same
  key, hence the same points, so the line search compares values of one function
  and y_k = ∇f_k(x_{k+1}) − ∇f_k(x_k) is a true difference of gradients. The key
  advances once per accepted step, so the points still change every iteration.

The last line printed is `relative L2 error: <number>` on a fixed 101×101 grid.
Measured figures (Adam alone vs Adam -> L-BFGS, fixed vs resampled points) are in
docs/examples.md.

    python examples/pinn.py                  # Adam -> L-BFGS, resampled points
    python examples/pinn.py --adam-only      # the same number of evaluations, Adam alone
    python examples/pinn.py --fixed-points   # one set of points drawn once, never resampled
    python examples/pinn.py --quick          # small and short (used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import statefulnlp as snlp

PI = math.pi


def exact(p):
    """The exact solution u(x, y) = sin(πx) sin(πy)."""
    return jnp.sin(PI * p[..., 0]) * jnp.sin(PI * p[..., 1])


def source(p):
    """The right-hand side f = -Δu = 2π² sin(πx) sin(πy)."""
    return 2.0 * PI**2 * exact(p)


class PINN(eqx.Module):
    """u_θ(x, y) = x(1−x)·y(1−y)·N_θ(x, y): zero on the boundary for every θ."""

    net: eqx.nn.MLP

    def __init__(self, width: int, depth: int, key):
        self.net = eqx.nn.MLP(2, "scalar", width, depth, activation=jnp.tanh, key=key)

    def __call__(self, p):
        x, y = p[0], p[1]
        return x * (1.0 - x) * y * (1.0 - y) * self.net(p)


def laplacian(model, p):
    """Δu_θ(p): the trace of the 2×2 Hessian (forward over reverse)."""
    return jnp.trace(jax.jacfwd(jax.grad(model))(p))


def collocation_points(key, side: int, stratified: bool = True):
    """`side²` random points on the unit square, one uniformly in each cell of a side×side grid.

    Stratified ("jittered grid") sampling: every draw is random, but the points cover
    the square evenly, so the mean residual over them estimates the integral with a
    much smaller variance than `side²` independent uniform points (`stratified=False`).
    """
    dtype = jnp.result_type(float)
    if not stratified:
        return jax.random.uniform(key, (side * side, 2), dtype=dtype)
    i, j = jnp.meshgrid(jnp.arange(side), jnp.arange(side), indexing="ij")
    corners = jnp.stack([i.ravel(), j.ravel()], axis=-1).astype(dtype)
    return (corners + jax.random.uniform(key, (side * side, 2), dtype=dtype)) / side


def residual_loss(model, key, batch, *, side: int, resample: bool, stratified: bool = True):
    """Mean squared residual of -Δu = f at `side²` points drawn from the key in the state.

    Returns the advanced key as the new state (or the same key with `resample=False`:
    then every evaluation sees one fixed set of points).
    """
    del batch  # the data are the points, and they come from the state
    new_key, sub = jax.random.split(key)
    points = collocation_points(sub, side, stratified)
    residual = jax.vmap(lambda p: laplacian(model, p) + source(p))(points)
    return jnp.mean(residual**2), (new_key if resample else key)


@eqx.filter_jit
def _on_grid(model, grid):
    return jax.vmap(model)(grid)


def relative_l2_error(model, grid) -> float:
    """‖u_θ − u‖₂ / ‖u‖₂ on the evaluation grid."""
    u_star = exact(grid)
    return float(jnp.linalg.norm(_on_grid(model, grid) - u_star) / jnp.linalg.norm(u_star))


def evaluation_grid(n: int = 101):
    s = jnp.linspace(0.0, 1.0, n)
    X, Y = jnp.meshgrid(s, s, indexing="xy")
    return jnp.stack([X.ravel(), Y.ravel()], axis=-1), n


@dataclass
class Curve:
    """A solve callback: records the loss of every iteration and logs now and then."""

    label: str
    grid: jax.Array
    offset: int = 0  # evaluations made before this stage (for one x-axis)
    log_every: int = 100
    evals: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, nlp, solver, stats) -> None:
        self.evals.append(self.offset + stats.counters["obj"])
        self.losses.append(stats.objective)
        if stats.iter % self.log_every == 0:
            error = relative_l2_error(nlp.to_model(stats.solution), self.grid)
            print(
                f"[{self.label}] iter {stats.iter:5d}  evals {self.evals[-1]:6d}  "
                f"loss {stats.objective:.3e}  |g| {stats.dual_feas:.2e}  "
                f"rel. L2 error {error:.2e}  {time.perf_counter() - self.start:6.1f}s",
                flush=True,
            )


def plot(model, grid, n, curves, path, title):
    """Solution, pointwise error and the loss curves of both stages, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    u = np.asarray(_on_grid(model, grid)).reshape(n, n)
    err = np.abs(u - np.asarray(exact(grid)).reshape(n, n))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, field_, name in ((axes[0], u, "u_θ (network)"), (axes[1], err, "|u_θ − u|")):
        im = ax.imshow(field_, origin="lower", extent=(0, 1, 0, 1), cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        fig.colorbar(im, ax=ax)
    ax = axes[2]
    for curve in curves:
        ax.plot(curve.evals, curve.losses, lw=1, label=curve.label)
    ax.set_yscale("log")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("mean squared residual (current points)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"saved {path}")


# (full run, --quick): network size, evaluation budget, collocation points.
DEFAULTS = {
    "width": (32, 20),
    "depth": (3, 2),
    "adam_iters": (5000, 300),
    "lbfgs_evals": (5000, 300),
    "points": (1024, 256),
}


def arguments(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)

    def option(name: str, kind: type, what: str) -> None:
        full, quick = DEFAULTS[name.replace("-", "_")]
        p.add_argument(
            f"--{name}",
            type=kind,
            default=None,
            help=f"{what} (default {full}; {quick} with --quick)",
        )

    option("width", int, "hidden units per layer")
    option("depth", int, "hidden layers")
    option("adam-iters", int, "Adam iterations (stage 1)")
    option("lbfgs-evals", int, "objective evaluations left for L-BFGS (stage 2)")
    option("points", int, "collocation points per evaluation (rounded down to a square)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default 1e-3)")
    p.add_argument(
        "--adam-only",
        action="store_true",
        help="spend the whole budget (adam-iters + lbfgs-evals evaluations) on Adam",
    )
    p.add_argument(
        "--fixed-points", action="store_true", help="draw the points once, never resample them"
    )
    p.add_argument("--uniform", action="store_true", help="i.i.d. uniform points, no jittered grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small and short (used by the tests)")
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
        help="directory for the figure (default: examples/out)",
    )
    args = p.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv=None) -> dict[str, float]:
    args = arguments(argv)
    # Float64 for this example only: the tests import it into a float32 process, so
    # a context rather than jax.config.update (which would switch the whole process).
    with jax.enable_x64(True):
        return run(args)


def run(args) -> dict[str, float]:
    grid, n = evaluation_grid()
    model = PINN(args.width, args.depth, jax.random.key(args.seed))
    side = max(math.isqrt(args.points), 1)
    loss = functools.partial(
        residual_loss, side=side, resample=not args.fixed_points, stratified=not args.uniform
    )
    # The state is only the PRNG key the collocation points are drawn from.
    nlp = snlp.EquinoxNLPModel(model, jax.random.key(args.seed + 1), loss, None)
    how = "drawn once (fixed)" if args.fixed_points else "resampled from the key in the state"
    how += ", i.i.d. uniform" if args.uniform else ", jittered grid"
    print(f"{nlp.nvar} variables ({nlp.dtype}); {side}×{side} collocation points, {how}")
    budget = args.adam_iters + args.lbfgs_evals  # objective evaluations in all
    adam = snlp.solvers.Optax(optax.adam(args.lr))
    t0 = time.perf_counter()
    results: dict[str, float] = {}
    if args.adam_only:
        # The same number of evaluations, all spent on Adam.
        curve = Curve("adam", grid, log_every=max(budget // 20, 1))
        final = snlp.solve(
            nlp, adam, callback=curve, max_eval=budget, max_iter=budget, atol=0.0, rtol=0.0
        )
        curves = [curve]
    else:
        # Stage 1: Adam under `propagate` (its default): one evaluation per iteration,
        # whose new state (the advanced key) is the next iteration's state.
        curve_a = Curve("adam", grid, log_every=max(args.adam_iters // 10, 1))
        a = snlp.solve(nlp, adam, callback=curve_a, max_iter=args.adam_iters, atol=0.0, rtol=0.0)
        results["adam_error"] = relative_l2_error(nlp.to_model(a.solution), grid)
        print(
            f"[adam] {a.status.value} under {a.state_policy.value}: {a.counters['obj']} "
            f"evaluations, relative L2 error {results['adam_error']:.3e}"
        )
        # Stage 2: L-BFGS from Adam's iterate *and state* (its key), under `freeze` (its
        # default): one set of points per iteration for the line search and the
        # curvature pair; the key advances once per accepted step.
        used = nlp.counters.obj
        curve_b = Curve("lbfgs", grid, offset=used, log_every=max(args.lbfgs_evals // 40, 1))
        final = snlp.solve(
            nlp,
            "lbfgs",
            x0=a.solution,
            state=a.state,
            callback=curve_b,
            max_eval=budget - used,
            max_iter=budget,
            atol=0.0,
            rtol=0.0,
        )
        print(
            f"[lbfgs] {final.status.value} under {final.state_policy.value}: "
            f"{final.counters['obj']} evaluations"
        )
        curves = [curve_a, curve_b]
    trained = nlp.to_model(final.solution)
    error = relative_l2_error(trained, grid)
    results.update(error=error, evaluations=float(nlp.counters.obj))
    print(f"{nlp.counters.obj} evaluations in all, {time.perf_counter() - t0:.1f}s")
    tag = "adam" if args.adam_only else "adam_lbfgs"
    tag += "_fixed" if args.fixed_points else ""
    tag += "_uniform" if args.uniform else ""
    plot(
        trained,
        grid,
        n,
        curves,
        os.path.join(args.out, f"pinn_{tag}.png"),
        f"PINN for -Δu = f on the unit square ({tag.replace('_', ' ')})",
    )
    print(f"relative L2 error: {error:.3e}")
    return results


if __name__ == "__main__":
    main()
