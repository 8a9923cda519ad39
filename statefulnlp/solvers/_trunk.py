"""Trunk: trust-region Newton-CG with exact (or quasi-Newton) Hessian-vector products."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import traits
from .._errors import InvalidArgumentError, InvalidTypeError
from .._evaluate import Evaluation, Oracle
from .._stats import Status
from .._tree import safe_norm, tree_select
from ._base import CONTINUE, AbstractSolver, Step
from ._linesearch import BacktrackingArmijo, LineSearchResult
from ._steihaug_cg import SteihaugCG
from ._trust_region import TrustRegionRadius

__all__ = ["Trunk"]

#: |f(x+s) − f(x)| below this many eps·|f(x)| is rounding noise: the actual
#: decrease is then estimated from the gradient at x+s (JSOSolvers' rule).
_NOISE = 1e4
#: Step reduction of the Armijo fallback (JSOSolvers divides by 1.2).
_BACKTRACK = 1.0 / 1.2


class TrunkState(eqx.Module):
    radius: Float[Array, ""]
    cgtol: Float[Array, ""]
    ratio: Float[Array, ""]
    cg_iterations: Int[Array, ""]
    cg_status: Int[Array, ""]  # a CGStatus code
    step_norm: Float[Array, ""]  # length of the step taken (0 if rejected)
    backtracks: Int[Array, ""]  # trials of the Armijo fallback in the last iteration
    gnorm0: Float[Array, ""]  # ‖∇f(x0)‖, the reference of the relative forcing term
    status: Int[Array, ""]


def _model(t, slope, curvature):
    """The model decrease t·g's + ½t²·s'Hs of the step t·s."""
    return t * slope + 0.5 * t * t * curvature


def _ratio(actual, predicted):
    """actual/predicted decrease, −inf when the model predicts no decrease or it is not finite."""
    ratio = actual / jnp.where(predicted < 0, predicted, -1.0)
    return jnp.where((predicted < 0) & jnp.isfinite(ratio), ratio, -jnp.inf)


class Trunk(AbstractSolver[TrunkState]):
    """Trust-region Newton method with Steihaug–Toint truncated CG (JSOSolvers' trunk).

    Each iteration approximately minimizes the quadratic model g's + ½ s'Hs in
    the ball ‖s‖ ≤ Δ with at most n CG iterations (each one Hessian-vector
    product on the iteration's frozen function) and compares the actual with the
    predicted decrease, ρ. The radius follows `TrustRegionRadius` (JSOSolvers'
    rules): the step is accepted when ρ ≥ η1, Δ shrinks to `decrease`·‖s‖ when
    ρ < η1 and grows to `increase`·‖s‖ when ρ ≥ η2.

    A rejected step first triggers an Armijo backtracking search along s (a
    `BacktrackingArmijo` with c1 = eps^(1/4), steps divided by 1.2, at most
    `backtracks` trials), as in JSOSolvers. A step found that way is accepted
    when its own ρ ≥ η1, and the radius then restarts from its length t‖s‖:
    the full step failed, so the model is not trusted further than that (with
    JSOSolvers' rule Δ stays where it was, and on a nonconvex minibatch
    problem every iteration goes back to a boundary step that fails).

    Monotone: a step is never accepted if f(x+s) > f(x), even when the ratio
    says otherwise, nor with f(x+s) = f(x) unless ‖∇f‖ decreases. When f barely
    changes (|Δf| < 10⁴·eps·|f|), the actual decrease is estimated from the
    gradient at the trial point (accurate where the difference of two f values
    is rounding noise), and no backtracking is tried. A rejected step whose model
    decrease is below the rounding error of f stops the solve with `stalled`
    (nothing more can be gained in this dtype); a step that no longer moves x,
    or a radius below eps·(1 + ‖x‖), with `small_step`.

    Scale-free: the CG forcing term is min(0.1, sqrt(‖g‖/‖g0‖)) (relative to
    ‖g0‖, and not forced down by 0.9 at every iteration as in JSOSolvers, which
    on minibatch problems makes CG solve every batch's Newton system exactly)
    and Δ0 = `initial_radius`, so the iterates of c·f are those of f for any
    c > 0.

    With `LBFGSModel`/`LSR1Model` problems the products use the quasi-Newton
    approximation instead of the exact Hessian.

    Attributes:
        cg: the trust-region subproblem solver.
        eta1, eta2: acceptance and radius-increase thresholds.
        decrease, increase: radius factors.
        initial_radius: the first radius Δ0 (1, as scipy; a length in units of x).
        backtracks: maximum Armijo backtracking trials after a rejected step.

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
    initial_radius: float = 1.0
    backtracks: int = eqx.field(default=10, static=True)

    def __check_init__(self):
        if not isinstance(self.cg, SteihaugCG):
            raise InvalidTypeError(f"cg: expected a SteihaugCG, got {type(self.cg).__name__}")
        if not isinstance(self.backtracks, int) or self.backtracks < 0:
            raise InvalidArgumentError(
                f"backtracks: expected an integer >= 0, got {self.backtracks!r}"
            )
        _ = self.region  # checks eta1, eta2, decrease, increase and initial_radius

    @property
    def region(self) -> TrustRegionRadius:
        """The radius rule built from `eta1`, `eta2`, `decrease` and `increase`."""
        return TrustRegionRadius(
            self.eta1, self.eta2, self.decrease, self.increase, self.initial_radius
        )

    def init(self, point: Evaluation) -> TrunkState:
        dtype = point.x.dtype
        gnorm = safe_norm(point.g)
        return TrunkState(
            radius=self.region.initial(dtype),
            cgtol=jnp.ones((), dtype),
            ratio=jnp.zeros((), dtype),
            cg_iterations=jnp.zeros((), jnp.int32),
            cg_status=jnp.zeros((), jnp.int32),
            step_norm=jnp.zeros((), dtype),
            backtracks=jnp.zeros((), jnp.int32),
            gnorm0=gnorm,
            status=jnp.asarray(CONTINUE, jnp.int32),
        )

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: TrunkState
    ) -> tuple[Step, TrunkState, Oracle]:
        dtype = point.x.dtype
        eps = jnp.finfo(dtype).eps
        region = self.region
        x, f, g = point.x, point.f, point.g
        gnorm = safe_norm(g)
        radius = solver_state.radius
        # CG stops at ‖r‖ ≤ η‖g‖ with the forcing term η = min(0.1, sqrt(‖g‖/‖g0‖)):
        # relative to ‖g0‖ (JSOSolvers' sqrt(‖g‖) is not scale-free), and without
        # JSOSolvers' η ≤ 0.9·η_prev, which drives η to 0 even when ‖g‖ does not
        # decrease (minibatches): CG then solves every minibatch's Newton system
        # to full accuracy and the iterates chase each batch (issue 16).
        g0 = jnp.where(solver_state.gnorm0 > 0, solver_state.gnorm0, 1.0)
        forcing = jnp.minimum(0.1, jnp.sqrt(gnorm / g0))
        cgtol = jnp.maximum(eps, forcing).astype(dtype)
        cg, oracle = self.cg.solve(oracle, point, radius, cgtol * gnorm)
        s = cg.step
        snorm = safe_norm(s)
        slope = jnp.vdot(g, s)
        curvature = cg.curvature

        # The full step.
        xt = x + s
        ft, state_t, oracle = oracle.obj(xt)
        pred = _model(1.0, slope, curvature)
        noise = jnp.abs(ft - f) < _NOISE * eps * jnp.abs(f)

        def with_grad(orc: Oracle):
            gt, _, orc = orc.grad(xt)
            return gt, orc

        def without(orc: Oracle):
            return g, orc

        gt, oracle = jax.lax.cond(noise & (pred < 0), with_grad, without, oracle)
        actual = jnp.where(noise, 0.5 * (slope + jnp.vdot(gt, s)), ft - f)
        ratio = _ratio(actual, pred)
        # Monotone: never accept f(x+s) > f(x). A step that leaves f unchanged must
        # reduce ‖g‖ (else two points of equal f could alternate forever).
        progress = (ft < f) | (noise & (safe_norm(gt) < gnorm))
        ok = region.successful(ratio) & (ft <= f) & progress

        # Armijo backtracking along s when the full step is rejected (not when f is
        # flat to rounding: no shorter step can then show a decrease either).
        need = ~ok & ~noise & (slope < 0) & (self.backtracks > 0)
        search = BacktrackingArmijo(
            c1=float(jnp.finfo(dtype).eps) ** 0.25,
            factor=_BACKTRACK,
            max_trials=max(1, self.backtracks),
        )

        def backtrack(orc: Oracle):
            return search.search(orc, point, s, jnp.asarray(_BACKTRACK, dtype))

        def skip(orc: Oracle):
            none = LineSearchResult(
                step_size=jnp.zeros((), dtype),
                point=point,
                wolfe=jnp.asarray(False),
                decrease=jnp.asarray(False),
                trials=jnp.zeros((), jnp.int32),
                at_precision=jnp.asarray(False),
            )
            return none, orc

        found, oracle = jax.lax.cond(need, backtrack, skip, oracle)
        t = found.step_size
        pred_bt = _model(t, slope, curvature)
        ratio_bt = _ratio(found.point.f - f, pred_bt)
        use_bt = need & found.decrease & region.successful(ratio_bt)

        # The accepted point: the full step (its gradient is evaluated now, unless
        # the noise branch already did), or the backtracked one (the search did).
        accept = ok | use_bt

        def gradient(orc: Oracle):
            g_new, _, orc = orc.grad(xt)
            return g_new, orc

        g_full, oracle = jax.lax.cond(ok & ~noise, gradient, lambda orc: (gt, orc), oracle)
        full = Evaluation(xt, ft, g_full, state_t)
        evaluation = tree_select(use_bt, found.point, tree_select(ok, full, point))

        # Radius: JSOSolvers' rule on the step actually taken; after a backtrack the
        # radius restarts from the backtracked length.
        bt_norm = t * snorm
        new_radius = jnp.where(
            use_bt,
            region.update(bt_norm, ratio_bt, bt_norm),
            # A full step rejected for f(x+s) > f(x) or no progress counts as failed.
            region.update(radius, jnp.where(ok, ratio, -jnp.inf), snorm),
        ).astype(dtype)
        # The step no longer changes x: at an accepted step whose length is below the
        # resolution of x (f is then flat to rounding too), or once the radius is.
        xnorm = safe_norm(x)
        tiny_radius = new_radius <= eps * (1.0 + xnorm)
        frozen = accept & jnp.all(evaluation.x == x)
        # A rejected step whose model decrease is below the rounding error of f: no
        # shorter step can show a decrease either; nothing more can be gained in
        # this dtype (the float32 counterpart of L-BFGS's `at_precision`).
        flat = ~accept & (jnp.abs(pred) <= 10.0 * eps * jnp.abs(f))
        status = jnp.where(
            (~accept & tiny_radius) | frozen,
            Status.SMALL_STEP.code,
            jnp.where(flat, Status.STALLED.code, CONTINUE),
        ).astype(jnp.int32)
        state = TrunkState(
            radius=new_radius,
            cgtol=cgtol,
            ratio=jnp.where(use_bt, ratio_bt, ratio).astype(dtype),
            cg_iterations=cg.iterations,
            cg_status=cg.status,
            step_norm=jnp.where(accept, jnp.where(use_bt, bt_norm, snorm), 0.0).astype(dtype),
            backtracks=found.trials,
            gnorm0=solver_state.gnorm0,
            status=status,
        )
        return Step(x=evaluation.x, accepted=accept, evaluation=evaluation), state, oracle

    def terminate(self, solver_state: TrunkState) -> Int[Array, ""]:
        return solver_state.status

    def diagnostics(self, solver_state: TrunkState) -> dict[str, Float[Array, ""]]:
        dtype = solver_state.radius.dtype
        return {
            "Δ": solver_state.radius,
            "ρ": solver_state.ratio,
            "cg": solver_state.cg_iterations.astype(dtype),
            "bk": solver_state.backtracks.astype(dtype),
        }


traits.register(Trunk, one_step_safe=False, name="trunk", uses_hprod=True)
