"""Classification accuracy in fixed-size chunks, shared by the model wrappers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._data import DataLoader
from ._errors import InvalidArgumentError, InvalidTypeError

__all__ = ["REQUIRED", "accuracy_over", "count_hits", "evaluation_data", "required_state"]

#: The default of `accuracy`'s `state`: it must be given (BatchNorm statistics matter).
REQUIRED: Any = object()


def required_state(state: Any) -> Any:
    """`state`, or a clear error when `accuracy` was called without one."""
    if state is REQUIRED:
        raise InvalidTypeError(
            "state: accuracy(x, state) needs the state to evaluate with (e.g. stats.state "
            "after a solve, or nlp.state0): BatchNorm statistics and other state change the "
            "predictions; pass None only for a model without state"
        )
    return state


def count_hits(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Number of unmasked rows whose argmax equals the label (class index or one-hot).

    Checked while tracing: `logits` must be `(samples, classes)` and `labels`
    integer class indices `(samples,)` or one-hot rows `(samples, classes)`.
    """
    n = mask.shape[0]
    if logits.ndim != 2 or logits.shape[0] != n:
        raise InvalidArgumentError(
            f"predict: must return logits of shape (samples, classes) = ({n}, classes), got "
            f"shape {tuple(logits.shape)}; for a single output, return one column per class"
        )
    if labels.ndim == 2:
        if labels.shape != logits.shape:
            raise InvalidArgumentError(
                f"data: one-hot labels of shape {tuple(labels.shape)} do not match the logits' "
                f"shape {tuple(logits.shape)}"
            )
        labels = jnp.argmax(labels, axis=-1)
    elif labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise InvalidTypeError(
            "data: labels must be integer class indices of shape (samples,) or one-hot rows "
            f"of shape (samples, classes), got {labels.dtype} labels of shape "
            f"{tuple(labels.shape)}; convert class labels with .astype(int)"
        )
    return jnp.sum((jnp.argmax(logits, axis=-1) == labels) & mask)


def evaluation_data(predict: Any, signature: str, data: Any, test_data: Any) -> Any:
    """The data `accuracy` runs on, with clear errors when something is missing."""
    if predict is None:
        raise InvalidArgumentError(f"predict: accuracy needs {signature} at construction")
    data = test_data if data is None else data
    if data is None:
        raise InvalidArgumentError("data: no data given and the model has no test_data")
    return data


def accuracy_over(data: Any, chunk: int, count: Callable[[tuple[Any, Any, Any]], Any]) -> float:
    """Fraction of correct predictions; `count((inputs, labels, mask))` counts one chunk."""
    if not isinstance(chunk, int) or chunk <= 0:
        raise InvalidArgumentError(f"chunk: expected a positive integer, got {chunk!r}")
    correct = 0
    total = 0
    for piece in _eval_chunks(data, chunk):
        correct += int(count(piece))
        total += int(np.sum(np.asarray(piece[2])))
    if total == 0:
        raise InvalidArgumentError("data: holds no sample")
    return correct / total


def _eval_chunks(data: Any, chunk: int) -> Iterable[tuple[Any, Any, Any]]:
    """Yield `(inputs, labels, mask)` chunks of a fixed size (the last one padded)."""
    if isinstance(data, DataLoader):
        pairs: Iterable[Any] = data
    elif isinstance(data, tuple | list) and len(data) == 2 and hasattr(data[0], "shape"):
        pairs = [tuple(data)]
    elif isinstance(data, (Mapping, str | bytes)):
        raise InvalidTypeError("data: expected (inputs, labels) or an iterable of such pairs")
    else:
        pairs = data
    for pair in pairs:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InvalidTypeError("data: expected (inputs, labels) pairs")
        inputs, labels = jnp.asarray(pair[0]), jnp.asarray(pair[1])
        n = inputs.shape[0]
        if labels.shape[0] != n:
            raise InvalidArgumentError(
                f"data: inputs have {n} samples but labels have {labels.shape[0]}"
            )
        size = min(chunk, n) if n else 0
        for start in range(0, n, max(size, 1)):
            xi, yi = inputs[start : start + size], labels[start : start + size]
            m = xi.shape[0]
            mask = jnp.arange(size) < m
            if m < size:
                pad = size - m
                xi = jnp.concatenate([xi, jnp.repeat(xi[-1:], pad, axis=0)])
                yi = jnp.concatenate([yi, jnp.repeat(yi[-1:], pad, axis=0)])
            yield xi, yi, mask
