"""The result of a solve: `Stats`, and the enumerated `Status` with its message."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from jaxtyping import Array, Float

from .traits import StatePolicy

__all__ = ["Stats", "Status"]


class Status(str, enum.Enum):
    """Why a solve stopped. A `str` enum: `stats.status == "first_order"` holds.

    Example:
        ```python
        import statefulnlp as snlp

        assert snlp.Status.MAX_ITER == "max_iter"
        print(snlp.Status.MAX_ITER.message)
        ```
    """

    UNKNOWN = "unknown"
    FIRST_ORDER = "first_order"
    MAX_ITER = "max_iter"
    MAX_EVAL = "max_eval"
    MAX_TIME = "max_time"
    USER = "user"
    SMALL_STEP = "small_step"
    STALLED = "stalled"
    NOT_DESC = "not_desc"
    UNBOUNDED = "unbounded"
    EXCEPTION = "exception"

    def __str__(self) -> str:
        return self.value

    @property
    def message(self) -> str:
        """A human sentence explaining the status."""
        return _MESSAGES[self]

    @property
    def code(self) -> int:
        """The integer used for this status on the device."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Status:
        return _BY_CODE[int(code)]


_MESSAGES = {
    Status.UNKNOWN: "the solve is still running",
    Status.FIRST_ORDER: "first-order stationary: the gradient norm is below atol + rtol*||g0||",
    Status.MAX_ITER: "stopped: the maximum number of iterations (max_iter) was reached",
    Status.MAX_EVAL: "stopped: the maximum number of objective evaluations (max_eval) was reached",
    Status.MAX_TIME: "stopped: the time limit (max_time) was reached",
    Status.USER: "stopped by the user: the callback returned True",
    Status.SMALL_STEP: "stopped: the step became too small to change the iterate",
    Status.STALLED: (
        "stalled: no step decreases f any further (along every direction tried, or below "
        "the rounding error of f in this dtype)"
    ),
    Status.NOT_DESC: "stopped: the search direction is not a descent direction",
    Status.UNBOUNDED: "the objective seems unbounded below",
    Status.EXCEPTION: (
        "stopped: a non-finite objective or gradient was met at an accepted point; "
        "the last good iterate and state are returned"
    ),
}

_CODES = {status: i for i, status in enumerate(Status)}
_BY_CODE = {i: status for status, i in _CODES.items()}


@dataclasses.dataclass(frozen=True)
class Stats:
    """The result of `solve` (and the snapshot passed to callbacks).

    Attributes:
        status: why the solve stopped (`Status`, a str enum).
        message: a human sentence explaining the status.
        solution: the final iterate (flat vector).
        state: the final state; you need it to run the model.
        objective: f at the solution (from the last evaluation there).
        dual_feas: ||grad f(solution)||.
        iter: iterations made (rejected steps included), over the whole run when resumed.
        elapsed_time: wall-clock seconds of the solve.
        state_policy: the `StatePolicy` used.
        solver: the solver's registry name.
        counters: evaluations made during this solve (`obj`, `grad`, `hprod`).
        accepted: how many steps were accepted.
        solver_state: the solver's final memory (e.g. L-BFGS pairs, trust radius), as
            device arrays; for inspection.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum((x - 1) ** 2), s), jnp.zeros(2))
        stats = snlp.solve(nlp, "trunk")
        print(stats)  # status, objective, ‖∇f‖, iterations, evaluations
        assert stats.status == "first_order" and stats.message == stats.status.message
        x = stats.solution  # a flat vector; nlp.unflatten(x) gives the pytree
        ```
    """

    status: Status
    message: str
    solution: Float[Array, " n"]
    state: Any
    objective: float
    dual_feas: float
    iter: int
    elapsed_time: float
    state_policy: StatePolicy
    solver: str
    counters: dict[str, int]
    accepted: int = 0
    solver_state: Any = None

    def __str__(self) -> str:
        return (
            f"Stats(status={self.status.value!r}, objective={self.objective:.6g}, "
            f"dual_feas={self.dual_feas:.3g}, iter={self.iter}, "
            f"elapsed_time={self.elapsed_time:.3g}s, solver={self.solver!r}, "
            f"state_policy={self.state_policy.value!r}, evaluations={self.counters})"
        )
