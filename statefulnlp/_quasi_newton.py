"""Limited-memory quasi-Newton pieces: the pair memory, the two-loop recursion,
and the `LBFGSModel` / `LSR1Model` problems whose `hprod` is the approximation.

Pairs live in a ring buffer updated in place (`PairMemory`); every recursion is a
`lax.scan` over the chronological order of its slots, and `count` says how many of
the newest pairs are valid.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._errors import InvalidArgumentError, InvalidTypeError
from ._problem import _MISSING, AbstractNLPModel, _as_vector
from ._tree import PyTree, safe_norm

__all__ = ["LBFGSModel", "LSR1Model", "PairMemory", "curvature_ok", "two_loop"]


def _check_mem(mem: Any) -> int:
    if not isinstance(mem, int) or isinstance(mem, bool) or mem < 1:
        raise InvalidArgumentError(f"mem: expected a positive integer, got {mem!r}")
    return mem


class PairMemory(eqx.Module):
    """The last `m` curvature pairs (s_i, y_i) in a ring buffer (updated in place).

    Attributes:
        S, Y: `(m, n)` storage; slot `order[j]` holds the j-th oldest pair.
        sy: `(m,)` the products s_i'y_i, slot by slot.
        ynorm: `(m,)` the norms ‖y_i‖, slot by slot (for the scaling of H_0).
        count: number of valid pairs (the newest `count` ones).
        head: the slot the next pair is written to.
    """

    S: Float[Array, "m n"]
    Y: Float[Array, "m n"]
    sy: Float[Array, " m"]
    ynorm: Float[Array, " m"]
    count: Int[Array, ""]
    head: Int[Array, ""]

    @classmethod
    def empty(cls, mem: int, n: int, dtype: Any) -> PairMemory:
        z = jnp.zeros((mem, n), dtype)
        zero = jnp.zeros((), jnp.int32)
        zm = jnp.zeros((mem,), dtype)
        return cls(z, z, zm, zm, zero, zero)

    @property
    def mem(self) -> int:
        return self.S.shape[0]

    @property
    def order(self) -> Int[Array, " m"]:
        """Storage slots from the oldest to the newest."""
        return (self.head + jnp.arange(self.mem)) % self.mem

    @property
    def valid(self) -> Bool[Array, " m"]:
        """Which entries of `order` hold a pair (the last `count`)."""
        return jnp.arange(self.mem) >= self.mem - self.count

    def chronological(self) -> tuple[Float[Array, "m n"], Float[Array, "m n"]]:
        """`(S, Y)` with rows from the oldest to the newest (for inspection)."""
        return self.S[self.order], self.Y[self.order]

    def push(
        self,
        s: Float[Array, " n"],
        y: Float[Array, " n"],
        keep: Bool[Array, ""],
        ynorm: Float[Array, ""] | None = None,
    ) -> PairMemory:
        """Store (s, y) as the newest pair, over the oldest one, when `keep` is True.

        `ynorm` is ‖y‖ when the caller has it already (else it is computed).
        """
        i = self.head
        ynorm = safe_norm(y) if ynorm is None else ynorm
        S = self.S.at[i].set(jnp.where(keep, s, self.S[i]))
        Y = self.Y.at[i].set(jnp.where(keep, y, self.Y[i]))
        sy = self.sy.at[i].set(jnp.where(keep, jnp.vdot(s, y), self.sy[i]))
        yn = self.ynorm.at[i].set(jnp.where(keep, ynorm, self.ynorm[i]))
        count = jnp.where(keep, jnp.minimum(self.count + 1, self.mem), self.count)
        head = jnp.where(keep, (i + 1) % self.mem, i)
        return PairMemory(S, Y, sy, yn, count.astype(jnp.int32), head.astype(jnp.int32))

    def cleared(self) -> PairMemory:
        """The same storage with no valid pair."""
        return dataclasses.replace(self, count=jnp.zeros_like(self.count))

    def newest_scaling(self) -> Float[Array, ""]:
        """y'y / s'y of the newest pair (1 when empty): the scaling of B_0 = γ I.

        Computed as ‖y‖·(‖y‖/s'y), so it does not overflow when y'y would (a
        gradient of 1e20 in float32).
        """
        i = (self.head - 1) % self.mem
        ynorm = self.ynorm[i]  # cached by `push`, as s'y
        sy = self.sy[i]
        ok = (self.count > 0) & (sy > 0) & (ynorm > 0)
        return jnp.where(ok, ynorm * (ynorm / jnp.where(ok, sy, 1.0)), 1.0).astype(self.S.dtype)


def curvature_ok(
    s: Float[Array, " n"],
    y: Float[Array, " n"],
    norms: tuple[Float[Array, ""], Float[Array, ""]] | None = None,
) -> Bool[Array, ""]:
    """The pair test s'y > eps·‖s‖·‖y‖: positive curvature, by a scale-free margin.

    `norms` is `(‖s‖, ‖y‖)` when the caller has them already.

    The cosine of the angle between s and y must exceed eps of the dtype, whatever
    the scale of f (the former test s'y > eps·y'y was not invariant to f → c·f and
    overflowed for large gradients).
    """
    eps = jnp.finfo(s.dtype).eps
    snorm, ynorm = (safe_norm(s), safe_norm(y)) if norms is None else norms
    return jnp.vdot(s, y) > eps * snorm * ynorm


def two_loop(memory: PairMemory, g: Float[Array, " n"]) -> Float[Array, " n"]:
    """H g for the L-BFGS inverse-Hessian approximation (Nocedal & Wright, Alg. 7.4).

    H_0 = (s'y / y'y) I from the newest pair; invalid entries are skipped.
    """
    order = memory.order
    sy = memory.sy[order]
    ok = memory.valid & (sy != 0)
    rho = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0).astype(g.dtype)

    def backward(q, j):
        i = order[j]
        a = rho[j] * jnp.vdot(memory.S[i], q)
        return q - a * memory.Y[i], a

    steps = jnp.arange(memory.mem)
    q, alphas = jax.lax.scan(backward, g, steps, reverse=True)
    r = q / memory.newest_scaling()

    def forward(r, j):
        i = order[j]
        b = rho[j] * jnp.vdot(memory.Y[i], r)
        return r + (alphas[j] - b) * memory.S[i], None

    r, _ = jax.lax.scan(forward, r, steps)
    return r


# ----------------------------------------------------------------------------
# Direct (B, not H) approximations for trust-region solvers.


class QNMemory(eqx.Module):
    """Pairs plus the precomputed terms of B v = γ v + Σ_i c_i u_i (u_i' v)."""

    pairs: PairMemory
    gamma: Float[Array, ""]
    U: Float[Array, "m n"]
    c: Float[Array, " m"]
    U2: Float[Array, "m n"]
    c2: Float[Array, " m"]


class _DirectOperator(eqx.Module):
    """Shared shape of the BFGS and SR1 operators (static: only `mem`)."""

    mem: int = eqx.field(static=True)

    def init(self, n: int, dtype: Any) -> QNMemory:
        pairs = PairMemory.empty(self.mem, n, dtype)
        z = jnp.zeros((self.mem, n), dtype)
        zc = jnp.zeros((self.mem,), dtype)
        return QNMemory(pairs, jnp.ones((), dtype), z, zc, z, zc)

    def apply(self, memory: QNMemory, v: Float[Array, " n"]) -> Float[Array, " n"]:
        return self._partial_apply(memory.gamma, memory.U, memory.c, memory.U2, memory.c2, v)

    def push(self, memory: QNMemory, s: Float[Array, " n"], y: Float[Array, " n"]) -> QNMemory:
        raise NotImplementedError

    def _partial_apply(self, gamma, U, c, U2, c2, v):
        return gamma * v + U.T @ (c * (U @ v)) + U2.T @ (c2 * (U2 @ v))


class BFGSOperator(_DirectOperator):
    """Limited-memory BFGS approximation B (Nocedal & Wright, eq. 6.19, unrolled)."""

    def push(self, memory: QNMemory, s: Float[Array, " n"], y: Float[Array, " n"]) -> QNMemory:
        norms = (safe_norm(s), safe_norm(y))
        pairs = memory.pairs.push(s, y, curvature_ok(s, y, norms), norms[1])
        gamma = pairs.newest_scaling()
        m, n = pairs.S.shape
        valid = pairs.valid

        order = pairs.order

        def row(carry, i):
            A, ca, Bm, cb = carry
            s_i, y_i = pairs.S[order[i]], pairs.Y[order[i]]
            bs = self._partial_apply(gamma, A, ca, Bm, cb, s_i)
            sbs = jnp.vdot(s_i, bs)
            syi = pairs.sy[order[i]]  # cached by `push`
            ok = valid[i] & (sbs > 0) & (syi > 0)
            A = A.at[i].set(jnp.where(ok, y_i, 0.0))
            ca = ca.at[i].set(jnp.where(ok, 1.0 / jnp.where(ok, syi, 1.0), 0.0))
            Bm = Bm.at[i].set(jnp.where(ok, bs, 0.0))
            cb = cb.at[i].set(jnp.where(ok, -1.0 / jnp.where(ok, sbs, 1.0), 0.0))
            return (A, ca, Bm, cb), None

        z = jnp.zeros((m, n), s.dtype)
        zc = jnp.zeros((m,), s.dtype)
        (A, ca, Bm, cb), _ = jax.lax.scan(row, (z, zc, z, zc), jnp.arange(m))
        return QNMemory(pairs, gamma, A, ca, Bm, cb)


class SR1Operator(_DirectOperator):
    """Limited-memory symmetric-rank-one approximation B (skips unsafe updates)."""

    def push(self, memory: QNMemory, s: Float[Array, " n"], y: Float[Array, " n"]) -> QNMemory:
        keep = jnp.vdot(s, s) > 0
        pairs = memory.pairs.push(s, y, keep)
        gamma = pairs.newest_scaling()
        m, n = pairs.S.shape
        valid = pairs.valid
        r = jnp.sqrt(jnp.finfo(s.dtype).eps)

        order = pairs.order

        def row(carry, i):
            U, c = carry
            s_i, y_i = pairs.S[order[i]], pairs.Y[order[i]]
            u = y_i - (gamma * s_i + U.T @ (c * (U @ s_i)))
            d = jnp.vdot(u, s_i)
            ok = valid[i] & (jnp.abs(d) > r * safe_norm(s_i) * safe_norm(u))
            U = U.at[i].set(jnp.where(ok, u, 0.0))
            c = c.at[i].set(jnp.where(ok, 1.0 / jnp.where(ok, d, 1.0), 0.0))
            return (U, c), None

        z = jnp.zeros((m, n), s.dtype)
        zc = jnp.zeros((m,), s.dtype)
        (U, c), _ = jax.lax.scan(row, (z, zc), jnp.arange(m))
        return QNMemory(pairs, gamma, U, c, z, zc)


class _QuasiNewtonModel(AbstractNLPModel):
    """A problem whose `hprod` is a quasi-Newton approximation of the Hessian."""

    _operator_cls: type[_DirectOperator] = BFGSOperator

    def __init__(self, nlp: AbstractNLPModel, mem: int = 5):
        if isinstance(nlp, _QuasiNewtonModel):
            raise InvalidTypeError(
                "nlp: is already a quasi-Newton model; wrap the original problem"
            )
        if not isinstance(nlp, AbstractNLPModel):
            raise InvalidTypeError(
                f"nlp: expected a statefulnlp problem (e.g. StatefulNLPModel), got {type(nlp).__name__}"
            )
        self.model = nlp
        self.mem = _check_mem(mem)
        self._hessian = self._operator_cls(self.mem)
        self.memory = self._hessian.init(nlp.nvar, nlp.dtype)
        self.counters = nlp.counters
        self._jit_push = jax.jit(self._hessian.push)
        self._jit_apply = jax.jit(self._hessian.apply)

    # The problem protocol: everything but the Hessian forwards to the wrapped problem.
    @property
    def hessian(self) -> _DirectOperator:
        """The quasi-Newton operator whose products replace exact HVPs during a solve."""
        return self._hessian

    @property
    def objective(self):
        return self.model.objective

    @property
    def consts(self):
        return self.model.consts

    @property
    def batch(self):
        return self.model.batch

    @property
    def batch_version(self) -> int:
        return self.model.batch_version

    @property
    def mesh(self):
        return self.model.mesh

    @property
    def data_kind(self) -> str:
        return self.model.data_kind

    @property
    def exact_resume(self) -> bool:
        return self.model.exact_resume

    def data_position(self):
        return self.model.data_position()

    def restore_data_position(self, position) -> None:
        self.model.restore_data_position(position)

    @property
    def x0(self):
        return self.model.x0

    @property
    def state0(self):
        return self.model.state0

    def obj(self, x, state: PyTree = _MISSING):
        return self.model.obj(x, state)

    def grad(self, x, state: PyTree = _MISSING):
        return self.model.grad(x, state)

    def objgrad(self, x, state: PyTree = _MISSING):
        return self.model.objgrad(x, state)

    def hprod(self, x, v, state: PyTree = _MISSING):
        """`(B v, state)`: the quasi-Newton approximation's product (x is not used)."""
        del x
        v = _as_vector(v, "v")
        if v.shape != (self.nvar,):
            raise InvalidArgumentError(f"v: expected shape ({self.nvar},), got {tuple(v.shape)}")
        self.counters.hprod += 1
        return self._jit_apply(self.memory, v.astype(self.dtype)), (
            self.state0 if state is _MISSING else state
        )

    def push(self, s: Any, y: Any) -> None:
        """Add the pair (s, y) to the memory (pairs that fail the update test are skipped)."""
        s, y = _as_vector(s, "s"), _as_vector(y, "y")
        for name, vec in (("s", s), ("y", y)):
            if vec.shape != (self.nvar,):
                raise InvalidArgumentError(
                    f"{name}: expected shape ({self.nvar},), got {tuple(vec.shape)}"
                )
        self.memory = self._jit_push(self.memory, s.astype(self.dtype), y.astype(self.dtype))

    def reset(self) -> None:
        """Forget every pair."""
        self.memory = self._hessian.init(self.nvar, self.dtype)

    def next_batch(self) -> None:
        self.model.next_batch()

    def reset_counters(self) -> None:
        self.model.reset_counters()

    def __getattr__(self, name: str) -> Any:
        # to_model, accuracy, unflatten, ... of the wrapped problem.
        if name.startswith("_") or name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, mem={self.mem})"


class LBFGSModel(_QuasiNewtonModel):
    """The problem `nlp` with `hprod` replaced by a limited-memory BFGS approximation.

    `obj`, `grad`, `objgrad` and `next_batch` forward to `nlp`. During a solve the
    pair memory is solver state carried by the driver (and checkpointed with it),
    updated after each accepted step with a pair from one batch and one state;
    at the end of the solve it is stored back in `memory`. Only solvers that call
    `hprod` (`trunk`) can use it.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        nlp = snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x ** 2), s), jnp.ones(3))
        qn = snlp.LBFGSModel(nlp, mem=5)
        qn.push(jnp.ones(3), 2 * jnp.ones(3))
        hv, _ = qn.hprod(qn.x0, jnp.ones(3))   # = 2 * ones: B matches the pair
        ```
    """

    _operator_cls = BFGSOperator


class LSR1Model(_QuasiNewtonModel):
    """The problem `nlp` with `hprod` replaced by a limited-memory SR1 approximation.

    SR1 can model negative curvature, which a trust region exploits:
    `solve(snlp.LSR1Model(nlp), "trunk")` is a quasi-Newton trust-region method.
    See `LBFGSModel` for how the memory is carried.

    Example:
        ```python
        import jax.numpy as jnp
        import statefulnlp as snlp

        def rosenbrock(x, s, b):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), s

        nlp = snlp.StatefulNLPModel(rosenbrock, jnp.array([-1.2, 1.0]))
        stats = snlp.solve(snlp.LSR1Model(nlp, mem=5), "trunk", max_iter=500)
        assert stats.status == "first_order"
        ```
    """

    _operator_cls = SR1Operator
