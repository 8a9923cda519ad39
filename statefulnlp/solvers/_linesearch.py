"""A strong-Wolfe line search (bracketing + zoom with safeguarded cubic interpolation).

Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 3.5 and 3.6.
It runs as one `lax.while_loop` over trial step sizes. Every trial is one
`objgrad` on the iteration's frozen function, so all trials see the same
state and batch; a NaN/inf trial counts as "too far" and the search backs off.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._evaluate import Evaluation, Oracle
from .._tree import tree_select

__all__ = ["LineSearchResult", "StrongWolfe"]


class LineSearchResult(eqx.Module):
    """The outcome of a line search along `direction` from `point`.

    Attributes:
        step_size: the accepted step t (0 if no step decreased f enough).
        point: the evaluation at x + t d (the start point itself if t = 0).
        wolfe: True if both strong-Wolfe conditions hold at t.
        decrease: True if the sufficient-decrease (Armijo) condition holds at t > 0.
        trials: number of trial evaluations made.

    Example:
        ```python
        from statefulnlp.solvers import LineSearchResult

        # Returned by StrongWolfe().search(oracle, point, direction, step0) inside a solver.
        assert "step_size" in LineSearchResult.__annotations__
        ```
    """

    step_size: Float[Array, ""]
    point: Evaluation
    wolfe: Bool[Array, ""]
    decrease: Bool[Array, ""]
    trials: Int[Array, ""]


class _Side(eqx.Module):
    t: Float[Array, ""]
    f: Float[Array, ""]
    df: Float[Array, ""]


class _SearchState(eqx.Module):
    t: Float[Array, ""]  # next trial
    lo: _Side  # best point with sufficient decrease so far (t = 0 at start)
    hi: _Side  # other end of the bracket, when bracketed
    bracketed: Bool[Array, ""]
    best: Evaluation  # the evaluation at lo.t
    done: Bool[Array, ""]
    wolfe: Bool[Array, ""]
    trials: Int[Array, ""]
    oracle: Oracle


def _cubic_min(a: _Side, b: _Side) -> Float[Array, ""]:
    """Minimizer of the cubic interpolating f and f' at a and b (NaN when undefined)."""
    d1 = a.df + b.df - 3.0 * (a.f - b.f) / (a.t - b.t)
    disc = d1 * d1 - a.df * b.df
    d2 = jnp.sign(b.t - a.t) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return b.t - (b.t - a.t) * (b.df + d2 - d1) / (b.df - a.df + 2.0 * d2)


class StrongWolfe(eqx.Module):
    """Strong-Wolfe line search: f(x+td) ≤ f(x) + c1·t·g'd and |g(x+td)'d| ≤ c2·|g'd|.

    Attributes:
        c1: sufficient-decrease constant (0 < c1 < c2 < 1).
        c2: curvature constant; 0.9 suits quasi-Newton directions.
        max_trials: maximum number of trial evaluations.
        expand: factor by which the step grows while no bracket is found.

    Example:
        ```python
        from statefulnlp.solvers import StrongWolfe
        search = StrongWolfe(c1=1e-4, c2=0.9, max_trials=30)
        ```
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 30
    expand: float = 2.0

    def __check_init__(self):
        if not 0.0 < self.c1 < self.c2 < 1.0:
            from .._errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"c1, c2: expected 0 < c1 < c2 < 1, got c1={self.c1}, c2={self.c2}"
            )

    def search(
        self,
        oracle: Oracle,
        point: Evaluation,
        direction: Float[Array, " n"],
        step0: Float[Array, ""],
    ) -> tuple[LineSearchResult, Oracle]:
        """Search along `direction` (a descent direction) from `point`, first trying `step0`."""
        dtype = point.x.dtype
        f0 = point.f
        df0 = jnp.vdot(point.g, direction)
        start = _Side(jnp.zeros((), dtype), f0, df0)
        c1 = jnp.asarray(self.c1, dtype)
        c2 = jnp.asarray(self.c2, dtype)
        tiny = jnp.finfo(dtype).eps

        init = _SearchState(
            t=jnp.asarray(step0, dtype),
            lo=start,
            hi=start,
            bracketed=jnp.asarray(False),
            best=point,
            done=jnp.asarray(False),
            wolfe=jnp.asarray(False),
            trials=jnp.zeros((), jnp.int32),
            oracle=oracle,
        )

        def cond(s: _SearchState):
            return (~s.done) & (s.trials < self.max_trials)

        def body(s: _SearchState) -> _SearchState:
            trial, orc = s.oracle.objgrad(point.x + s.t * direction)
            return update(s, trial, orc)

        def update(s: _SearchState, trial: Evaluation, orc: Oracle) -> _SearchState:
            t = s.t
            ft = trial.f
            dft = jnp.vdot(trial.g, direction)
            finite = jnp.isfinite(ft) & jnp.isfinite(dft)
            # Sufficient decrease, and better than the best point so far.
            armijo = finite & (ft <= f0 + c1 * t * df0) & (ft < s.lo.f)
            curvature = jnp.abs(dft) <= -c2 * df0
            wolfe = armijo & curvature
            new = _Side(t, jnp.where(finite, ft, jnp.inf), jnp.where(finite, dft, jnp.nan))

            # Where does the minimizer lie now?
            # (a) t fails the decrease test: bracket [lo, t].
            # (b) t passes and the slope at t points back towards lo: bracket [t, lo].
            # (c) t passes and the slope still descends: lo = t (and keep hi if bracketed).
            flips = armijo & (dft * (s.hi.t - s.lo.t) >= 0) & s.bracketed
            rising = armijo & (~s.bracketed) & (dft >= 0)
            lo = jax.tree_util.tree_map(lambda a, b: jnp.where(armijo, a, b), new, s.lo)
            hi_candidate = jax.tree_util.tree_map(
                lambda old_lo, old_hi: jnp.where(flips | rising, old_lo, old_hi), s.lo, s.hi
            )
            hi = jax.tree_util.tree_map(lambda a, b: jnp.where(armijo, b, a), new, hi_candidate)
            bracketed = s.bracketed | (~armijo) | rising
            best = tree_select(armijo, trial, s.best)

            # Next trial step.
            width = jnp.abs(hi.t - lo.t)
            cubic = _cubic_min(lo, hi)
            mid = 0.5 * (lo.t + hi.t)
            lower = jnp.minimum(lo.t, hi.t) + 0.1 * width
            upper = jnp.maximum(lo.t, hi.t) - 0.1 * width
            zoom_t = jnp.where(
                jnp.isfinite(cubic) & jnp.isfinite(hi.f), jnp.clip(cubic, lower, upper), mid
            )
            grow_t = t * self.expand
            next_t = jnp.where(bracketed, zoom_t, grow_t)
            collapsed = bracketed & (width <= tiny * jnp.maximum(1.0, jnp.abs(lo.t)))
            done = wolfe | collapsed
            return _SearchState(
                t=next_t,
                lo=lo,
                hi=hi,
                bracketed=bracketed,
                best=best,
                done=done,
                wolfe=wolfe,
                trials=s.trials + 1,
                oracle=orc,
            )

        if oracle.toplevel:
            # The first trial (usually accepted) outside the loop: see Oracle.toplevel.
            first, orc = oracle.objgrad(point.x + init.t * direction)
            init = update(init, first, orc)
        final = jax.lax.while_loop(cond, body, init)
        decrease = final.lo.t > 0
        result = LineSearchResult(
            step_size=final.lo.t,
            point=final.best,
            wolfe=final.wolfe,
            decrease=decrease,
            trials=final.trials,
        )
        return result, final.oracle
