"""Flax NNX modules as optimization problems (needs the optional `flax` dependency)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax

try:
    from flax import nnx
except ImportError as err:  # pragma: no cover - exercised only without flax
    raise ImportError(
        'FlaxNLPModel needs flax: install it with `pip install "statefulnlp[flax]"`'
    ) from err

from jaxtyping import Array, Float

from ._errors import InvalidArgumentError, InvalidTypeError
from ._metrics import REQUIRED, accuracy_over, count_hits, evaluation_data, required_state
from ._problem import StatefulNLPModel, _as_vector, check_model_functions
from ._tree import PyTree

__all__ = ["FlaxNLPModel"]


class _FlaxFn(eqx.Module):
    """`(x_tree, state, batch, consts) -> (loss(model, batch), new_state)` for an NNX module.

    The module is rebuilt with `nnx.merge` from the variables and the explicit state,
    the user's loss runs on it in NNX's own style (it may update BatchNorm statistics
    and RNG counters in place), and `nnx.split` reads back what it changed.
    """

    loss: Callable[..., Any] = eqx.field(static=True)
    graphdef: Any = eqx.field(static=True)
    variables: Any = eqx.field(static=True)

    def __call__(self, x_tree, state, batch, consts):
        del consts
        # copy=True: fresh Variables at the current trace level, so the loss may update
        # them in place even under jax.grad (the originals belong to an outer trace).
        model = nnx.merge(self.graphdef, x_tree, state, copy=True)
        loss = self.loss(model, batch)
        _, _, new_state = nnx.split(model, self.variables, ...)
        return loss, new_state


def _check_filter(variables: Any) -> None:
    try:
        nnx.filterlib.to_predicate(variables)
    except Exception as err:
        raise InvalidTypeError(
            f"variables: expected an nnx filter (a Variable type such as nnx.Param, a tuple of "
            f"them, or a predicate), got {variables!r}"
        ) from err


class FlaxNLPModel(StatefulNLPModel):
    """A Flax NNX module and a loss, as an optimization problem.

    The variables selected by the `variables` filter (default `nnx.Param`) are the
    optimization variables, flattened into one vector as for `EquinoxNLPModel`;
    every other variable collection (BatchNorm statistics `nnx.BatchStat`, RNG
    keys and counters, caches) is the explicit state that the state policies
    act on.

    `loss(model, batch) -> scalar` is written in NNX's natural style on a live
    module: BatchNorm layers in training mode update their statistics and
    dropout draws from its RNG stream, in place. The wrapper turns it into the
    pure `(x, state, batch) -> (loss, new_state)` function with
    `nnx.merge`/`nnx.split`, so propagate/freeze/reject see exactly what the
    module changed. `predict(model, inputs) -> logits` is used by `accuracy`,
    on the module switched to evaluation mode (`model.eval()`).

    Example:
        ```python
        import jax, jax.numpy as jnp
        from flax import nnx
        import statefulnlp as snlp

        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

        def loss(model, batch):
            X, y = batch
            logits = model(X)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

        X, y = jnp.ones((8, 3)), jnp.arange(8) % 2
        nlp = snlp.FlaxNLPModel(model, loss, (X, y), predict=lambda m, X: m(X))
        stats = snlp.solve(nlp, "lbfgs", max_iter=20)
        trained = nlp.to_model(stats.solution, stats.state)
        ```
    """

    def __init__(
        self,
        model: Any,
        loss: Callable[[Any, PyTree], Any],
        train_data: Any,
        test_data: Any = None,
        predict: Callable[[Any, Any], Any] | None = None,
        variables: Any = nnx.Param,
        *,
        mesh: Any = None,
    ):
        if not isinstance(model, nnx.Module):
            raise InvalidTypeError(f"model: expected a flax.nnx.Module, got {type(model).__name__}")
        check_model_functions(loss, predict)
        _check_filter(variables)
        graphdef, params, state = nnx.split(model, variables, ...)
        if not jax.tree_util.tree_leaves(params):
            raise InvalidArgumentError(
                f"variables: the filter {variables!r} selects no array of the model to optimize"
            )
        self._graphdef = graphdef
        self._variables = variables
        self._predict = predict
        self._test_data = test_data
        fn = _FlaxFn(loss, graphdef, variables)
        self._setup(fn, params, state, train_data, consts=None, name="loss", mesh=mesh)
        self._jit_correct = None

    def to_model(self, x: Float[Array, " n"] | None = None, state: PyTree = None) -> Any:
        """The NNX module with variables `x` (default `x0`) and state `state` (default `state0`)."""
        x = self.x0 if x is None else x
        state = self.state0 if state is None else state
        return nnx.merge(self._graphdef, self.unflatten(x), state, copy=True)

    def accuracy(
        self,
        x: Float[Array, " n"],
        state: PyTree = REQUIRED,
        data: Any = None,
        *,
        chunk: int = 1024,
    ) -> float:
        """Fraction of samples whose `argmax(predict(model, inputs))` equals the label.

        The module runs in evaluation mode (running BatchNorm statistics, no dropout).
        `data` defaults to `test_data`; see `EquinoxNLPModel.accuracy` for its forms.
        """
        state = required_state(state)
        data = evaluation_data(
            self._predict,
            "FlaxNLPModel(..., predict=fn) with fn(model, inputs) -> logits",
            data,
            self._test_data,
        )
        if self._jit_correct is None:
            self._jit_correct = jax.jit(
                functools.partial(_count_correct, self._predict, self._graphdef)
            )
        params = self.unflatten(_as_vector(x, "x"))
        count = self._jit_correct
        return accuracy_over(data, chunk, lambda piece: count(params, state, piece))


def _count_correct(predict, graphdef, params, state, piece):
    inputs, labels, mask = piece
    model = nnx.merge(graphdef, params, state, copy=True)
    model.eval()
    return count_hits(predict(model, inputs), labels, mask)
