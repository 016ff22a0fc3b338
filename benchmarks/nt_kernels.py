"""neural-tangents side of bench_kernels.py, run by the neural-tangents interpreter (not imported by sphericalcow).

Usage: python nt_kernels.py N D DEPTH WIDTH REPEATS OUT.npy|-   -> prints JSON {"cold_compute", "warm"} seconds.
Same network as sphericalcow's MLP(d_in=D, width=WIDTH, depth=DEPTH, activation="relu", cw=2, cb=0), NTK
parametrization, float64; kernel_fn is jitted for the warm timings (the fastest way to use it).
"""

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402


def main() -> None:
    n, d, depth, width, repeats, out = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        int(sys.argv[5]),
        sys.argv[6],
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, d)))
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=2.0**0.5, b_std=0.0, parameterization="ntk"), stax.Relu()]
    layers += [stax.Dense(1, W_std=2.0**0.5, b_std=0.0, parameterization="ntk")]
    _, _, kernel_fn = stax.serial(*layers)
    t0 = time.perf_counter()
    k = kernel_fn(x, None, ("nngp", "ntk"))
    k.nngp.block_until_ready()
    cold = time.perf_counter() - t0
    fast = jax.jit(kernel_fn, static_argnames="get")
    fast(x, None, ("nngp", "ntk")).ntk.block_until_ready()
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = fast(x, None, ("nngp", "ntk"))
        k.ntk.block_until_ready()
        warm.append(time.perf_counter() - t0)
    if out != "-":
        np.save(out, np.stack([np.asarray(k.nngp), np.asarray(k.ntk)]))
    print(json.dumps({"cold_compute": cold, "warm": min(warm)}))


if __name__ == "__main__":
    main()
