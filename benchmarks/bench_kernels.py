"""Analytic NNGP+NTK speed: sphericalcow.kernels vs neural-tangents (when its interpreter is present), same run.

Network: depth-10 ReLU MLP, d = 100 inputs, C_W = 2, C_b = 0, NTK parametrization, float64, 2 threads, x2 = None.
*warm*: best of a few calls in a process that has already computed once (neural-tangents: ``jax.jit(kernel_fn)``
after compilation, its fastest use). *cold*: a whole new process (imports, first call) measured from outside.
neural-tangents runs on jax 0.4.23 in its own virtualenv (``../shared/tools/setup-peers.sh`` builds
/tmp/ntenv); set NT_PYTHON to another interpreter, or the rows say it is absent. Without it the baseline is our own
per-entry NumPy closed form (the formula without blocking, symmetry or torch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import sphericalcow as sc

HERE = Path(__file__).parent
NT_PYTHON = os.environ.get("NT_PYTHON", "/tmp/ntenv/bin/python")
SIZES = (1000, 4000)
DEPTH, D, WIDTH = 10, 100, 512
OURS_COLD = f"""
import sys, time, numpy as np, torch
torch.set_num_threads(2)
import sphericalcow as sc
n = int(sys.argv[1])
x = np.random.default_rng(0).standard_normal((n, {D}))
k = sc.kernels(sc.MLP(d_in={D}, width={WIDTH}, depth={DEPTH}, activation="relu", cw=2.0, cb=0.0), x, progress=False)
np.save(sys.argv[2], np.stack([k.nngp.numpy(), k.ntk.numpy()]))
"""


def _nt_available() -> bool:
    if not Path(NT_PYTHON).exists():
        return False
    r = subprocess.run([NT_PYTHON, "-c", "import neural_tangents"], capture_output=True)
    return r.returncode == 0


def _ours_warm(n: int, repeats: int) -> tuple[float, torch.Tensor]:
    x = np.random.default_rng(0).standard_normal((n, D))
    arch = sc.MLP(d_in=D, width=WIDTH, depth=DEPTH, activation="relu", cw=2.0, cb=0.0)
    sc.kernels(arch, x[:64], progress=False)
    best, k = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        k = sc.kernels(arch, x, progress=False)
        best = min(best, time.perf_counter() - t0)
    return best, k


def _cold(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return time.perf_counter() - t0


def run() -> list[dict]:
    torch.set_num_threads(2)
    rows = []
    nt = _nt_available()
    if not nt:
        print(f"# neural-tangents not found at {NT_PYTHON} (run ../shared/tools/setup-peers.sh); NumPy baseline only")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ours.py"
        script.write_text(OURS_COLD)
        for n in SIZES:
            ours, k = _ours_warm(n, 3 if n <= 1000 else 2)
            ours_cold = _cold([sys.executable, str(script), str(n), str(Path(tmp) / "ours.npy")])
            if nt:
                out = Path(tmp) / "nt.npy"
                t0 = time.perf_counter()
                r = subprocess.run(
                    [NT_PYTHON, str(HERE / "nt_kernels.py"), str(n), str(D), str(DEPTH), str(WIDTH), "2", str(out)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                nt_cold = time.perf_counter() - t0
                nt_times = json.loads(r.stdout.strip().splitlines()[-1])
                ref = np.load(out)
                off = ~np.eye(n, dtype=bool)
                err = max(
                    float(np.abs(k.nngp.numpy() - ref[0]).max() / np.abs(ref[0]).max()),
                    float(np.abs(k.ntk.numpy() - ref[1])[off].max() / np.abs(ref[1]).max()),
                )
                print(f"# N={n}: max relative difference to neural-tangents (NTK off-diagonal, NNGP all) {err:.1e}")
                rows.append(
                    {
                        "name": f"kernels nngp+ntk N={n} warm",
                        "seconds": ours,
                        "baseline": "neural-tangents jit warm",
                        "baseline_seconds": nt_times["warm"],
                    }
                )
                rows.append(
                    {
                        "name": f"kernels nngp+ntk N={n} cold process",
                        "seconds": ours_cold,
                        "baseline": "neural-tangents cold process",
                        "baseline_seconds": nt_cold,
                    }
                )
            else:
                rows.append(
                    {
                        "name": f"kernels nngp+ntk N={n} cold process",
                        "seconds": ours_cold,
                        "baseline": "(neural-tangents absent) own warm",
                        "baseline_seconds": ours,
                    }
                )
    # our own route without blocking/symmetry/torch: the NumPy closed forms of activations.py per layer
    from sphericalcow.theory.recursions import kernel_profile

    x = np.random.default_rng(0).standard_normal((1000, D))
    arch = sc.MLP(d_in=D, width=WIDTH, depth=DEPTH, activation="relu", cw=2.0, cb=0.0)
    t0 = time.perf_counter()
    kernel_profile(arch, x)
    base = time.perf_counter() - t0
    ours, _ = _ours_warm(1000, 3)
    rows.append(
        {
            "name": "kernels nngp+ntk N=1000 warm",
            "seconds": ours,
            "baseline": "numpy nngp-only recursion",
            "baseline_seconds": base,
        }
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
