"""Data parallelism on a 4-device CPU mesh, in a separate process."""

from __future__ import annotations

import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

import statefulnlp as snlp


def test_mesh_parity_and_training_in_a_four_device_process():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    script = os.path.join(os.path.dirname(__file__), "mesh_check.py")
    done = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mesh checks passed" in done.stdout


def test_mesh_argument_is_checked():
    import jax

    with pytest.raises(snlp.InvalidTypeError, match="mesh"):
        snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x), s), jnp.ones(2), mesh="gpu")
    mesh = jax.make_mesh((1,), ("batch",))
    with pytest.raises(snlp.InvalidArgumentError, match="'data'"):
        snlp.StatefulNLPModel(lambda x, s, b: (jnp.sum(x), s), jnp.ones(2), mesh=mesh)
