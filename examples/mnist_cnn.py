"""Train the LeNet of digits_cnn.py on MNIST from IDX files you downloaded yourself.

Nothing is downloaded: put train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (plain or .gz) in a
directory and pass it with --data (default: $STATEFULNLP_DATA/mnist or
~/.cache/statefulnlp/mnist). A missing or corrupt file is reported clearly.

    python examples/mnist_cnn.py --data ~/data/mnist
"""

from __future__ import annotations

import os
import sys

import equinox as eqx
import jax
from _common import Progress, parser, plot_curves
from digits_cnn import LeNet, loss, predict

import statefulnlp as snlp
from statefulnlp.datasets import default_data_dir, load_mnist


def main(argv=None) -> dict[str, float]:
    p = parser(__doc__.splitlines()[0], iters=600)
    p.add_argument(
        "--data", default=str(default_data_dir() / "mnist"), help="directory of the IDX files"
    )
    args = p.parse_args(argv)
    try:
        X_train, y_train = load_mnist(args.data, "train")
        X_test, y_test = load_mnist(args.data, "test")
    except (snlp.DatasetNotFoundError, snlp.DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    iters = 5 if args.quick else args.iters
    batch_size = min(args.batch_size, len(X_train))
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(args.seed), X_train.shape[1])
    nlp = snlp.EquinoxNLPModel(
        model,
        (bn_state, jax.random.key(args.seed + 1)),
        loss,
        snlp.DataLoader((X_train, y_train), batch_size, seed=args.seed),
        test_data=(X_test, y_test),
        predict=predict,
    )
    progress = Progress("lbfgs", eval_every=max(iters // 4, 1), log_every=max(iters // 20, 1))
    stats = snlp.solve(
        nlp, snlp.solvers.LBFGS(mem=10), callback=progress, max_iter=iters, atol=0.0, rtol=0.0
    )
    accuracy = nlp.accuracy(stats.solution, stats.state)
    print(f"{stats.iter} iterations, test accuracy {100 * accuracy:.2f}% on {len(X_test)} images")
    plot_curves({"lbfgs": progress}, os.path.join(args.out, "mnist_cnn.png"), "LeNet on MNIST")
    return {"accuracy": accuracy}


if __name__ == "__main__":
    main()
