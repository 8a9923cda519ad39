"""Weak scaling of data-parallel evaluation: samples/s per device as devices grow.

The digits CNN's loss+gradient (nlp.objgrad) on a mesh with a "data" axis over
d devices, with a batch of 128·d samples (the work per device is constant).
On a machine with several accelerators it uses d = 1, 2, 4, ... of them; on a
CPU-only machine it forces d host devices in a subprocess each
(`--xla_force_host_platform_device_count`), where the devices share the CPU's
cores, so the figures there only show that the path works, not speed-up.

    python benchmarks/bench_scaling.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PER_DEVICE = 128


def measure(devices: int, repeat: int = 30) -> dict:
    import equinox as eqx
    import jax
    import numpy as np
    from _bench import timeit

    sys.path.insert(
        0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")
    )
    from digits_cnn import LeNet, loss

    import statefulnlp as snlp

    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])
    batch_size = PER_DEVICE * devices
    rng = np.random.default_rng(0)
    X = rng.random((batch_size, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    model, bn_state = eqx.nn.make_with_state(LeNet)(jax.random.key(0))
    nlp = snlp.EquinoxNLPModel(model, (bn_state, jax.random.key(1)), loss, (X, y), mesh=mesh)
    x, state = nlp.x0, nlp.state0
    nlp.objgrad(x, state)
    seconds = timeit(lambda: nlp.objgrad(x, state), repeat=repeat)
    return {
        "devices": devices,
        "batch": batch_size,
        "ms/objgrad": 1e3 * seconds,
        "samples/s": batch_size / seconds,
        "samples/s per device": batch_size / seconds / devices,
        "platform": jax.default_backend(),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    import jax
    from _bench import save, table

    real = len(jax.devices())
    rows = []
    if jax.default_backend() != "cpu" and real > 1:
        d = 1
        while d <= real:
            rows.append(measure(d))
            d *= 2
    else:
        for d in (1, 2, 4):
            env = dict(
                os.environ,
                XLA_FLAGS=f"--xla_force_host_platform_device_count={d}",
                JAX_PLATFORMS="cpu",
            )
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", str(d)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=os.path.dirname(os.path.abspath(__file__)),
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["samples/s per device"]
    for r in rows:
        r["efficiency"] = r["samples/s per device"] / base
    table(
        rows,
        [
            "devices",
            "batch",
            "ms/objgrad",
            "samples/s",
            "samples/s per device",
            "efficiency",
            "platform",
        ],
    )
    save("scaling", {"per_device_batch": PER_DEVICE, "rows": rows})


if __name__ == "__main__":
    main()
