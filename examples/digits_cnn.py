"""Train a LeNet-style CNN with BatchNorm and dropout on scikit-learn's 8x8 digits.

The main job of the README: L-BFGS under the `freeze` state policy, with a new
minibatch every iteration (advanced from the callback). Each iteration sees one
function f_k(x) = loss(x, s_k, B_k): the line search compares values of the same
network, BatchNorm statistics and the dropout key advance once per accepted step,
and the L-BFGS curvature pairs are formed on one batch.

    python examples/digits_cnn.py                     # L-BFGS, prints progress and accuracy
    python examples/digits_cnn.py --solver adam       # or r2, trunk (with an LSR1 model)
    python examples/digits_cnn.py --compare           # all four on one plot
"""

from __future__ import annotations

import os

import equinox as eqx
import jax
import jax.numpy as jnp
from _common import SOLVER_CHOICES, parser, plot_curves, train

import statefulnlp as snlp
from statefulnlp.datasets import digits_split


class LeNet(eqx.Module):
    """conv-BN-relu-pool, conv-BN-relu-pool, dropout, dense-relu, dense."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    dense1: eqx.nn.Linear
    dense2: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __init__(self, key, image_size: int = 8):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        side = image_size // 4  # two 2x2 poolings
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.bn1 = eqx.nn.BatchNorm(16, axis_name="batch", mode="batch", momentum=0.9)
        self.conv2 = eqx.nn.Conv2d(16, 32, 3, padding=1, key=k2)
        self.bn2 = eqx.nn.BatchNorm(32, axis_name="batch", mode="batch", momentum=0.9)
        self.dense1 = eqx.nn.Linear(32 * side * side, 64, key=k3)
        self.dense2 = eqx.nn.Linear(64, 10, key=k4)
        self.dropout = eqx.nn.Dropout(0.25)

    def __call__(self, image, state, key):
        def pool(h):
            return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID")

        h, state = self.bn1(self.conv1(image[None]), state)
        h = pool(jax.nn.relu(h))
        h, state = self.bn2(self.conv2(h), state)
        h = pool(jax.nn.relu(h))
        h = self.dropout(h.reshape(-1), key=key)
        return self.dense2(jax.nn.relu(self.dense1(h))), state


def _batched(model, images, bn_state, keys):
    return jax.vmap(model, axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None))(
        images, bn_state, keys
    )


def loss(model, state, batch):
    """Cross-entropy; the state is (BatchNorm state, dropout key), both advanced here."""
    images, labels = batch
    bn_state, key = state
    key, sub = jax.random.split(key)
    logits, bn_state = _batched(model, images, bn_state, jax.random.split(sub, images.shape[0]))
    ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])
    return ce, (bn_state, key)


def predict(model, state, images):
    bn_state, key = state
    keys = jax.random.split(key, images.shape[0])
    return _batched(model, images, bn_state, keys)[0]


def make_problem(batch_size: int, seed: int) -> snlp.EquinoxNLPModel:
    X_train, X_test, y_train, y_test = digits_split(images=True)
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(seed))
    return snlp.EquinoxNLPModel(
        model,
        (bn_state, jax.random.key(seed + 1)),
        loss,
        snlp.DataLoader((X_train, y_train), batch_size, seed=seed),
        test_data=(X_test, y_test),
        predict=predict,
    )


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.splitlines()[0], iters=400)
    p.add_argument("--solver", choices=SOLVER_CHOICES, default="lbfgs")
    p.add_argument("--compare", action="store_true", help="train with every solver, one plot")
    args = p.parse_args(argv)
    iters = 6 if args.quick else args.iters
    names = list(SOLVER_CHOICES) if args.compare else [args.solver]
    runs, accuracies = {}, {}
    for name in names:
        runs[name], accuracies[name] = train(name, make_problem(args.batch_size, args.seed), iters)
    tag = "compare" if args.compare else args.solver
    plot_curves(runs, os.path.join(args.out, f"digits_cnn_{tag}.png"), "LeNet on 8x8 digits")
    return accuracies


if __name__ == "__main__":
    main()
