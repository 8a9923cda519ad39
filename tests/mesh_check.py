"""Run in a separate process with 4 host devices (see test_mesh.py).

Checks data-parallel parity with the single-device model and a short L-BFGS
training under freeze on the mesh. Exits non-zero on failure.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from conftest import make_mlp, mlp_loss

import statefulnlp as snlp


def close(a, b, rtol=2e-5, atol=1e-6):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        if jnp.issubdtype(u.dtype, jax.dtypes.prng_key):
            u, v = jax.random.key_data(u), jax.random.key_data(v)
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def main() -> None:
    assert len(jax.devices()) == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("data",))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=256)

    def problem(mesh):
        model, state = make_mlp()
        return snlp.EquinoxNLPModel(
            model, state, mlp_loss, snlp.DataLoader((X, y), 64, seed=0), mesh=mesh
        )

    single, sharded = problem(None), problem(mesh)
    assert sharded.batch[0].sharding.spec == jax.sharding.PartitionSpec("data")
    x = single.x0
    v = jnp.asarray(rng.normal(size=single.nvar), jnp.float32)
    f1, g1, s1 = single.objgrad(x, single.state0)
    f4, g4, s4 = sharded.objgrad(x, sharded.state0)
    close(f1, f4)
    close(g1, g4, rtol=1e-4, atol=1e-6)
    close(s1, s4)  # BatchNorm statistics over the whole batch, and the dropout key
    h1, _ = single.hprod(x, v, single.state0)
    h4, _ = sharded.hprod(x, v, sharded.state0)
    close(h1, h4, rtol=1e-4, atol=1e-5)

    # A short L-BFGS training under freeze, new minibatch every iteration.
    def advance(nlp, solver, stats):
        nlp.next_batch()

    r1 = snlp.solve(single, "lbfgs", callback=advance, max_iter=5)
    r4 = snlp.solve(sharded, "lbfgs", callback=advance, max_iter=5)
    close(r1.solution, r4.solution, rtol=1e-3, atol=1e-4)
    assert abs(r1.objective - r4.objective) <= 1e-3 * max(1.0, abs(r1.objective))
    # The fully-jitted path (no callback) stays on the mesh.
    r = snlp.solve(problem(mesh), "lbfgs", max_iter=30)
    assert r.solution.sharding.is_fully_replicated and len(r.solution.sharding.device_set) == 4
    assert r.status in ("first_order", "max_iter")

    # A Flax NNX model with BatchNorm shares the mesh support.
    try:
        from flax import nnx
    except ImportError:
        nnx = None
    if nnx is not None:

        class Net(nnx.Module):
            def __init__(self, rngs):
                self.l1 = nnx.Linear(64, 16, rngs=rngs)
                self.bn = nnx.BatchNorm(16, rngs=rngs)
                self.l2 = nnx.Linear(16, 10, rngs=rngs)

            def __call__(self, x):
                return self.l2(jax.nn.relu(self.bn(self.l1(x))))

        def ce(model, batch):
            X, y = batch
            return -jnp.mean(jax.nn.log_softmax(model(X))[jnp.arange(y.shape[0]), y])

        flax_single = snlp.FlaxNLPModel(Net(nnx.Rngs(0)), ce, (X[:64], y[:64]))
        flax_mesh = snlp.FlaxNLPModel(Net(nnx.Rngs(0)), ce, (X[:64], y[:64]), mesh=mesh)
        a = flax_single.objgrad(flax_single.x0)
        b = flax_mesh.objgrad(flax_mesh.x0)
        close(a[0], b[0])
        close(a[1], b[1], rtol=1e-4, atol=1e-6)
        close(a[2], b[2])  # BatchNorm statistics over the whole batch
        r = snlp.solve(flax_mesh, "lbfgs", max_iter=10)
        assert np.isfinite(r.objective) and r.objective < float(b[0])

    # Batches that do not divide over the mesh are refused with a clear error.
    try:
        snlp.StatefulNLPModel(
            lambda x, s, b: (jnp.sum(x * b.mean()), s),
            jnp.ones(2),
            data=jnp.ones((6, 2)),
            mesh=mesh,
        )
    except snlp.InvalidArgumentError as err:
        assert "multiple of 4" in str(err)
    else:
        raise AssertionError("a 6-sample batch on 4 devices must be refused")
    print("mesh checks passed")


if __name__ == "__main__":
    main()
