"""Theory speed: vectorised fixed points (phase-diagram grids) vs a per-point loop; closed forms vs quadrature."""

from __future__ import annotations

import time

import numpy as np

from sphericalcow.theory.criticality import fixed_point
from sphericalcow.theory.gaussian import expect_cross


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run() -> list[dict]:
    rows = []
    cw = np.linspace(0.2, 3.0, 20)
    cb = np.linspace(0.0, 0.3, 10)
    CB, CW = np.meshgrid(cb, cw, indexing="ij")
    vec = _best(lambda: fixed_point("tanh", CW, CB, CB + CW), repeat=1)
    sub = [(w, b) for w, b in zip(CW.ravel()[::10], CB.ravel()[::10], strict=True)]
    loop = _best(lambda: [fixed_point("tanh", w, b, b + w) for w, b in sub], repeat=1) * 10
    rows.append(
        {
            "name": "fixed_point tanh, 200-point grid, vectorised",
            "seconds": vec,
            "baseline": "per-point loop (20 points timed, x10)",
            "baseline_seconds": loop,
        }
    )
    K = np.full(10000, 1.3)
    rho = np.linspace(-0.99, 0.99, 10000)
    closed = _best(lambda: expect_cross("relu", K, K, rho * K, method="closed"))
    quad = _best(lambda: expect_cross("relu", K, K, rho * K, method="quadrature"))
    rows.append(
        {
            "name": "relu <s(z1)s(z2)>, 10^4 pairs, closed form",
            "seconds": closed,
            "baseline": "same by split 2-D quadrature",
            "baseline_seconds": quad,
        }
    )
    return rows
