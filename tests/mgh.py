"""Classic unconstrained test problems (Moré, Garbow & Hillstrom 1981, and companions).

Each problem is a sum of squared residuals f(x) = Σ r_i(x)², with the standard
starting point and the known minimum value f* from the literature. Used by
the solver validation tests and by the benchmarks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Problem:
    """A sum-of-squares test problem.

    `fstar` is the global minimum value; `local_minima` are the values of the
    other minimizers that Moré, Garbow & Hillstrom list for the problem (some
    standard starting points lead there: every solver of the suite and scipy's
    end at Freudenstein–Roth's 48.98, Biggs EXP6's 5.66e-3, and the n=10
    trigonometric function's 2.80e-5).
    """

    name: str
    residuals: Callable[[jnp.ndarray], jnp.ndarray]
    x0: tuple[float, ...]
    fstar: float
    local_minima: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return len(self.x0)

    def f(self, x):
        r = self.residuals(x)
        return jnp.sum(r * r)

    def solved(self, value: float) -> bool:
        """f − f* ≤ 1e-6·max(1, |f*|) for f* the minimum or one of the listed local minima."""
        if value - self.fstar <= 1e-6 * max(1.0, abs(self.fstar)):
            return True
        return any(abs(value - m) <= 1e-6 * max(1.0, abs(m)) for m in self.local_minima)


def rosenbrock(x):
    return jnp.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def freudenstein_roth(x):
    return jnp.array(
        [
            -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
            -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
        ]
    )


def powell_badly_scaled(x):
    return jnp.array([1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])


def brown_badly_scaled(x):
    return jnp.array([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])


def beale(x):
    y = jnp.array([1.5, 2.25, 2.625])
    i = jnp.arange(1, 4)
    return y - x[0] * (1.0 - x[1] ** i)


def jennrich_sampson(x):
    i = jnp.arange(1, 11, dtype=x.dtype)
    return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))


def helical_valley(x):
    base = jnp.arctan(x[1] / x[0]) / (2.0 * jnp.pi)
    theta = jnp.where(x[0] > 0, base, base + 0.5)
    return jnp.array(
        [10.0 * (x[2] - 10.0 * theta), 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0), x[2]]
    )


_BARD_Y = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)


def bard(x):
    u = jnp.arange(1, 16, dtype=x.dtype)
    v = 16.0 - u
    w = jnp.minimum(u, v)
    return jnp.asarray(_BARD_Y, x.dtype) - (x[0] + u / (v * x[1] + w * x[2]))


_GAUSS_Y = np.array(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989]
    + [0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)


_MEYER_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0]
    + [8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)


def meyer(x):
    t = 45.0 + 5.0 * jnp.arange(1, 17, dtype=x.dtype)
    return x[0] * jnp.exp(x[1] / (t + x[2])) - jnp.asarray(_MEYER_Y, x.dtype)


def gaussian(x):
    t = (8.0 - jnp.arange(1, 16, dtype=x.dtype)) / 2.0
    return x[0] * jnp.exp(-x[1] * (t - x[2]) ** 2 / 2.0) - jnp.asarray(_GAUSS_Y, x.dtype)


def box_3d(x):
    t = 0.1 * jnp.arange(1, 11, dtype=x.dtype)
    return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * (jnp.exp(-t) - jnp.exp(-10.0 * t))


def powell_singular(x):
    return jnp.array(
        [
            x[0] + 10.0 * x[1],
            jnp.sqrt(5.0) * (x[2] - x[3]),
            (x[1] - 2.0 * x[2]) ** 2,
            jnp.sqrt(10.0) * (x[0] - x[3]) ** 2,
        ]
    )


def wood(x):
    return jnp.array(
        [
            10.0 * (x[1] - x[0] ** 2),
            1.0 - x[0],
            jnp.sqrt(90.0) * (x[3] - x[2] ** 2),
            1.0 - x[2],
            jnp.sqrt(10.0) * (x[1] + x[3] - 2.0),
            (x[1] - x[3]) / jnp.sqrt(10.0),
        ]
    )


_KO_Y = np.array(
    [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
_KO_U = np.array([4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625])


def kowalik_osborne(x):
    u = jnp.asarray(_KO_U, x.dtype)
    return jnp.asarray(_KO_Y, x.dtype) - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])


def brown_dennis(x):
    t = jnp.arange(1, 21, dtype=x.dtype) / 5.0
    return (x[0] + t * x[1] - jnp.exp(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2


_OSB1_Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751]
    + [0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490]
    + [0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)


def osborne1(x):
    t = 10.0 * jnp.arange(33, dtype=x.dtype)
    model = x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4])
    return jnp.asarray(_OSB1_Y, x.dtype) - model


def biggs_exp6(x):
    t = 0.1 * jnp.arange(1, 14, dtype=x.dtype)
    y = jnp.exp(-t) - 5.0 * jnp.exp(-10.0 * t) + 3.0 * jnp.exp(-4.0 * t)
    return x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - y


_OSB2_Y = np.array(
    [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746]
    + [0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649]
    + [0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395]
    + [0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653]
    + [0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739]
    + [0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]
)


def osborne2(x):
    t = jnp.arange(65, dtype=x.dtype) / 10.0
    model = (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )
    return jnp.asarray(_OSB2_Y, x.dtype) - model


def watson(x):
    n = x.shape[0]
    t = jnp.arange(1, 30, dtype=x.dtype) / 29.0
    j = jnp.arange(n, dtype=x.dtype)
    powers = t[:, None] ** j[None, :]  # t^(j)
    s1 = jnp.sum(j[1:][None, :] * x[1:][None, :] * t[:, None] ** (j[1:] - 1.0)[None, :], axis=1)
    s2 = powers @ x
    r = s1 - s2**2 - 1.0
    return jnp.concatenate([r, jnp.array([x[0], x[1] - x[0] ** 2 - 1.0])])


def extended_rosenbrock(x):
    return jnp.concatenate([10.0 * (x[1::2] - x[0::2] ** 2), 1.0 - x[0::2]])


def extended_powell(x):
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    return jnp.concatenate(
        [a + 10.0 * b, jnp.sqrt(5.0) * (c - d), (b - 2.0 * c) ** 2, jnp.sqrt(10.0) * (a - d) ** 2]
    )


def penalty1(x):
    return jnp.concatenate([jnp.sqrt(1e-5) * (x - 1.0), jnp.array([jnp.sum(x**2) - 0.25])])


def penalty2(x):
    n = x.shape[0]
    a = jnp.sqrt(1e-5)
    i = jnp.arange(2, n + 1, dtype=x.dtype)
    y = jnp.exp(i / 10.0) + jnp.exp((i - 1.0) / 10.0)
    r1 = x[0] - 0.2
    r2 = a * (jnp.exp(x[1:] / 10.0) + jnp.exp(x[:-1] / 10.0) - y)
    r3 = a * (jnp.exp(x[1:] / 10.0) - jnp.exp(-1.0 / 10.0))
    r4 = jnp.sum((n - jnp.arange(n, dtype=x.dtype)) * x**2) - 1.0
    return jnp.concatenate([jnp.array([r1]), r2, r3, jnp.array([r4])])


def variably_dimensioned(x):
    n = x.shape[0]
    j = jnp.arange(1, n + 1, dtype=x.dtype)
    s = jnp.sum(j * (x - 1.0))
    return jnp.concatenate([x - 1.0, jnp.array([s, s**2])])


def trigonometric(x):
    n = x.shape[0]
    i = jnp.arange(1, n + 1, dtype=x.dtype)
    return n - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x)


def discrete_boundary(x):
    n = x.shape[0]
    h = 1.0 / (n + 1)
    t = h * jnp.arange(1, n + 1, dtype=x.dtype)
    xp = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
    return 2.0 * x - xp[:-2] - xp[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0


def broyden_tridiagonal(x):
    xp = jnp.concatenate([jnp.zeros(1, x.dtype), x, jnp.zeros(1, x.dtype)])
    return (3.0 - 2.0 * x) * x - xp[:-2] - 2.0 * xp[2:] + 1.0


def broyden_banded(x):
    n = x.shape[0]
    idx = jnp.arange(n)
    i, j = idx[:, None], idx[None, :]
    mask = (j >= i - 5) & (j <= i + 1) & (j != i)
    s = jnp.sum(jnp.where(mask, x[None, :] * (1.0 + x[None, :]), 0.0), axis=1)
    return x * (2.0 + 5.0 * x**2) + 1.0 - s


def linear_full_rank(x):
    n, m = x.shape[0], 20
    s = jnp.sum(x)
    return jnp.concatenate([x - 2.0 * s / m - 1.0, jnp.full((m - n,), -2.0 * s / m - 1.0)])


def chebyquad(x):
    n = x.shape[0]
    y = 2.0 * x - 1.0

    def cheb_means(k):
        return jnp.mean(jnp.cos(k * jnp.arccos(jnp.clip(y, -1.0, 1.0))))

    rs = []
    for i in range(1, n + 1):
        exact = -1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0
        rs.append(cheb_means(float(i)) - exact)
    return jnp.stack(rs)


PROBLEMS: tuple[Problem, ...] = (
    Problem("Rosenbrock", rosenbrock, (-1.2, 1.0), 0.0),
    Problem("Freudenstein-Roth", freudenstein_roth, (0.5, -2.0), 0.0, (48.9842536792400,)),
    Problem("Powell badly scaled", powell_badly_scaled, (0.0, 1.0), 0.0),
    Problem("Brown badly scaled", brown_badly_scaled, (1.0, 1.0), 0.0),
    Problem("Beale", beale, (1.0, 1.0), 0.0),
    Problem("Jennrich-Sampson", jennrich_sampson, (0.3, 0.4), 124.362182355),
    Problem("Helical valley", helical_valley, (-1.0, 0.0, 0.0), 0.0),
    Problem("Bard", bard, (1.0, 1.0, 1.0), 8.21487730657e-3),
    Problem("Gaussian", gaussian, (0.4, 1.0, 0.0), 1.12793276961e-8),
    Problem("Meyer", meyer, (0.02, 4000.0, 250.0), 87.9458551703603),
    Problem("Box 3-D", box_3d, (0.0, 10.0, 20.0), 0.0),
    Problem("Powell singular", powell_singular, (3.0, -1.0, 0.0, 1.0), 0.0),
    Problem("Wood", wood, (-3.0, -1.0, -3.0, -1.0), 0.0),
    Problem("Kowalik-Osborne", kowalik_osborne, (0.25, 0.39, 0.415, 0.39), 3.07505603849e-4),
    Problem("Brown-Dennis", brown_dennis, (25.0, 5.0, -5.0, -1.0), 85822.2016263563),
    Problem("Osborne 1", osborne1, (0.5, 1.5, -1.0, 0.01, 0.02), 5.46489469748e-5),
    Problem("Biggs EXP6", biggs_exp6, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0), 0.0, (5.65564992549990e-3,)),
    Problem(
        "Osborne 2",
        osborne2,
        (1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5),
        4.01377362935e-2,
    ),
    Problem("Watson (n=6)", watson, (0.0,) * 6, 2.28767005355e-3),
    Problem("Extended Rosenbrock (n=10)", extended_rosenbrock, (-1.2, 1.0) * 5, 0.0),
    Problem("Extended Powell (n=8)", extended_powell, (3.0, -1.0, 0.0, 1.0) * 2, 0.0),
    Problem("Penalty I (n=4)", penalty1, (1.0, 2.0, 3.0, 4.0), 2.24997899e-5),
    Problem("Penalty II (n=4)", penalty2, (0.5,) * 4, 9.37629300e-6),
    Problem(
        "Variably dimensioned (n=10)",
        variably_dimensioned,
        tuple(1.0 - (j + 1) / 10.0 for j in range(10)),
        0.0,
    ),
    Problem("Trigonometric (n=10)", trigonometric, (0.1,) * 10, 0.0, (2.79505612187772e-5,)),
    Problem(
        "Discrete boundary value (n=10)",
        discrete_boundary,
        tuple((j + 1) / 11.0 * ((j + 1) / 11.0 - 1.0) for j in range(10)),
        0.0,
    ),
    Problem("Broyden tridiagonal (n=10)", broyden_tridiagonal, (-1.0,) * 10, 0.0),
    Problem("Broyden banded (n=10)", broyden_banded, (-1.0,) * 10, 0.0),
    Problem("Linear full rank (n=10)", linear_full_rank, (1.0,) * 10, 10.0),
    Problem("Chebyquad (n=8)", chebyquad, tuple((j + 1) / 9.0 for j in range(8)), 3.51687372568e-3),
)
