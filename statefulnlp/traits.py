"""The solver-trait registry and the state policies.

Every solver declares one trait: whether it is **one-step safe** (one
evaluation per iteration whose value is never compared or combined with another
evaluation: SGD, Adam and other plain optax updates) or **multi-evaluation**
(anything that compares or combines evaluations: R2's acceptance ratio, line
searches, trust regions, CG with Hessian-vector products, quasi-Newton pairs).

The trait decides which `StatePolicy` a solve may use:

| policy      | one-step solver | multi-evaluation solver | what happens to the state |
|-------------|-----------------|-------------------------|---------------------------|
| `propagate` | default         | refused                 | each evaluation's new state is the next one's input |
| `freeze`    | allowed         | default                 | one state (and batch) per iteration; it advances once per accepted step |
| `reject`    | allowed         | allowed                 | any change of state is an error (`StateMutationError`) |

Example:
    ```python
    import statefulnlp as snlp

    assert not snlp.traits.of("lbfgs").one_step_safe
    assert snlp.traits.of("lbfgs").default_policy == "freeze"
    assert "trunk" in snlp.traits.registered()
    ```
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from typing import Any

from ._errors import IncompatibleStatePolicyError, InvalidTypeError, UnknownNameError

__all__ = ["SolverTraits", "StatePolicy", "of", "register", "registered", "resolve_policy"]


class StatePolicy(str, enum.Enum):
    """How a solve treats the state returned by the objective.

    A `str` enum: `StatePolicy.FREEZE == "freeze"` holds, and every function that
    takes a policy accepts the plain string too.

    Example:
        ```python
        from statefulnlp.traits import StatePolicy

        assert StatePolicy.parse("Freeze") is StatePolicy.FREEZE == "freeze"
        print(StatePolicy.FREEZE.description)
        ```
    """

    PROPAGATE = "propagate"
    FREEZE = "freeze"
    REJECT = "reject"

    def __str__(self) -> str:
        return self.value

    @property
    def description(self) -> str:
        return _POLICY_TEXT[self]

    @classmethod
    def parse(cls, value: Any, name: str = "state_policy") -> StatePolicy:
        """A `StatePolicy` from an enum member or its name (case-insensitive)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
            raise UnknownNameError(
                f"{name}: unknown state policy {value!r}; expected one of "
                f"{', '.join(repr(p.value) for p in cls)}"
            )
        raise InvalidTypeError(
            f"{name}: expected a StatePolicy or one of "
            f"{', '.join(repr(p.value) for p in cls)}, got {type(value).__name__}"
        )


_POLICY_TEXT = {
    StatePolicy.PROPAGATE: "each evaluation's new state is the input of the next evaluation",
    StatePolicy.FREEZE: (
        "every evaluation of iteration k uses the same state s_k and batch; s_{k+1} is the "
        "state returned at the accepted point"
    ),
    StatePolicy.REJECT: "the objective must not change its state",
}


@dataclasses.dataclass(frozen=True)
class SolverTraits:
    """What a solver declares about itself.

    Attributes:
        name: the registry name (`solve(nlp, name)` builds the solver from it).
        one_step_safe: True if the solver makes one evaluation per iteration and never
            compares or combines it with another one.
        uses_hprod: True if the solver calls Hessian-vector products (so a quasi-Newton
            model such as `LSR1Model` changes what it does).

    Example:
        ```python
        import statefulnlp as snlp

        t = snlp.traits.of("trunk")
        assert (t.name, t.one_step_safe, t.uses_hprod) == ("trunk", False, True)
        assert t.allows("reject") and not t.allows("propagate")
        ```
    """

    name: str
    one_step_safe: bool
    uses_hprod: bool = False

    @property
    def default_policy(self) -> StatePolicy:
        """`propagate` for one-step solvers, `freeze` for multi-evaluation solvers."""
        from ._evaluate import StateRule

        return StateRule.default_policy(self.one_step_safe)

    @property
    def kind(self) -> str:
        return "one-step" if self.one_step_safe else "multi-evaluation"

    def allows(self, policy: StatePolicy | str) -> bool:
        """Whether `policy` may be used with this solver."""
        try:
            resolve_policy(self, policy)
        except IncompatibleStatePolicyError:
            return False
        return True


# name -> (class, traits). Filled by the solver modules at import time and by users.
_REGISTRY: dict[str, tuple[type, SolverTraits]] = {}


def _solver_base() -> type:
    from .solvers._base import AbstractSolver

    return AbstractSolver


def register(
    cls: type,
    one_step_safe: bool,
    name: str | None = None,
    *,
    uses_hprod: bool = False,
) -> SolverTraits:
    """Register a solver class and declare its trait.

    `cls` must subclass `statefulnlp.solvers.AbstractSolver`. `one_step_safe` must
    be given explicitly as a bool: a missing or non-bool declaration is an error,
    never a guess. `name` defaults to `cls.__name__.lower()`. Registering a name
    again with another class is an error; re-registering the same class updates it.

    Example:
        ```python
        import statefulnlp as snlp

        class MySGD(snlp.solvers.GradientDescent):
            pass

        snlp.traits.register(MySGD, one_step_safe=True)
        assert snlp.traits.of("mysgd").one_step_safe
        ```
    """
    if not inspect.isclass(cls):
        raise InvalidTypeError(f"cls: expected a solver class, got {type(cls).__name__}")
    base = _solver_base()
    if not issubclass(cls, base):
        raise InvalidTypeError(
            f"cls: {cls.__name__} is not a solver; solver classes subclass "
            "statefulnlp.solvers.AbstractSolver"
        )
    if not isinstance(one_step_safe, bool):
        raise InvalidTypeError(
            f"one_step_safe: expected True or False, got {one_step_safe!r}; declare whether "
            f"{cls.__name__} makes exactly one evaluation per iteration"
        )
    if not isinstance(uses_hprod, bool):
        raise InvalidTypeError(f"uses_hprod: expected True or False, got {uses_hprod!r}")
    if name is None:
        name = cls.__name__.lower()
    if not isinstance(name, str) or not name.strip():
        raise InvalidTypeError(f"name: expected a non-empty string or None, got {name!r}")
    name = name.strip().lower()
    if name in _REGISTRY and _REGISTRY[name][0] is not cls:
        raise UnknownNameError(
            f"name: {name!r} is already registered for {_REGISTRY[name][0].__name__}; "
            "pick another name"
        ) from None
    traits = SolverTraits(name=name, one_step_safe=one_step_safe, uses_hprod=uses_hprod)
    _REGISTRY[name] = (cls, traits)
    return traits


def registered() -> dict[str, SolverTraits]:
    """Every known solver: registry name -> `SolverTraits`.

    Example:
        ```python
        import statefulnlp as snlp

        for name, t in snlp.traits.registered().items():
            print(name, t.kind, t.default_policy.value)
        ```
    """
    _ensure_builtin()
    return {name: traits for name, (_, traits) in _REGISTRY.items()}


def solver_class(name: str) -> type:
    """The solver class registered under `name`."""
    _ensure_builtin()
    return _lookup(name)[0]


def of(solver: Any) -> SolverTraits:
    """The traits of a solver given by registry name, class or instance.

    An instance is asked first (`solver.traits()`), because traits may depend on
    its configuration: `Optax(optax.adam(1e-3))` is one-step safe,
    `Optax(optax.lbfgs())` is not.

    Example:
        ```python
        import optax
        import statefulnlp as snlp

        assert not snlp.traits.of("lbfgs").one_step_safe
        assert snlp.traits.of(snlp.solvers.Optax(optax.sgd(0.1))).one_step_safe
        ```
    """
    _ensure_builtin()
    if isinstance(solver, str):
        return _lookup(solver)[1]
    base = _solver_base()
    if inspect.isclass(solver):
        cls = solver
    elif isinstance(solver, base):
        # Through the class: equinox builds a bound-method module on attribute access.
        own = type(solver).traits(solver)
        if own is not None:
            return own
        cls = type(solver)
    else:
        raise InvalidTypeError(
            f"solver: expected a solver name, class or instance, got {type(solver).__name__}"
        )
    for registered_cls, traits in _REGISTRY.values():
        if registered_cls is cls:
            return traits
    raise UnknownNameError(
        f"solver: {cls.__name__} is not registered; declare its trait with "
        f"snlp.traits.register({cls.__name__}, one_step_safe=...)"
    )


def _lookup(name: str) -> tuple[type, SolverTraits]:
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UnknownNameError(
            f"solver: unknown solver {name!r}; registered solvers are "
            f"{', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[key]


def resolve_policy(traits: SolverTraits, policy: Any) -> StatePolicy:
    """The policy to use: `policy` (or the trait's default when None), checked.

    Raises `IncompatibleStatePolicyError` for `propagate` with a multi-evaluation
    solver, naming the solver, why, and what to use instead. (The decision is
    made by `StateRule.for_solver`, in the module that owns the state policy.)

    Example:
        ```python
        import statefulnlp as snlp

        policy = snlp.traits.resolve_policy(snlp.traits.of("r2"), None)
        assert policy == "freeze"
        ```
    """
    from ._evaluate import StateRule

    return StateRule.for_solver(traits, policy).policy


def _ensure_builtin() -> None:
    """Import the built-in solvers so that they are registered."""
    if not _REGISTRY:
        from . import solvers  # noqa: F401
