"""A GRU whose hidden state is carried across minibatches as explicit state.

A long signal is cut into 32 parallel streams; minibatch k holds window k of
every stream, so the hidden state at the end of one window is the right start
for the next (truncated backpropagation through time). The hidden state is the
problem's *state*: under `freeze` (L-BFGS) every trial of an iteration starts
from the same hidden state and it advances once per accepted step; under
`propagate` (Adam) it advances every iteration. A `reset` flag in the first
window of each epoch zeroes it.

    python examples/gru_stateful.py            # L-BFGS (freeze) vs Adam (propagate)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import parser

import statefulnlp as snlp

STREAMS, WINDOW, HIDDEN = 32, 25, 24


def make_signal(length: int, seed: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float32)
    rng = np.random.default_rng(seed)
    signal = np.sin(0.21 * t) + 0.5 * np.sin(0.037 * t + 1.0) + 0.05 * rng.normal(size=length)
    return signal.astype(np.float32)


def make_batches(signal: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Windows of STREAMS parallel streams: inputs x_t, targets x_{t+1}."""
    per_stream = (len(signal) - 1) // STREAMS
    inputs = signal[: STREAMS * per_stream].reshape(STREAMS, per_stream)
    targets = signal[1 : STREAMS * per_stream + 1].reshape(STREAMS, per_stream)
    batches = []
    for k, start in enumerate(range(0, per_stream - WINDOW + 1, WINDOW)):
        batches.append(
            {
                "x": inputs[:, start : start + WINDOW],
                "y": targets[:, start : start + WINDOW],
                "reset": np.float32(k == 0),
            }
        )
    return batches


class Forecaster(eqx.Module):
    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear

    def __init__(self, key, hidden: int = HIDDEN):
        k1, k2 = jax.random.split(key)
        self.cell = eqx.nn.GRUCell(1, hidden, key=k1)
        self.head = eqx.nn.Linear(hidden, 1, key=k2)

    def run(self, h, xs):
        def step(h, x):
            h = self.cell(x[None], h)
            return h, self.head(h)[0]

        return jax.lax.scan(step, h, xs)


def loss(model, hidden, batch):
    """Mean squared one-step-ahead error; returns the hidden state at the window's end."""
    h0 = jax.lax.stop_gradient(hidden) * (1.0 - batch["reset"])
    h_end, preds = jax.vmap(model.run)(h0, batch["x"])
    return jnp.mean((preds - batch["y"]) ** 2), jax.lax.stop_gradient(h_end)


def evaluate(model, batches) -> float:
    """MSE over one pass of the data, carrying the hidden state window to window."""
    h = jnp.zeros((STREAMS, HIDDEN))
    errors = []
    for batch in batches:
        value, h = loss(model, h, jax.tree_util.tree_map(jnp.asarray, batch))
        errors.append(float(value))
    return float(np.mean(errors))


def main(argv=None) -> dict[str, float]:
    args = parser(__doc__.splitlines()[0], iters=300).parse_args(argv)
    iters = 8 if args.quick else args.iters
    batches = make_batches(make_signal(20_000 if not args.quick else 4_000, args.seed))
    naive = float(np.mean([np.mean((b["x"] - b["y"]) ** 2) for b in batches]))
    print(
        f"{len(batches)} windows of {STREAMS} streams x {WINDOW} steps; "
        f"predict-the-last-value baseline MSE {naive:.4f}"
    )
    results = {}
    for name, solver in (
        ("lbfgs", snlp.solvers.LBFGS(mem=10)),
        ("adam", snlp.solvers.Optax(optax.adam(1e-2))),
    ):
        model = Forecaster(jax.random.key(args.seed))
        nlp = snlp.EquinoxNLPModel(model, jnp.zeros((STREAMS, HIDDEN)), loss, batches)
        stats = snlp.solve(
            nlp,
            solver,
            callback=lambda p, s, st: p.next_batch(),
            max_iter=iters,
            atol=0.0,
            rtol=0.0,
        )
        mse = evaluate(nlp.to_model(stats.solution), batches)
        results[name] = mse
        print(
            f"[{name}] policy {stats.state_policy.value}: {stats.iter} iterations, "
            f"{stats.counters['obj']} evaluations, MSE over the data {mse:.4f}"
        )
    return results


if __name__ == "__main__":
    main()
