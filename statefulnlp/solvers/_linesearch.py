"""Line searches: the `AbstractLineSearch` interface, a strong-Wolfe search and Armijo backtracking.

A line search looks for a step t > 0 along a descent direction d from a point x,
evaluating the iteration's frozen function f_k through the `Oracle` it is given
(so every trial sees the same state and batch). It returns a `LineSearchResult`
with the `Evaluation` (f and gradient) at the accepted point x + t d.

Every test inside the searches is relative, so multiplying f by any constant
c > 0 (or d by any positive factor, with step0 divided by it) gives the same
sequence of trial points:

* sufficient decrease compares f(x + t d) with f(x) + c1·t·f'(0);
* a bracket [a, b] is exhausted when its width is below eps·max(|a|, |b|);
* interpolation is done in scaled arithmetic (no f'(t)² that could overflow);
* a search gives up early (`at_precision`) when no step it could still try can
  change f by more than its rounding error, eps·|f(x)|, or move x at all.

NaN/inf trial values count as "too far": the searches back off from them.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._errors import InvalidArgumentError
from .._evaluate import Evaluation, Oracle
from .._tree import PyTree, tree_select

__all__ = ["AbstractLineSearch", "BacktrackingArmijo", "LineSearchResult", "StrongWolfe"]


class LineSearchResult(eqx.Module):
    """The outcome of a line search along `direction` from `point`.

    Attributes:
        step_size: the accepted step t (0 if no step decreased f enough).
        point: the evaluation (f and gradient) at x + t d; the start point itself if t = 0.
        wolfe: True if the strong-Wolfe conditions hold at t (searches that check only
            sufficient decrease report False).
        decrease: True if a step t > 0 with sufficient decrease (and f(x + t d) < f(x))
            was found.
        trials: number of trial points evaluated.
        at_precision: True when no decrease was found and none can be detected in this
            dtype: every step the search could still try changes f, to first order, by
            less than eps·|f(x)|, or leaves x unchanged.

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
    at_precision: Bool[Array, ""]


class AbstractLineSearch(eqx.Module):
    """The interface of a line search: one `search` method.

    `LBFGS(line_search=...)` accepts any implementation. A search evaluates only
    through the oracle it is given, threads the returned oracle through its loops
    (like a PRNG key) and returns it with the result. Configuration fields must be
    hashable Python values (a solver is a static argument of the compiled loop).

    Example:
        ```python
        import jax
        import jax.numpy as jnp
        import statefulnlp as snlp
        from statefulnlp.solvers import AbstractLineSearch, LineSearchResult

        class FixedStep(AbstractLineSearch):
            # Takes step0 whenever it decreases f: no search at all.

            def search(self, oracle, point, direction, step0):
                trial, oracle = oracle.objgrad(point.x + step0 * direction)
                ok = trial.f < point.f
                result = LineSearchResult(
                    step_size=jnp.where(ok, step0, 0.0).astype(point.x.dtype),
                    point=jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), trial, point),
                    wolfe=jnp.asarray(False),
                    decrease=ok,
                    trials=jnp.asarray(1),
                    at_precision=jnp.asarray(False),
                )
                return result, oracle

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x**2), s), jnp.ones(3))
        stats = snlp.solve(nlp, snlp.solvers.LBFGS(line_search=FixedStep()))
        assert stats.status == "first_order"
        ```
    """

    @abc.abstractmethod
    def search(
        self,
        oracle: Oracle,
        point: Evaluation,
        direction: Float[Array, " n"],
        step0: Float[Array, ""],
    ) -> tuple[LineSearchResult, Oracle]:
        """Search along `direction` (a descent direction) from `point`, first trying `step0`."""


# ---------------------------------------------------------------------------
# Strong Wolfe


class _Side(eqx.Module):
    t: Float[Array, ""]
    f: Float[Array, ""]
    df: Float[Array, ""]


class _WolfeState(eqx.Module):
    t: Float[Array, ""]  # next trial
    lo: _Side  # best point with sufficient decrease so far (t = 0 at start)
    hi: _Side  # other end of the bracket, when bracketed
    bracketed: Bool[Array, ""]
    best: Evaluation  # the evaluation at lo.t
    done: Bool[Array, ""]
    wolfe: Bool[Array, ""]
    at_precision: Bool[Array, ""]
    trials: Int[Array, ""]
    oracle: Oracle


def _cubic_min(a: _Side, b: _Side) -> Float[Array, ""]:
    """Minimizer of the cubic through (t, f, f') at a and b; NaN when it has none.

    Computed with every term divided by the largest one (as Moré–Thuente do), so
    that no product of two slopes can overflow whatever the scale of f.
    """
    theta = 3.0 * (a.f - b.f) / (b.t - a.t) + a.df + b.df
    scale = jnp.maximum(jnp.maximum(jnp.abs(theta), jnp.abs(a.df)), jnp.abs(b.df))
    scale = jnp.where(scale > 0, scale, 1.0)
    disc = (theta / scale) ** 2 - (a.df / scale) * (b.df / scale)
    gamma = scale * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    gamma = jnp.where(b.t < a.t, -gamma, gamma)
    p = gamma - a.df + theta
    q = 2.0 * gamma - a.df + b.df
    return a.t + (p / q) * (b.t - a.t)


def _tiny_effect(
    t: Float[Array, ""], df0: Float[Array, ""], f0: Float[Array, ""]
) -> Bool[Array, ""]:
    """True when the first-order change t·|f'(0)| of f is below its rounding error eps·|f0|."""
    eps = jnp.finfo(f0.dtype).eps
    return jnp.abs(t * df0) <= eps * jnp.abs(f0)


def _no_move(
    x: Float[Array, " n"], t: Float[Array, ""], direction: Float[Array, " n"]
) -> Bool[Array, ""]:
    """True when x + t·d rounds to x in every component (no shorter step can move x)."""
    return jnp.all(x + t * direction == x)


class StrongWolfe(AbstractLineSearch):
    """Strong-Wolfe line search: f(x+td) ≤ f(x) + c1·t·g'd and |g(x+td)'d| ≤ c2·|g'd|.

    Bracketing by expansion, then zoom with safeguarded cubic interpolation
    (Nocedal & Wright, Algorithms 3.5 and 3.6), as one `lax.while_loop`; every
    trial is one `objgrad`. All its tests are relative (see the module notes):
    scaling f by any c > 0 leaves the trial steps unchanged.

    Attributes:
        c1: sufficient-decrease constant (0 < c1 < c2 < 1).
        c2: curvature constant; 0.9 suits quasi-Newton directions.
        max_trials: maximum number of trial evaluations.
        expand: factor by which the step grows while no bracket is found (4, as
            the extrapolation bound of Moré–Thuente's search in L-BFGS-B).
        safeguard: interpolated steps stay this fraction of the bracket's width
            away from its ends (0 < safeguard < 0.5).

    Example:
        ```python
        from statefulnlp.solvers import StrongWolfe
        search = StrongWolfe(c1=1e-4, c2=0.9, max_trials=30)
        ```
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_trials: int = 30
    expand: float = 4.0
    safeguard: float = 0.01

    def __check_init__(self):
        if not 0.0 < self.c1 < self.c2 < 1.0:
            raise InvalidArgumentError(
                f"c1, c2: expected 0 < c1 < c2 < 1, got c1={self.c1}, c2={self.c2}"
            )
        if not isinstance(self.max_trials, int) or self.max_trials < 1:
            raise InvalidArgumentError(
                f"max_trials: expected a positive integer, got {self.max_trials!r}"
            )
        if not self.expand > 1.0:
            raise InvalidArgumentError(f"expand: expected a factor > 1, got {self.expand!r}")
        if not 0.0 < self.safeguard < 0.5:
            raise InvalidArgumentError(
                f"safeguard: expected 0 < safeguard < 0.5, got {self.safeguard!r}"
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
        eps = jnp.finfo(dtype).eps
        f0 = point.f
        df0 = jnp.vdot(point.g, direction)
        start = _Side(jnp.zeros((), dtype), f0, df0)
        c1 = jnp.asarray(self.c1, dtype)
        c2 = jnp.asarray(self.c2, dtype)
        no = jnp.asarray(False)

        init = _WolfeState(
            t=jnp.asarray(step0, dtype),
            lo=start,
            hi=start,
            bracketed=no,
            best=point,
            done=no,
            wolfe=no,
            at_precision=no,
            trials=jnp.zeros((), jnp.int32),
            oracle=oracle,
        )

        def cond(s: _WolfeState):
            return (~s.done) & (s.trials < self.max_trials)

        def body(s: _WolfeState) -> _WolfeState:
            trial, orc = s.oracle.objgrad(point.x + s.t * direction)
            return update(s, trial, orc)

        def update(s: _WolfeState, trial: Evaluation, orc: Oracle) -> _WolfeState:
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

            # Next trial step: interpolate inside the bracket, else expand.
            width = jnp.abs(hi.t - lo.t)
            cubic = _cubic_min(lo, hi)
            mid = 0.5 * (lo.t + hi.t)
            lower = jnp.minimum(lo.t, hi.t) + self.safeguard * width
            upper = jnp.maximum(lo.t, hi.t) - self.safeguard * width
            zoom_t = jnp.where(
                jnp.isfinite(cubic) & jnp.isfinite(hi.f), jnp.clip(cubic, lower, upper), mid
            )
            next_t = jnp.where(bracketed, zoom_t, t * self.expand)
            # The bracket is exhausted when its width is below the resolution of its ends.
            span = jnp.maximum(jnp.abs(lo.t), jnp.abs(hi.t))
            collapsed = bracketed & (width <= eps * span)
            # No decrease yet and every step left in [0, hi] changes f by less than its
            # rounding error: nothing can be detected any more.
            # (`_no_move` reads all of x: it is computed only when it can matter.)
            undecided = bracketed & (lo.t == 0)
            hopeless = undecided & (
                _tiny_effect(jnp.abs(hi.t), df0, f0)
                | jax.lax.cond(undecided, lambda: _no_move(point.x, hi.t, direction), lambda: no)
            )
            return _WolfeState(
                t=next_t,
                lo=lo,
                hi=hi,
                bracketed=bracketed,
                best=best,
                done=wolfe | collapsed | hopeless,
                wolfe=wolfe,
                at_precision=hopeless,
                trials=s.trials + 1,
                oracle=orc,
            )

        # The first trial (usually accepted) outside the loop: the loop is then most
        # often not entered at all (measured: 10% of an L-BFGS solve on a cheap
        # objective), and XLA on CPU runs convolutions far slower inside loops.
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
            at_precision=~decrease & final.at_precision,
        )
        return result, final.oracle


# ---------------------------------------------------------------------------
# Armijo backtracking


class _BacktrackState(eqx.Module):
    t: Float[Array, ""]  # the step being tried
    f: Float[Array, ""]  # f at t (inf before the first trial)
    state: PyTree  # the new state returned at t
    done: Bool[Array, ""]
    at_precision: Bool[Array, ""]
    trials: Int[Array, ""]
    oracle: Oracle


class BacktrackingArmijo(AbstractLineSearch):
    """Armijo backtracking: try t = step0, step0·factor, step0·factor², … until sufficient decrease.

    A trial is accepted when f(x + t d) ≤ f(x) + c1·t·g'd and f(x + t d) < f(x).
    Trials evaluate f only (`oracle.obj`); the gradient is evaluated once, at the
    accepted point. The search stops early, with `at_precision`, when t·|g'd|
    falls below the rounding error of f (smaller steps cannot show a decrease).
    Every test is relative, so the trials do not depend on the scale of f.

    Attributes:
        c1: sufficient-decrease constant (0 < c1 < 1).
        factor: step reduction after a failed trial (0 < factor < 1).
        max_trials: maximum number of trial evaluations.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp
        from statefulnlp.solvers import BacktrackingArmijo

        def rosenbrock(x, s, b):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

        nlp = snlp.StatefulNLPModel(rosenbrock, jnp.zeros(4))
        solver = snlp.solvers.LBFGS(line_search=BacktrackingArmijo(c1=1e-4, factor=0.5))
        assert snlp.solve(nlp, solver, max_iter=500).status == "first_order"
        ```
    """

    c1: float = 1e-4
    factor: float = 0.5
    max_trials: int = 30

    def __check_init__(self):
        if not 0.0 < self.c1 < 1.0:
            raise InvalidArgumentError(f"c1: expected 0 < c1 < 1, got {self.c1!r}")
        if not 0.0 < self.factor < 1.0:
            raise InvalidArgumentError(f"factor: expected 0 < factor < 1, got {self.factor!r}")
        if not isinstance(self.max_trials, int) or self.max_trials < 1:
            raise InvalidArgumentError(
                f"max_trials: expected a positive integer, got {self.max_trials!r}"
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
        c1 = jnp.asarray(self.c1, dtype)
        no = jnp.asarray(False)

        def accept(t, ft):
            return jnp.isfinite(ft) & (ft <= f0 + c1 * t * df0) & (ft < f0)

        def update(s: _BacktrackState, ft, state, orc) -> _BacktrackState:
            ok = accept(s.t, ft)
            smaller = s.t * self.factor
            hopeless = ~ok & (
                _tiny_effect(smaller, df0, f0) | _no_move(point.x, smaller, direction)
            )
            return _BacktrackState(
                t=jnp.where(ok, s.t, smaller),
                f=jnp.where(ok, ft, s.f),
                state=tree_select(ok, state, s.state),
                done=ok | hopeless,
                at_precision=hopeless,
                trials=s.trials + 1,
                oracle=orc,
            )

        def cond(s: _BacktrackState):
            return (~s.done) & (s.trials < self.max_trials)

        def body(s: _BacktrackState) -> _BacktrackState:
            ft, state, orc = s.oracle.obj(point.x + s.t * direction)
            return update(s, ft, state, orc)

        init = _BacktrackState(
            t=jnp.asarray(step0, dtype),
            f=f0,
            state=point.state,
            done=no,
            at_precision=no,
            trials=jnp.zeros((), jnp.int32),
            oracle=oracle,
        )
        # The first trial (usually accepted) outside the loop, as in `StrongWolfe`.
        ft, state, orc = oracle.obj(point.x + init.t * direction)
        init = update(init, ft, state, orc)
        final = jax.lax.while_loop(cond, body, init)
        decrease = final.done & ~final.at_precision
        t = jnp.where(decrease, final.t, 0.0).astype(dtype)
        x_new = point.x + t * direction

        def gradient(orc: Oracle):
            g, _, orc = orc.grad(x_new)
            return g, orc

        g_new, orc = jax.lax.cond(decrease, gradient, lambda orc: (point.g, orc), final.oracle)
        new = Evaluation(x_new, final.f, g_new, final.state)
        result = LineSearchResult(
            step_size=t,
            point=tree_select(decrease, new, point),
            wolfe=no,
            decrease=decrease,
            trials=final.trials,
            at_precision=final.at_precision,
        )
        return result, orc
