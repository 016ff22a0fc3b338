"""Measurement speed: probe_forward over seeds vs the bare forward passes it wraps (its overhead)."""

from __future__ import annotations

import time

import torch

import sphericalcow as sc


def run() -> list[dict]:
    arch = sc.MLP(64, 256, 20, activation="tanh", cw=1.0)
    x = torch.randn(2, 64, dtype=torch.float64)
    seeds = list(range(32))
    t0 = time.perf_counter()
    sc.probe_forward(lambda s: arch.build(seed=s, dtype=torch.float64), x, arch.layer_names()[:-1], seeds)
    probe = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in seeds:
            arch.build(seed=s, dtype=torch.float64)(x)
    bare = time.perf_counter() - t0
    return [
        {
            "name": "probe_forward 32 seeds, width 256, depth 20 (stats+CIs)",
            "seconds": probe,
            "baseline": "build + forward of the same 32 nets",
            "baseline_seconds": bare,
        }
    ]
