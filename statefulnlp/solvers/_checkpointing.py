"""The checkpoints of one solve: what they must match, what they record, resuming.

The file format (arrays and a JSON document, written atomically) is
`statefulnlp._checkpoint`; this module decides what goes in it for a solve and
what a resumed solve checks against it:

* the identity (`Checkpointing.identity`): the problem's size, dtype and data
  kind, a fingerprint of its objective (jaxpr and captured constants, on the
  batch the solve starts with), the solver's name and settings, and the state
  policy: a checkpoint of anything else is refused with `CheckpointError`;
* the start: digests of the `x0` and `state` the solve started from; a resume
  given an explicit `x0=`/`state=` must name the same ones;
* the progress: iteration, counters, elapsed time, the problem's data position
  and whether a batch change was pending.

The driver verifies the resumed iterate itself (f and ‖∇f‖ evaluated again), as a
device call, through the `verify` function it passes to `resume`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._checkpoint import (
    fingerprint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    settings,
    tree_digest,
)
from .._errors import CheckpointError
from .._problem import AbstractNLPModel
from .._tree import PyTree, signature
from ._loop import Program

__all__ = ["Checkpointing"]


class Checkpointing:
    """The checkpoint side of one `solve` call.

    `start` is `((x0, state0), (x0 given, state given))`, as `solve` checked them.
    """

    def __init__(
        self,
        nlp: AbstractNLPModel,
        program: Program,
        solver_name: str,
        start: tuple[tuple[Any, Any], tuple[bool, bool]],
    ):
        self.nlp = nlp
        self.program = program
        self.solver_name = solver_name
        (self.x0, self.state0), self.given = start
        self._identity: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this solve.

        Computed once per solve, on the batch current at its first call (the start of
        the solve, or when resuming the checkpoint's batch): a later batch may be one
        the objective rejects.
        """
        if self._identity is None:
            nlp = self.nlp
            batch, consts = nlp.batch, nlp.consts
            self._identity = {
                "nvar": nlp.nvar,
                "dtype": str(nlp.dtype),
                "solver": self.solver_name,
                "solver_settings": settings(self.program.solver),
                "state_policy": self.program.rule.policy.value,
                "data_kind": nlp.data_kind,
                "problem": fingerprint(
                    self.program.objective.value, self.x0, self.state0, batch, consts
                ),
                "problem_batch": str(signature(batch).leaves),
            }
        return self._identity

    def save(self, path: str, carry: PyTree, progress: dict[str, Any]) -> None:
        """Write `carry` to `path` with the identity, the start and `progress`
        (iteration, counters, elapsed time, pending batch change)."""
        meta = dict(self.identity())
        meta.update(
            start_x0=tree_digest(self.x0),
            start_state=tree_digest(self.state0),
            data_position=self.nlp.data_position(),
            exact_resume=self.nlp.exact_resume,
            **progress,
        )
        save_checkpoint(path, carry, meta)

    def resume(
        self, path: str, template: PyTree, verify: Callable[[PyTree, dict[str, Any]], None]
    ) -> tuple[PyTree, dict[str, Any]]:
        """The carry and record of checkpoint `path`, checked to belong to this solve.

        The problem's data position is restored first (the identity is checked on the
        batch the checkpoint saw); `verify(carry, meta)` then checks the iterate. If
        anything refuses the checkpoint, the data position is put back as it was.
        """
        nlp = self.nlp
        before = nlp.data_position()
        try:
            meta = read_meta(path)
            if meta.get("data_position"):
                nlp.restore_data_position(meta["data_position"])
            self._check_start(meta)
            carry, meta = load_checkpoint(path, template, self.identity())
            verify(carry, meta)
        except BaseException:
            if before:
                nlp.restore_data_position(before)
            raise
        return carry, meta

    def _check_start(self, meta: dict[str, Any]) -> None:
        """An explicit `x0=`/`state=` must be where the checkpointed solve started."""
        for name, given, value in (
            ("x0", self.given[0], self.x0),
            ("state", self.given[1], self.state0),
        ):
            if given and meta.get(f"start_{name}") != tree_digest(value):
                raise CheckpointError(
                    f"resume: the checkpointed solve did not start from the {name} given here; "
                    f"pass the same {name} as the interrupted solve, or none"
                )
