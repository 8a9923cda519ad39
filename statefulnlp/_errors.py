"""The error classes of statefulnlp.

Every error the library raises on purpose subclasses `StatefulNLPError`. Errors
about bad arguments also subclass the matching builtin (`ValueError`,
`TypeError`, `KeyError`), so code that already catches those keeps working.
An exception raised by the user's own objective or callback is never wrapped:
it propagates unchanged.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DatasetError",
    "DatasetNotFoundError",
    "IncompatibleStatePolicyError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "NonFiniteError",
    "SolverTraitError",
    "StateMutationError",
    "StatefulNLPError",
    "UnknownNameError",
]


class StatefulNLPError(Exception):
    """Base class of every error raised by statefulnlp.

    Example:
        ```python
        import statefulnlp as snlp

        try:
            snlp.solve("not a problem", "lbfgs")
        except snlp.StatefulNLPError as err:  # every deliberate error
            print(err)  # nlp: expected a statefulnlp problem ...
        ```
    """


class InvalidArgumentError(StatefulNLPError, ValueError):
    """An argument has the right type but a bad value (shape, sign, emptiness, ...).

    The message names the argument and says what was expected.

    Example:
        ```python
        import pytest
        import statefulnlp as snlp

        with pytest.raises(ValueError, match="batch_size"):  # also a ValueError
            snlp.DataLoader([[1.0, 2.0]], batch_size=0)
        ```
    """


class InvalidTypeError(StatefulNLPError, TypeError):
    """An argument has the wrong type. The message names the argument.

    Example:
        ```python
        import jax.numpy as jnp
        import pytest
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (x @ x, s), jnp.ones(2))
        with pytest.raises(TypeError, match="callback"):
            snlp.solve(nlp, callback=3)
        ```
    """


class UnknownNameError(StatefulNLPError, KeyError):
    """A name looked up in a registry (a solver, a state policy) is unknown.

    Example:
        ```python
        import pytest
        import statefulnlp as snlp

        with pytest.raises(KeyError, match="unknown solver 'bfgs'"):
            snlp.traits.of("bfgs")
        ```
    """

    def __str__(self) -> str:  # KeyError would print the repr of the message.
        return str(self.args[0]) if self.args else ""


class IncompatibleStatePolicyError(StatefulNLPError, ValueError):
    """The state policy cannot be used with this solver.

    Raised by `solve` before any evaluation, e.g. `propagate` with a solver that
    compares several evaluations per iteration (a line search, a trust region).

    Example:
        ```python
        import jax.numpy as jnp
        import pytest
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (x @ x, s), jnp.ones(2))
        with pytest.raises(snlp.IncompatibleStatePolicyError, match="freeze"):
            snlp.solve(nlp, "lbfgs", state_policy="propagate")
        assert nlp.counters.obj == 0  # refused before any evaluation
        ```
    """


class StateMutationError(StatefulNLPError, RuntimeError):
    """Under the `reject` policy, an evaluation returned a state that differs from its input.

    Attributes:
        leaves: the paths (as `jax.tree_util.keystr` strings) of the changed leaves.
        iteration: the iteration during which the change was first seen.

    Example:
        ```python
        import jax.numpy as jnp
        import pytest
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (x @ x, {"calls": s["calls"] + 1}),
                                    jnp.ones(2), state={"calls": 0})
        with pytest.raises(snlp.StateMutationError) as info:
            snlp.solve(nlp, "lbfgs", state_policy="reject")
        assert info.value.leaves == ("['calls']",)
        ```
    """

    def __init__(self, message: str, leaves: tuple[str, ...] = (), iteration: int = -1):
        super().__init__(message)
        self.leaves = tuple(leaves)
        self.iteration = iteration


class SolverTraitError(StatefulNLPError, RuntimeError):
    """A solver broke the trait it declared (e.g. a one-step solver evaluated twice).

    Raised at run time, after the iteration in which it happened; see
    `statefulnlp.traits.register`.

    Example:
        ```python
        import statefulnlp as snlp

        assert issubclass(snlp.SolverTraitError, RuntimeError)
        ```
    """


class NonFiniteError(StatefulNLPError, FloatingPointError):
    """The objective or its gradient is NaN or infinite where a finite value is required.

    Example:
        ```python
        import jax.numpy as jnp
        import pytest
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(jnp.log(x)), s), -jnp.ones(2))
        with pytest.raises(snlp.NonFiniteError, match="x0"):
            snlp.solve(nlp, "lbfgs")
        ```
    """


class CheckpointError(StatefulNLPError, ValueError):
    """A checkpoint file is missing, corrupt, truncated or belongs to another problem/solver.

    Example:
        ```python
        import jax.numpy as jnp
        import pytest
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (x @ x, s), jnp.ones(2))
        with pytest.raises(snlp.CheckpointError, match="no checkpoint file"):
            snlp.solve(nlp, "lbfgs", resume="does-not-exist.ckpt")
        ```
    """


class DatasetError(StatefulNLPError, ValueError):
    """A data file is corrupt, truncated or not in the expected format.

    Example:
        ```python
        import os, tempfile
        import pytest
        import statefulnlp as snlp

        path = os.path.join(tempfile.mkdtemp(), "bad.idx")
        with open(path, "wb") as fh:
            fh.write(b"not idx")
        with pytest.raises(snlp.DatasetError, match="magic"):
            snlp.datasets.read_idx(path)
        ```
    """


class DatasetNotFoundError(StatefulNLPError, FileNotFoundError):
    """A data file is missing (the message says where it was looked for).

    Example:
        ```python
        import pytest
        import statefulnlp as snlp

        with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
            snlp.datasets.load_mnist("/nonexistent/mnist")
        ```
    """
