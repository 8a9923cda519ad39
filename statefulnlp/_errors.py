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
    """Base class of every error raised by statefulnlp."""


class InvalidArgumentError(StatefulNLPError, ValueError):
    """An argument has the right type but a bad value (shape, sign, emptiness, ...).

    The message names the argument and says what was expected.
    """


class InvalidTypeError(StatefulNLPError, TypeError):
    """An argument has the wrong type. The message names the argument."""


class UnknownNameError(StatefulNLPError, KeyError):
    """A name looked up in a registry (a solver, a state policy) is unknown."""

    def __str__(self) -> str:  # KeyError would print the repr of the message.
        return str(self.args[0]) if self.args else ""


class IncompatibleStatePolicyError(StatefulNLPError, ValueError):
    """The state policy cannot be used with this solver.

    Raised by `solve` before any evaluation, e.g. `propagate` with a solver that
    compares several evaluations per iteration (a line search, a trust region).
    """


class StateMutationError(StatefulNLPError, RuntimeError):
    """Under the `reject` policy, an evaluation returned a state that differs from its input.

    Attributes:
        leaves: the paths (as `jax.tree_util.keystr` strings) of the changed leaves.
        iteration: the iteration during which the change was first seen.
    """

    def __init__(self, message: str, leaves: tuple[str, ...] = (), iteration: int = -1):
        super().__init__(message)
        self.leaves = tuple(leaves)
        self.iteration = iteration


class SolverTraitError(StatefulNLPError, RuntimeError):
    """A solver broke the trait it declared (e.g. a one-step solver evaluated twice)."""


class NonFiniteError(StatefulNLPError, FloatingPointError):
    """The objective or its gradient is NaN or infinite where a finite value is required."""


class CheckpointError(StatefulNLPError, ValueError):
    """A checkpoint file is missing, corrupt, truncated or belongs to another problem/solver."""


class DatasetError(StatefulNLPError, ValueError):
    """A data file is corrupt, truncated or not in the expected format."""


class DatasetNotFoundError(StatefulNLPError, FileNotFoundError):
    """A data file is missing (the message says where it was looked for)."""
