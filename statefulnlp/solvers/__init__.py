"""The solvers, their reusable parts, and the shared driver (`solve`)."""

from ._base import AbstractSolver, Step
from ._driver import solve
from ._lbfgs import LBFGS
from ._linesearch import AbstractLineSearch, BacktrackingArmijo, LineSearchResult, StrongWolfe
from ._optax import GradientDescent, Optax
from ._r2 import R2
from ._steihaug_cg import CGResult, CGStatus, SteihaugCG
from ._trunk import Trunk
from ._trust_region import TrustRegionRadius

__all__ = [
    "LBFGS",
    "R2",
    "AbstractLineSearch",
    "AbstractSolver",
    "BacktrackingArmijo",
    "CGResult",
    "CGStatus",
    "GradientDescent",
    "LineSearchResult",
    "Optax",
    "SteihaugCG",
    "Step",
    "StrongWolfe",
    "Trunk",
    "TrustRegionRadius",
    "solve",
]
