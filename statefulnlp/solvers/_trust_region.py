"""The trust-region radius update (JSOSolvers' rules), a reusable component."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from .._errors import InvalidArgumentError

__all__ = ["TrustRegionRadius"]


class TrustRegionRadius(eqx.Module):
    """Acceptance test and radius update of a trust-region method (JSOSolvers' rules).

    With ρ the ratio of the actual to the predicted decrease of a step s:

    * the step is accepted when ρ ≥ η1;
    * ρ < η1: the radius shrinks to `decrease`·‖s‖;
    * ρ ≥ η2: it grows to max(Δ, `increase`·‖s‖), at most 1/sqrt(eps);
    * otherwise it stays.

    The starting radius is `initial_radius` (1, as scipy's trust-region methods):
    a length in units of x, like every quantity here, so the rules do not depend
    on the scale of f (ρ is scale-free). JSOSolvers starts from
    min(max(‖g0‖/10, 1), 100), which changes with the scale of f. Used by
    `Trunk` (and meant for any trust-region solver).

    Attributes:
        eta1: acceptance threshold (0 < η1 < η2 < 1).
        eta2: very-successful threshold.
        decrease: shrink factor (0 < decrease < 1).
        increase: growth factor (> 1).
        initial_radius: the first radius (> 0).

    Example:
        ```python
        import jax.numpy as jnp
        from statefulnlp.solvers import TrustRegionRadius

        rule = TrustRegionRadius(initial_radius=5.0)
        radius = rule.initial(jnp.float32)                  # 5.0, in float32
        assert float(rule.update(radius, 0.99, 5.0)) == 7.5  # very successful, on the boundary
        assert float(rule.update(radius, -1.0, 3.0)) == 1.0  # failed: 1/3 of the step
        assert bool(rule.successful(0.5))
        ```
    """

    eta1: float = 1e-4
    eta2: float = 0.95
    decrease: float = 1.0 / 3.0
    increase: float = 1.5
    initial_radius: float = 1.0

    def __check_init__(self):
        if not 0.0 < self.eta1 < self.eta2 < 1.0:
            raise InvalidArgumentError(
                f"eta1, eta2: expected 0 < eta1 < eta2 < 1, got {self.eta1}, {self.eta2}"
            )
        if not 0.0 < self.decrease < 1.0 < self.increase:
            raise InvalidArgumentError(
                f"decrease, increase: expected 0 < decrease < 1 < increase, got "
                f"{self.decrease}, {self.increase}"
            )
        if not self.initial_radius > 0.0:
            raise InvalidArgumentError(
                f"initial_radius: expected a positive length, got {self.initial_radius!r}"
            )

    def initial(self, dtype: Any) -> Float[Array, ""]:
        """The first radius, in `dtype`."""
        return jnp.asarray(self.initial_radius, dtype)

    def successful(self, ratio: Float[ArrayLike, ""]) -> Bool[Array, ""]:
        """Whether a step with this ratio is accepted (ρ ≥ η1)."""
        return jnp.asarray(ratio) >= self.eta1

    def update(
        self,
        radius: Float[ArrayLike, ""],
        ratio: Float[ArrayLike, ""],
        step_norm: Float[ArrayLike, ""],
    ) -> Float[Array, ""]:
        """The next radius after a step of length `step_norm` with ratio `ratio`."""
        radius = jnp.asarray(radius)
        dtype = radius.dtype
        ratio = jnp.asarray(ratio, dtype)
        step_norm = jnp.asarray(step_norm, dtype)
        max_radius = 1.0 / jnp.sqrt(jnp.finfo(dtype).eps)
        grown = jnp.minimum(max_radius, jnp.maximum(radius, self.increase * step_norm))
        new = jnp.where(
            ratio < self.eta1,
            self.decrease * step_norm,
            jnp.where(ratio >= self.eta2, grown, radius),
        )
        return new.astype(dtype)
