"""The digits CNN of digits_cnn.py written with Flax NNX, trained through FlaxNLPModel.

The loss is plain NNX code on a live module: BatchNorm updates its statistics
and Dropout draws from its RNG stream in place. FlaxNLPModel turns that into
(x, state, batch) -> (loss, new_state) with nnx.split/merge, so the same state
policies apply: L-BFGS under `freeze`, Adam under `propagate`.

    python examples/flax_digits.py                # L-BFGS
    python examples/flax_digits.py --solver adam
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from _common import SOLVER_CHOICES, parser, plot_curves, train
from flax import nnx

import statefulnlp as snlp
from statefulnlp.datasets import digits_split


class LeNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
        self.dropout = nnx.Dropout(0.25, rngs=rngs)
        self.dense1 = nnx.Linear(32 * 2 * 2, 64, rngs=rngs)
        self.dense2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, images):
        h = images[..., None]
        h = nnx.max_pool(jax.nn.relu(self.bn1(self.conv1(h))), (2, 2), (2, 2))
        h = nnx.max_pool(jax.nn.relu(self.bn2(self.conv2(h))), (2, 2), (2, 2))
        h = self.dropout(h.reshape(h.shape[0], -1))
        return self.dense2(jax.nn.relu(self.dense1(h)))


def loss(model, batch):
    images, labels = batch
    logits = model(images)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])


def predict(model, images):
    return model(images)


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.splitlines()[0], iters=400)
    p.add_argument("--solver", choices=SOLVER_CHOICES, default="lbfgs")
    args = p.parse_args(argv)
    iters = 6 if args.quick else args.iters
    X_train, X_test, y_train, y_test = digits_split(images=True)
    nlp = snlp.FlaxNLPModel(
        LeNet(nnx.Rngs(args.seed)),
        loss,
        snlp.DataLoader((X_train, y_train), args.batch_size, seed=args.seed),
        test_data=(X_test, y_test),
        predict=predict,
    )
    progress, accuracy = train(args.solver, nlp, iters)
    plot_curves(
        {args.solver: progress},
        os.path.join(args.out, f"flax_digits_{args.solver}.png"),
        "NNX LeNet on 8x8 digits",
    )
    return {"accuracy": accuracy}


if __name__ == "__main__":
    main()
