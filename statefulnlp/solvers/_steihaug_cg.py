"""Steihaug–Toint truncated conjugate gradient for the trust-region subproblem.

Approximately solves  min_s  g's + ½ s'Hs  subject to  ‖s‖ ≤ Δ  using only
Hessian-vector products (Nocedal & Wright, Algorithm 7.2). It stops at the
boundary, on negative curvature, when the residual is small, or after
`max_iter` iterations (at most n by default). `s'Hs` is accumulated from the
products already made, so no extra product is needed for the model decrease.
The recursion runs on the system divided by ‖g‖, so it is the same for c·f
and f (no square of a gradient-sized number is formed).
"""

from __future__ import annotations

import enum

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._evaluate import Evaluation, Oracle
from .._tree import safe_norm

__all__ = ["CGResult", "CGStatus", "SteihaugCG"]


class CGStatus(enum.IntEnum):
    """Why the truncated CG stopped.

    Example:
        ```python
        from statefulnlp.solvers import CGStatus

        assert CGStatus(1) is CGStatus.BOUNDARY
        ```
    """

    CONVERGED = 0
    BOUNDARY = 1
    NEGATIVE_CURVATURE = 2
    MAX_ITER = 3
    NON_FINITE = 4


class CGResult(eqx.Module):
    """The step and what is known about it.

    Attributes:
        step: the approximate minimizer s.
        curvature: s'Hs.
        iterations: CG iterations made (= Hessian-vector products).
        status: a `CGStatus` code.

    Example:
        ```python
        from statefulnlp.solvers import CGResult

        # Returned by SteihaugCG().solve(oracle, point, radius, tol) inside a solver.
        assert set(CGResult.__annotations__) == {"step", "curvature", "iterations", "status"}
        ```
    """

    step: Float[Array, " n"]
    curvature: Float[Array, ""]
    iterations: Int[Array, ""]
    status: Int[Array, ""]


class _CGState(eqx.Module):
    s: Float[Array, " n"]
    hs: Float[Array, " n"]
    r: Float[Array, " n"]
    p: Float[Array, " n"]
    rr: Float[Array, ""]
    it: Int[Array, ""]
    status: Int[Array, ""]
    oracle: Oracle


def _to_boundary(s, p, radius):
    """τ ≥ 0 with ‖s + τ p‖ = radius (the root formula without cancellation)."""
    pp = jnp.vdot(p, p)
    sp = jnp.vdot(s, p)
    gap = jnp.maximum(radius * radius - jnp.vdot(s, s), 0.0)
    root = jnp.sqrt(sp * sp + pp * gap)
    # For sp > 0, (−sp + root)/pp loses every digit when pp·gap << sp²; use the
    # equivalent gap/(sp + root) there.
    tau = jnp.where(
        sp > 0,
        gap / jnp.where(sp + root > 0, sp + root, 1.0),
        (root - sp) / jnp.where(pp > 0, pp, 1.0),
    )
    return jnp.where(pp > 0, tau, 0.0)


class SteihaugCG(eqx.Module):
    """Truncated CG on the trust-region model, with exact or approximate H products.

    Attributes:
        max_iter: maximum CG iterations; None means n (the number of variables).

    Example:
        ```python
        import statefulnlp as snlp

        trunk = snlp.solvers.Trunk(cg=snlp.solvers.SteihaugCG(max_iter=20))  # cap the CG work
        ```
    """

    max_iter: int | None = None

    def solve(
        self, oracle: Oracle, point: Evaluation, radius: Float[Array, ""], tol: Float[Array, ""]
    ) -> tuple[CGResult, Oracle]:
        """Approximately minimize g's + ½ s'H(x)s over ‖s‖ ≤ radius; stop when ‖r‖ ≤ tol.

        `x` and `g` are `point.x` and `point.g`; H is the oracle's Hessian at `point.x`.
        """
        x, g = point.x, point.g
        n = x.shape[0]
        max_iter = n if self.max_iter is None else min(self.max_iter, n)
        zero = jnp.zeros_like(x)
        # Work on (H/γ) s = −g/γ with γ = ‖g‖: the same step s, but residuals of
        # order 1, so r'r and p'Hp neither overflow nor underflow whatever the scale
        # of f (‖g‖ = 1e20 in float32 would overflow r'r).
        gnorm = safe_norm(g)
        gamma = jnp.where((gnorm > 0) & jnp.isfinite(gnorm), gnorm, 1.0)
        tol = tol / gamma
        r0 = -g / gamma
        init = _CGState(
            s=zero,
            hs=zero,
            r=r0,
            p=r0,
            rr=jnp.vdot(r0, r0),
            it=jnp.zeros((), jnp.int32),
            status=jnp.asarray(-1, jnp.int32),
            oracle=oracle,
        )

        def cond(c: _CGState):
            return (c.status < 0) & (c.it < max_iter) & (jnp.sqrt(c.rr) > tol)

        def body(c: _CGState) -> _CGState:
            hp, orc = c.oracle.hprod(x, c.p)
            hp = hp / gamma
            kappa = jnp.vdot(c.p, hp)
            finite = jnp.isfinite(kappa) & jnp.all(jnp.isfinite(hp))
            alpha = c.rr / jnp.where(kappa > 0, kappa, 1.0)
            s_next = c.s + alpha * c.p
            outside = jnp.vdot(s_next, s_next) >= radius * radius
            stop_at_boundary = finite & ((kappa <= 0) | outside)
            tau = _to_boundary(c.s, c.p, radius)
            # Boundary or negative curvature: go to the boundary along p and stop.
            s_b = c.s + tau * c.p
            hs_b = c.hs + tau * hp
            # Regular CG step.
            hs_next = c.hs + alpha * hp
            r_next = c.r - alpha * hp
            rr_next = jnp.vdot(r_next, r_next)
            beta = rr_next / jnp.where(c.rr > 0, c.rr, 1.0)
            p_next = r_next + beta * c.p
            regular = finite & ~stop_at_boundary
            status = jnp.where(
                ~finite,
                CGStatus.NON_FINITE,
                jnp.where(
                    stop_at_boundary,
                    jnp.where(kappa <= 0, CGStatus.NEGATIVE_CURVATURE, CGStatus.BOUNDARY),
                    -1,
                ),
            ).astype(jnp.int32)
            return _CGState(
                s=jnp.where(regular, s_next, jnp.where(stop_at_boundary, s_b, c.s)),
                hs=jnp.where(regular, hs_next, jnp.where(stop_at_boundary, hs_b, c.hs)),
                r=jnp.where(regular, r_next, c.r),
                p=jnp.where(regular, p_next, c.p),
                rr=jnp.where(regular, rr_next, c.rr),
                it=c.it + 1,
                status=status,
                oracle=orc,
            )

        final = jax.lax.while_loop(cond, body, init)
        # A first product that is not finite leaves s = 0: fall back to the Cauchy
        # direction, cut to the boundary, so the trust region can still shrink.
        stuck = (final.status == CGStatus.NON_FINITE) & (jnp.vdot(final.s, final.s) == 0)
        cauchy = -g * (radius / gamma)
        step = jnp.where(stuck, cauchy, final.s)
        curvature = jnp.where(stuck, 0.0, gamma * jnp.vdot(final.s, final.hs))
        status = jnp.where(
            final.status >= 0,
            final.status,
            jnp.where(jnp.sqrt(final.rr) <= tol, CGStatus.CONVERGED, CGStatus.MAX_ITER),
        ).astype(jnp.int32)
        return CGResult(step, curvature, final.it, status), final.oracle
