"""Trunk: trust-region Newton-CG with exact (or quasi-Newton) Hessian-vector products."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .. import traits
from .._errors import InvalidArgumentError, InvalidTypeError
from .._evaluate import Evaluation, Oracle
from .._stats import Status
from .._tree import PyTree, safe_norm, tree_select
from ._base import CONTINUE, AbstractSolver, Step
from ._steihaug_cg import SteihaugCG

__all__ = ["Trunk"]


class TrunkState(eqx.Module):
    radius: Float[Array, ""]
    cgtol: Float[Array, ""]
    ratio: Float[Array, ""]
    cg_iterations: Int[Array, ""]
    status: Int[Array, ""]


class _Trial(eqx.Module):
    """A trial point and what the model predicted for it."""

    x: Float[Array, " n"]
    f: Float[Array, ""]
    state: PyTree
    scale: Float[Array, ""]  # fraction of the CG step taken (backtracking)


class _Backtrack(eqx.Module):
    trial: _Trial
    count: Int[Array, ""]
    oracle: Oracle


class Trunk(AbstractSolver[TrunkState]):
    """Trust-region Newton method with Steihaug–Toint truncated CG (JSOSolvers' trunk).

    Each iteration approximately minimizes the quadratic model g's + ½ s'Hs in
    the ball ‖s‖ ≤ Δ with at most n CG iterations (each one Hessian-vector
    product on the iteration's frozen function), then compares the actual and
    predicted decrease. A poor ratio first triggers a short Armijo backtracking
    along s, as in JSOSolvers; the step is accepted when ρ ≥ η1, and the radius
    shrinks to `decrease·‖s‖` (ρ < η1) or grows to `increase·‖s‖` (ρ ≥ η2).
    When f barely changes (|Δf| < 10⁴·eps·|f|) the actual decrease is
    estimated from the gradient at the trial point, which stays accurate in
    float32.

    With `LBFGSModel`/`LSR1Model` problems the products use the quasi-Newton
    approximation instead of the exact Hessian.

    Attributes:
        cg: the trust-region subproblem solver.
        eta1, eta2: acceptance and radius-increase thresholds.
        decrease, increase: radius factors.
        backtracks: maximum Armijo backtracking steps after a rejected step.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
        nlp = snlp.StatefulNLPModel(lambda x, s, b: (0.5 * x @ A @ x - x.sum(), s),
                                    jnp.zeros(2))
        stats = snlp.solve(nlp, "trunk")
        assert stats.status == "first_order" and stats.iter <= 2
        ```
    """

    cg: SteihaugCG = SteihaugCG()
    eta1: float = 1e-4
    eta2: float = 0.95
    decrease: float = 1.0 / 3.0
    increase: float = 1.5
    backtracks: int = eqx.field(default=10, static=True)

    def __check_init__(self):
        if not isinstance(self.cg, SteihaugCG):
            raise InvalidTypeError(f"cg: expected a SteihaugCG, got {type(self.cg).__name__}")
        if not 0.0 < self.eta1 < self.eta2 < 1.0:
            raise InvalidArgumentError(
                f"eta1, eta2: expected 0 < eta1 < eta2 < 1, got {self.eta1}, {self.eta2}"
            )
        if not 0.0 < self.decrease < 1.0 < self.increase:
            raise InvalidArgumentError(
                f"decrease, increase: expected 0 < decrease < 1 < increase, got "
                f"{self.decrease}, {self.increase}"
            )
        if not isinstance(self.backtracks, int) or self.backtracks < 0:
            raise InvalidArgumentError(
                f"backtracks: expected an integer >= 0, got {self.backtracks!r}"
            )

    def init(self, point: Evaluation) -> TrunkState:
        dtype = point.x.dtype
        gnorm = safe_norm(point.g)
        radius = jnp.minimum(jnp.maximum(gnorm / 10.0, 1.0), 100.0)
        return TrunkState(
            radius.astype(dtype),
            jnp.ones((), dtype),
            jnp.zeros((), dtype),
            jnp.zeros((), jnp.int32),
            jnp.asarray(CONTINUE, jnp.int32),
        )

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: TrunkState
    ) -> tuple[Step, TrunkState, Oracle]:
        dtype = point.x.dtype
        eps = jnp.finfo(dtype).eps
        x, f, g = point.x, point.f, point.g
        gnorm = safe_norm(g)
        radius = solver_state.radius
        cgtol = jnp.maximum(
            eps, jnp.minimum(jnp.minimum(0.1, jnp.sqrt(gnorm)), 0.9 * solver_state.cgtol)
        ).astype(dtype)
        cg, oracle = self.cg.solve(oracle, point, radius, cgtol * gnorm)
        s = cg.step
        slope = jnp.vdot(g, s)
        curvature = cg.curvature

        ft, new_state, oracle = oracle.obj(x + s)
        trial = _Trial(x + s, ft, new_state, jnp.ones((), dtype))
        ratio = self._ratio(f, trial, slope, curvature)

        # Armijo backtracking along s when the full step is not acceptable.
        beta = eps**0.25

        def bt_cond(b: _Backtrack):
            armijo = b.trial.f <= f + beta * b.trial.scale * slope
            return (b.count < self.backtracks) & ~(jnp.isfinite(b.trial.f) & armijo)

        def bt_body(b: _Backtrack):
            scale = b.trial.scale / 1.2
            xt = x + scale * s
            fb, sb, orc = b.oracle.obj(xt)
            return _Backtrack(_Trial(xt, fb, sb, scale), b.count + 1, orc)

        need = (ratio < self.eta1) & (slope < 0) & (self.backtracks > 0)
        start = _Backtrack(trial, jnp.zeros((), jnp.int32), oracle)
        backtracked = jax.lax.cond(
            need, lambda b: jax.lax.while_loop(bt_cond, bt_body, b), lambda b: b, start
        )
        oracle = backtracked.oracle
        trial = tree_select(need, backtracked.trial, trial)
        ratio = jnp.where(need, self._ratio(f, trial, slope, curvature), ratio)

        # |Δf| tiny relative to f: estimate the actual decrease from the gradient at
        # the trial point, which we then reuse if the step is accepted.
        scale = trial.scale
        pred = scale * slope + 0.5 * scale * scale * curvature
        close = jnp.abs(trial.f - f) < 1e4 * eps * jnp.abs(f)

        def with_grad(orc: Oracle):
            gt, _, orc = orc.grad(trial.x)
            return gt, jnp.asarray(True), orc

        def without(orc: Oracle):
            return g, jnp.asarray(False), orc

        gt, good_grad, oracle = jax.lax.cond(close & (pred < 0), with_grad, without, oracle)
        ared_grad = 0.5 * (scale * slope + jnp.vdot(gt, scale * s))
        ratio = jnp.where(good_grad, ared_grad / jnp.where(pred < 0, pred, -1.0), ratio)
        ratio = jnp.where((pred < 0) & jnp.isfinite(ratio), ratio, -jnp.inf)
        accept = ratio >= self.eta1

        def gradient(orc: Oracle):
            g_new, _, orc = orc.grad(trial.x)
            return g_new, orc

        g_new, oracle = jax.lax.cond(accept & ~good_grad, gradient, lambda orc: (gt, orc), oracle)
        evaluation = tree_select(accept, Evaluation(trial.x, trial.f, g_new, trial.state), point)

        snorm = scale * safe_norm(s)
        max_radius = 1.0 / jnp.sqrt(eps)
        new_radius = jnp.where(
            ratio < self.eta1,
            self.decrease * snorm,
            jnp.where(
                ratio >= self.eta2,
                jnp.minimum(max_radius, jnp.maximum(radius, self.increase * snorm)),
                radius,
            ),
        ).astype(dtype)
        xnorm = safe_norm(x)
        tiny_radius = new_radius <= eps * (1.0 + xnorm)
        status = jnp.where(~accept & tiny_radius, Status.SMALL_STEP.code, CONTINUE).astype(
            jnp.int32
        )
        state = TrunkState(new_radius, cgtol, ratio, cg.iterations, status)
        return Step(x=evaluation.x, accepted=accept, evaluation=evaluation), state, oracle

    def _ratio(
        self,
        f: Float[Array, ""],
        trial: _Trial,
        slope: Float[Array, ""],
        curvature: Float[Array, ""],
    ) -> Float[Array, ""]:
        pred = trial.scale * slope + 0.5 * trial.scale**2 * curvature
        ratio = (trial.f - f) / jnp.where(pred < 0, pred, -1.0)
        ok: Bool[Array, ""] = (pred < 0) & jnp.isfinite(ratio)
        return jnp.where(ok, ratio, -jnp.inf)

    def terminate(self, solver_state: TrunkState) -> Int[Array, ""]:
        return solver_state.status

    def diagnostics(self, solver_state: TrunkState) -> dict[str, Float[Array, ""]]:
        return {
            "Δ": solver_state.radius,
            "ρ": solver_state.ratio,
            "cg": solver_state.cg_iterations.astype(solver_state.radius.dtype),
        }


traits.register(Trunk, one_step_safe=False, name="trunk", uses_hprod=True)
