"""R2: first-order adaptive quadratic regularization (JSOSolvers' R2)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import traits
from .._errors import InvalidArgumentError
from .._evaluate import Evaluation, Oracle
from .._stats import Status
from .._tree import safe_norm, tree_select
from ._base import CONTINUE, AbstractSolver, Step

__all__ = ["R2"]


class R2State(eqx.Module):
    alpha: Float[Array, ""]  # step multiplier 1/σ
    ratio: Float[Array, ""]
    status: Int[Array, ""]


class R2(AbstractSolver[R2State]):
    """Adaptive quadratic regularization: x⁺ = x − g/σ, σ adapted by the ratio ρ.

    Each iteration evaluates f at the trial point x − α g (α = 1/σ) and compares
    the actual decrease with the model decrease α‖g‖²: ρ ≥ η1 accepts the
    step (and only then evaluates the gradient there); ρ ≥ η2 halves σ; ρ < η1
    doubles it. A multi-evaluation solver: under `freeze` the trial and the
    gradient at the accepted point see the same state and batch.

    Scale-free: σ0 is ‖g0‖ rounded to a power of two (a first step of about unit
    length; JSOSolvers' 2^round(log2(‖g0‖ + 1)) is 1 for small gradients), σ may
    fall as long as the step stays below (1 + ‖x‖)/eps, and α‖g‖² is formed as
    (α‖g‖)·‖g‖, so the iterates of c·f are those of f for any c > 0.

    Attributes:
        eta1: acceptance threshold (default eps^(1/4) of the dtype).
        eta2: very-successful threshold.
        gamma1: factor applied to α = 1/σ on failure (0 < γ1 < 1).
        gamma2: factor applied to α on very successful steps (γ2 > 1).

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum((x - 1.0) ** 2), s), jnp.zeros(3))
        stats = snlp.solve(nlp, snlp.solvers.R2())
        assert stats.status == "first_order"
        ```
    """

    eta1: float | None = None
    eta2: float = 0.95
    gamma1: float = 0.5
    gamma2: float = 2.0

    def __check_init__(self):
        eta1 = 1e-4 if self.eta1 is None else self.eta1
        if not 0.0 < eta1 < self.eta2 < 1.0:
            raise InvalidArgumentError(
                f"eta1, eta2: expected 0 < eta1 < eta2 < 1, got {self.eta1}, {self.eta2}"
            )
        if not 0.0 < self.gamma1 < 1.0 or not self.gamma2 > 1.0:
            raise InvalidArgumentError(
                f"gamma1, gamma2: expected 0 < gamma1 < 1 < gamma2, got {self.gamma1}, {self.gamma2}"
            )

    def init(self, point: Evaluation) -> R2State:
        dtype = point.x.dtype
        gnorm = safe_norm(point.g)
        # σ0 = ‖g0‖ rounded to a power of two: a first step of about unit length,
        # whatever the scale of f (JSO's 2^round(log2(‖g0‖ + 1)) is 1 for small ‖g0‖).
        safe = jnp.where((gnorm > 0) & jnp.isfinite(gnorm), gnorm, 1.0)
        power = jnp.round(jnp.log2(safe)).astype(jnp.int32)
        alpha = jnp.ldexp(jnp.ones((), dtype), -power)  # exact, unlike exp2 in float32
        return R2State(alpha.astype(dtype), jnp.zeros((), dtype), jnp.asarray(CONTINUE, jnp.int32))

    def step(
        self, oracle: Oracle, point: Evaluation, solver_state: R2State
    ) -> tuple[Step, R2State, Oracle]:
        dtype = point.x.dtype
        eps = jnp.finfo(dtype).eps
        eta1 = eps**0.25 if self.eta1 is None else self.eta1
        alpha = solver_state.alpha
        trial_x = point.x - alpha * point.g
        ft, new_state, oracle = oracle.obj(trial_x)
        # α‖g‖² as (α‖g‖)·‖g‖: no overflow for gradients beyond sqrt(max float).
        gnorm = safe_norm(point.g)
        step_length = alpha * gnorm
        model_decrease = step_length * gnorm
        ratio = (point.f - ft) / model_decrease
        ratio = jnp.where(jnp.isfinite(ratio), ratio, -jnp.inf)
        accept = ratio >= eta1
        # α grows on very successful steps while the step stays representable:
        # its length is capped relative to x (not α itself, which scales as 1/f).
        max_length = (1.0 + safe_norm(point.x)) / eps
        grow = (ratio >= self.eta2) & (self.gamma2 * step_length <= max_length)
        new_alpha = jnp.where(
            grow,
            self.gamma2 * alpha,
            jnp.where(accept, alpha, self.gamma1 * alpha),
        ).astype(dtype)

        def gradient(orc: Oracle):
            g, _, orc = orc.grad(trial_x)
            return g, orc

        def skip(orc: Oracle):
            return point.g, orc

        g_trial, oracle = jax.lax.cond(accept, gradient, skip, oracle)
        trial = Evaluation(trial_x, ft, g_trial, new_state)
        evaluation = tree_select(accept, trial, point)
        underflow = jnp.all(trial_x == point.x)
        status = jnp.where(underflow | (new_alpha <= 0), Status.SMALL_STEP.code, CONTINUE).astype(
            jnp.int32
        )
        step = Step(x=evaluation.x, accepted=accept, evaluation=evaluation)
        return step, R2State(new_alpha, ratio, status), oracle

    def terminate(self, solver_state: R2State) -> Int[Array, ""]:
        return solver_state.status

    def diagnostics(self, solver_state: R2State) -> dict[str, Float[Array, ""]]:
        return {"σ": 1.0 / solver_state.alpha, "ρ": solver_state.ratio}


traits.register(R2, one_step_safe=False, name="r2")
