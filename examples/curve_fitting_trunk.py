"""Float64 curve fitting with trunk (trust-region Newton-CG) and exact Hessian-vector products.

Fits y(t) = a + b·exp(-d·t) + c·exp(-e·t) to the 33 measurements of Osborne's
problem (Moré, Garbow & Hillstrom 1981, problem 17), whose known least-squares
minimum is 5.46489e-5. Each CG iteration is one exact HVP (forward-over-reverse).

    python examples/curve_fitting_trunk.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import parser

import statefulnlp as snlp

Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751, 0.718,
     0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490, 0.478, 0.467,
     0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)  # fmt: skip
F_STAR = 5.46489469748e-5


def residual_sum(params, state, data):
    t, y = data
    a, b, c, d, e = params
    model = a + b * jnp.exp(-d * t) + c * jnp.exp(-e * t)
    return jnp.sum((y - model) ** 2), state


def main(argv=None) -> dict[str, float]:
    args = parser(__doc__.splitlines()[0], iters=500).parse_args(argv)
    with jax.enable_x64(True):
        t = 10.0 * np.arange(33, dtype=np.float64)
        x0 = np.array([0.5, 1.5, -1.0, 0.01, 0.02])
        nlp = snlp.StatefulNLPModel(residual_sum, x0, data=(t, Y))
        stats = snlp.solve(
            nlp, "trunk", atol=1e-10, rtol=0.0, max_iter=args.iters, verbose=0 if args.quick else 10
        )
        print(
            f"status {stats.status.value}: f = {stats.objective:.10e} (known minimum {F_STAR:.10e})"
        )
        print(f"parameters {np.array2string(np.asarray(stats.solution), precision=6)}")
        print(
            f"{stats.iter} iterations, {stats.counters['obj']} objective, {stats.counters['grad']} "
            f"gradient and {stats.counters['hprod']} Hessian-vector evaluations"
        )
        return {"objective": stats.objective, "gap": stats.objective - F_STAR}


if __name__ == "__main__":
    main()
