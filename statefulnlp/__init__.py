"""statefulnlp: optimization solvers for JAX losses that carry explicit state.

A loss `fn(x, state, batch) -> (loss, new_state)` becomes a problem
(`StatefulNLPModel`, `EquinoxNLPModel`, `FlaxNLPModel`); `solve` minimizes it
with R2, L-BFGS, trust-region Newton-CG (`trunk`), quasi-Newton models or any
optax transformation, under a checked state policy (`propagate`, `freeze`,
`reject`; see `statefulnlp.traits`).

Example:
    ```python
    import jax.numpy as jnp
    import statefulnlp as snlp

    nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum((x - 3.0) ** 2), s), jnp.zeros(2))
    stats = snlp.solve(nlp, "lbfgs")
    assert stats.status == "first_order"
    ```
"""

from typing import TYPE_CHECKING

from . import datasets, solvers, traits
from ._data import DataLoader
from ._equinox import EquinoxNLPModel
from ._errors import (
    CheckpointError,
    DatasetError,
    DatasetNotFoundError,
    IncompatibleStatePolicyError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    SolverTraitError,
    StatefulNLPError,
    StateMutationError,
    UnknownNameError,
)
from ._evaluate import Evaluation, Oracle
from ._problem import AbstractNLPModel, Counters, Objective, StatefulNLPModel
from ._quasi_newton import LBFGSModel, LSR1Model
from ._stats import Stats, Status
from .solvers import solve
from .traits import SolverTraits, StatePolicy

if TYPE_CHECKING:
    from ._flax import FlaxNLPModel

__version__ = "0.1.0"

__all__ = [
    "AbstractNLPModel",
    "CheckpointError",
    "Counters",
    "DataLoader",
    "DatasetError",
    "DatasetNotFoundError",
    "EquinoxNLPModel",
    "Evaluation",
    "FlaxNLPModel",
    "IncompatibleStatePolicyError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "LBFGSModel",
    "LSR1Model",
    "NonFiniteError",
    "Objective",
    "Oracle",
    "SolverTraitError",
    "SolverTraits",
    "StateMutationError",
    "StatePolicy",
    "StatefulNLPError",
    "StatefulNLPModel",
    "Stats",
    "Status",
    "UnknownNameError",
    "__version__",
    "datasets",
    "solve",
    "solvers",
    "traits",
]


def __getattr__(name: str):
    # FlaxNLPModel needs the optional `flax` dependency: import it on first use.
    if name == "FlaxNLPModel":
        from ._flax import FlaxNLPModel

        return FlaxNLPModel
    raise AttributeError(f"module 'statefulnlp' has no attribute {name!r}")
