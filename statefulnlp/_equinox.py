"""Equinox models as optimization problems."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._errors import InvalidArgumentError, InvalidTypeError
from ._metrics import REQUIRED, accuracy_over, count_hits, evaluation_data, required_state
from ._problem import StatefulNLPModel, _as_vector, check_model_functions
from ._tree import PyTree, to_jax_tree

__all__ = ["EquinoxNLPModel"]


class _Static(eqx.Module):
    """A pytree's non-array part, stored as treedef + leaves so that it hashes by value."""

    treedef: Any = eqx.field(static=True)
    leaves: tuple[Any, ...] = eqx.field(static=True)

    @classmethod
    def of(cls, tree: PyTree) -> _Static:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        safe = []
        for leaf in leaves:
            try:
                hash(leaf)
            except TypeError:
                leaf = _ById(leaf)
            safe.append(leaf)
        return cls(treedef, tuple(safe))

    def tree(self) -> PyTree:
        leaves = [x.value if isinstance(x, _ById) else x for x in self.leaves]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


class _ById:
    """Wraps an unhashable static leaf; equal only to itself."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.value is self.value


class _EquinoxFn(eqx.Module):
    """`(x_tree, state, batch, consts) -> loss(model, state, batch)`."""

    loss: Callable[..., Any] = eqx.field(static=True)
    static: _Static

    def __call__(self, x_tree, state, batch, consts):
        model = eqx.combine(x_tree, consts, self.static.tree())
        return self.loss(model, state, batch)


def _split_model(model: eqx.Module) -> tuple[PyTree, PyTree, PyTree]:
    params, rest = eqx.partition(model, eqx.is_inexact_array)
    consts, static = eqx.partition(rest, eqx.is_array)
    return params, consts, static


class EquinoxNLPModel(StatefulNLPModel):
    """An Equinox model, its state and a loss, as an optimization problem.

    The variables are the model's inexact-array leaves (`eqx.is_inexact_array`);
    everything else is static (integer arrays are passed along as constants).
    `state` is the model's explicit state: an `eqx.nn.State` (BatchNorm
    statistics), dropout keys, or any other pytree.

    `loss(model, state, batch) -> (loss, new_state)`;
    `predict(model, state, inputs) -> logits` is used by `accuracy`, on the
    model switched to inference mode.

    Example:
        ```python
        import equinox as eqx, jax, jax.numpy as jnp
        import statefulnlp as snlp

        model = eqx.nn.Linear(3, 2, key=jax.random.key(0))

        def loss(model, state, batch):
            X, y = batch
            logits = jax.vmap(model)(X)
            ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])
            return ce, state

        X, y = jnp.ones((8, 3)), jnp.arange(8) % 2
        nlp = snlp.EquinoxNLPModel(model, None, loss, (X, y),
                                   predict=lambda m, s, X: jax.vmap(m)(X))
        assert nlp.nvar == 8
        trained = nlp.to_model(nlp.x0)
        ```
    """

    def __init__(
        self,
        model: eqx.Module,
        state: PyTree,
        loss: Callable[[Any, PyTree, PyTree], tuple[Any, PyTree]],
        train_data: Any,
        test_data: Any = None,
        predict: Callable[[Any, PyTree, Any], Any] | None = None,
        *,
        mesh: Any = None,
    ):
        if not isinstance(model, eqx.Module):
            raise InvalidTypeError(f"model: expected an equinox.Module, got {type(model).__name__}")
        check_model_functions(loss, predict)
        params, consts, static = _split_model(model)
        if not jax.tree_util.tree_leaves(params):
            raise InvalidArgumentError("model: has no inexact (float) array to optimize")
        consts = to_jax_tree(consts, "model")
        self._static = _Static.of(static)
        self._predict = predict
        self._test_data = test_data
        fn = _EquinoxFn(loss, self._static)
        self._setup(fn, params, state, train_data, consts=consts, name="loss", mesh=mesh)
        self._jit_correct = None

    def to_model(self, x: Float[Array, " n"] | None = None) -> eqx.Module:
        """The `eqx.Module` with variables `x` (default: `x0`), each leaf in its own dtype."""
        x = self.x0 if x is None else x
        params = self.unflatten(x)
        return eqx.combine(params, self._consts, self._static.tree())

    def accuracy(
        self,
        x: Float[Array, " n"],
        state: PyTree = REQUIRED,
        data: Any = None,
        *,
        chunk: int = 1024,
    ) -> float:
        """Fraction of samples whose `argmax(predict(...))` equals the label.

        `data` defaults to the `test_data` given at construction: an `(inputs,
        labels)` pair, a `DataLoader` over such pairs, or an iterable of pairs.
        `state` is required (e.g. `stats.state`; None only for a model without
        state): the BatchNorm statistics change the predictions. Labels are integer
        class indices (or one-hot rows); `predict` must return `(samples, classes)`
        logits. The model runs in
        inference mode (`eqx.nn.inference_mode`), in fixed-size chunks so that a
        large test set compiles once and fits in memory.
        """
        state = required_state(state)
        data = evaluation_data(
            self._predict,
            "EquinoxNLPModel(..., predict=fn) with fn(model, state, inputs) -> logits",
            data,
            self._test_data,
        )
        if self._jit_correct is None:
            self._jit_correct = jax.jit(functools.partial(_count_correct, self._predict))
        model = eqx.nn.inference_mode(self.to_model(_as_vector(x, "x")))
        params, consts, static = _split_model(model)
        static = _Static.of(static)
        count = self._jit_correct

        return accuracy_over(
            data,
            chunk,
            lambda piece: count((static, params, consts), state, piece),
        )


def _count_correct(predict, parts, state, piece):
    static, params, consts = parts
    inputs, labels, mask = piece
    model = eqx.combine(params, consts, static.tree())
    return count_hits(predict(model, state, inputs), labels, mask)
