"""Empirical NTK speed: empirical_ntk (Jacobian contraction, NTK-vector products) vs the plain torch.func recipe.

Network: sphericalcow MLP, d_in=100, width 512, depth 3 (P ~ 5.8e5 parameters), tanh, float32; trace NTK of
N inputs with themselves (x2=None). Baseline (the straightforward torch.func recipe, no chunking):
``jac = vmap(jacrev(f))(params, x)`` for all inputs at once, then ``sum over parameters of einsum('iap,jap->ij')``;
it holds the whole Jacobian, N O P floats (0.6 GB at N=256, O=1). empirical_ntk bounds memory by chunks of
<= 512 MiB. d_out=10 runs at N=64 instead of 256: at N=256 the Jacobian alone is 6 GB and every route takes
minutes on a small CPU (the costs scale as N^2 O P), which would break the ~60 s budget of this benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.func import functional_call, jacrev, vmap

import sphericalcow as sc
from sphericalcow.measure.ntk import empirical_ntk


def _baseline(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return sum(torch.einsum("iap,jap->ij", j.flatten(2), j.flatten(2)) for j in jac.values())


def _time(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run() -> list[dict]:
    rows = []
    for d_out, n in ((1, 256), (10, 64)):
        arch = sc.MLP(d_in=100, width=512, depth=3, d_out=d_out, activation="tanh", cw=1.0)
        model = arch.build(seed=0, dtype=torch.float32)
        x = torch.randn(n, 100, generator=torch.Generator().manual_seed(0))
        _baseline(model, x[:4])  # warm-up (first calls pay one-off dispatch costs)
        empirical_ntk(model, x[:4], method="jvp")
        t_base, k_base = _time(lambda model=model, x=x: _baseline(model, x))
        for method in ("jacobian", "jvp"):
            t, k = _time(lambda model=model, x=x, method=method: empirical_ntk(model, x, method=method))
            err = float((k - k_base).abs().max() / k_base.abs().max())
            rows.append(
                {
                    "name": f"empirical_ntk {method}, MLP 100-512x3-{d_out}, N={n} (rel.diff {err:.0e})",
                    "seconds": t,
                    "baseline": "vmap(jacrev) all at once + einsum",
                    "baseline_seconds": t_base,
                }
            )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
