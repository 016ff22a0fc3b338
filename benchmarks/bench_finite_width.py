"""Finite-width ensembles: batched random networks vs building and hooking each network (the naive route).

Both compute the per-layer pooled kurtosis of the same number of networks (the NTK part of ensemble_statistics is
switched off so the work compared is the same), and the finite-width theory (quadrature per layer) vs a single
Monte Carlo network is shown for scale.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import sphericalcow as sc
from sphericalcow.measure.finite_width import ensemble_statistics


def _naive(arch, n_nets: int) -> np.ndarray:
    x = torch.ones(1, arch.d_in, dtype=torch.float64)
    names = arch.layer_names()
    per_layer = {name: [] for name in names}
    for s in range(n_nets):
        net = arch.build(seed=s, dtype=torch.float64)
        outs = {}
        hooks = [
            m.register_forward_hook(lambda m, i, o, name=name, outs=outs: outs.__setitem__(name, o[0].detach()))
            for name, m in net.named_modules()
            if name in per_layer
        ]
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        for name in names:
            per_layer[name].append(outs[name].numpy())
    kurt = []
    for name in names:
        z = np.asarray(per_layer[name])
        kurt.append((z**4).mean() / (z**2).mean() ** 2 - 3)
    return np.array(kurt)


def run() -> list[dict]:
    torch.set_num_threads(1)
    arch = sc.MLP(4, 64, 8, d_out=64, activation="tanh")
    n_nets = 2000
    t0 = time.perf_counter()
    ensemble_statistics(arch, n_nets, seed=0, ntk=False)
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    _naive(arch, n_nets)
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    ensemble_statistics(arch, n_nets, seed=0, ntk=True)
    with_ntk = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.finite_width(arch)
    theory = time.perf_counter() - t0
    return [
        {
            "name": "ensemble_statistics 2000 tanh nets 64x8, kurtosis only",
            "seconds": batched,
            "baseline": "arch.build + hooks, one net at a time",
            "baseline_seconds": naive,
        },
        {
            "name": "ensemble_statistics same, with per-layer NTKs",
            "seconds": with_ntk,
            "baseline": "arch.build + hooks, kurtosis only",
            "baseline_seconds": naive,
        },
        {
            "name": "finite_width theory, tanh depth 8 (quadrature)",
            "seconds": theory,
            "baseline": "batched ensemble of 2000 nets",
            "baseline_seconds": batched,
        },
    ]
