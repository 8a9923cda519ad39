"""The motivating case: a dropout mask sampled once and kept in the state, trained with L-BFGS.

The loss uses the mask stored in its state and returns a freshly sampled one.
If every evaluation fed its new state into the next (`propagate`), the line
search would compare losses of *different* thinned networks and its
sufficient-decrease test would mean nothing. statefulnlp refuses that before
evaluating anything; `freeze` gives each iteration one deterministic function
(one mask) and draws a new mask once per accepted step; `reject` reports that
the objective changes its state.

    python examples/dropout_mask_lbfgs.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import parser

import statefulnlp as snlp

P_DROP, HIDDEN = 0.3, 32


def loss(x, state, batch):
    mask, key = state
    X, y = batch
    hidden = jnp.tanh(X @ x["W1"] + x["b1"]) * mask / (1.0 - P_DROP)
    logits = hidden @ x["W2"] + x["b2"]
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])
    key, sub = jax.random.split(key)
    new_mask = jax.random.bernoulli(sub, 1.0 - P_DROP, (HIDDEN,)).astype(mask.dtype)
    return ce, (new_mask, key)


def make_problem(seed: int, n: int = 400) -> snlp.StatefulNLPModel:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = ((X[:, 0] ** 2 + X[:, 1] ** 2) > 1.2).astype(np.int32)  # a circle: needs the hidden layer
    x0 = {
        "W1": rng.normal(scale=0.7, size=(2, HIDDEN)).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "W2": rng.normal(scale=0.3, size=(HIDDEN, 2)).astype(np.float32),
        "b2": np.zeros(2, np.float32),
    }
    key = jax.random.key(seed)
    mask = jax.random.bernoulli(key, 1.0 - P_DROP, (HIDDEN,)).astype(jnp.float32)
    return snlp.StatefulNLPModel(loss, x0, state=(mask, jax.random.key(seed + 1)), data=(X, y))


def main(argv=None) -> dict[str, float]:
    args = parser(__doc__.splitlines()[0], iters=200).parse_args(argv)
    iters = 10 if args.quick else args.iters

    print("1) propagate: refused before any evaluation")
    nlp = make_problem(args.seed)
    try:
        snlp.solve(nlp, "lbfgs", state_policy="propagate")
    except snlp.IncompatibleStatePolicyError as err:
        print(f"   IncompatibleStatePolicyError: {err}")
    print(f"   evaluations made: {nlp.counters.obj}")

    print("2) reject: the objective changes its state")
    try:
        snlp.solve(make_problem(args.seed), "lbfgs", state_policy="reject")
    except snlp.StateMutationError as err:
        print(f"   StateMutationError (changed leaves {', '.join(err.leaves)})")

    print("3) freeze: one mask per iteration, a new one per accepted step")
    nlp = make_problem(args.seed)
    checks = {"armijo_holds": 0, "accepted": 0}
    previous = {"x": nlp.x0, "s": nlp.state0}

    def check(problem, solver, stats):
        # Re-evaluate the iteration's frozen function f_k = loss(., s_k, B) at x_k and x_{k+1}.
        x_k, s_k, x_next = previous["x"], previous["s"], stats.solution
        if not np.array_equal(np.asarray(x_next), np.asarray(x_k)):
            f_k, g_k, _ = problem.objgrad(x_k, s_k)
            f_next, _ = problem.obj(x_next, s_k)
            checks["accepted"] += 1
            checks["armijo_holds"] += bool(f_next <= f_k + 1e-4 * g_k @ (x_next - x_k) + 1e-7)
        previous["x"], previous["s"] = stats.solution, stats.state

    f0 = float(nlp.obj(nlp.x0)[0])
    stats = snlp.solve(nlp, "lbfgs", state_policy="freeze", callback=check, max_iter=iters)
    print(
        f"   loss {f0:.4f} -> {stats.objective:.4f} in {stats.iter} iterations ({stats.status.value})"
    )
    print(
        f"   sufficient decrease held on the frozen function in "
        f"{checks['armijo_holds']}/{checks['accepted']} accepted steps"
    )
    return {"initial": f0, "final": stats.objective, **checks}


if __name__ == "__main__":
    main()
