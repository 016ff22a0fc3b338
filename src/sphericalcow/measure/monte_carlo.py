"""Monte Carlo estimates of the NNGP and NTK of a description over random initialisations of real networks.

For networks f_theta drawn from the description's initialisation (independent seeds s = seed, seed+1, ...):

* NNGP: K(x, x') = E_theta[f_a(x) f_a(x')], estimated by the mean over networks and outputs a
  (Neal 1996; Lee et al. 2018, eq. 3 - the readout's covariance at initialisation);
* NTK: Theta(x, x') = E_theta[Theta_theta(x, x')] with the per-output empirical NTK (trace over outputs / d_out,
  :func:`~sphericalcow.measure.ntk.empirical_ntk`).

At width n both converge to the infinite-width kernels up to O(1/n) biases (Roberts & Yaida 2022, §4.5, §8.2)
and the spread over networks is O(1/sqrt(n)) for the NTK and O(1) for the NNGP's per-network f f'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SphericalCowError, check_int
from ..progress import progress_bar
from .ntk import empirical_ntk

__all__ = ["MonteCarloKernels", "monte_carlo_kernels"]


@dataclass(frozen=True)
class MonteCarloKernels:
    """Means over ``n_samples`` networks and the standard errors of those means, each (N1, N2) float64."""

    nngp: torch.Tensor | None
    ntk: torch.Tensor | None
    nngp_sem: torch.Tensor | None
    ntk_sem: torch.Tensor | None
    n_samples: int


def monte_carlo_kernels(
    arch,
    x1,
    x2=None,
    n_samples: int = 64,
    seed: int = 0,
    *,
    get: tuple[str, ...] | str = ("nngp", "ntk"),
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> MonteCarloKernels:
    """Mean NNGP (f f' averaged over outputs) and NTK (per output) of ``n_samples`` networks ``arch.build(seed + s)``.

    ``x1``, ``x2``: (N, d_in) arrays or tensors (``x2=None``: x1). Returns means and standard errors of the mean
    (sample standard deviation / sqrt(n_samples)); see the module docstring for the estimators.
    """
    from ..description import MLP
    from ..theory.kernels import _as_inputs, _check_get

    if not isinstance(arch, MLP):
        raise SphericalCowError(f"arch is a {type(arch).__name__}; expected an sc.MLP description")
    n_samples = check_int("n_samples", n_samples, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    items = _check_get(get)
    if dtype not in (torch.float32, torch.float64):
        raise SphericalCowError(f"dtype={dtype!r} is not allowed; allowed: torch.float32, torch.float64")
    a = torch.from_numpy(_as_inputs(x1, "x1", arch.d_in)).to(dtype)
    b = a if x2 is None else torch.from_numpy(_as_inputs(x2, "x2", arch.d_in)).to(dtype)
    sums = {g: torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64) for g in items}
    sqs = {g: torch.zeros_like(sums[g]) for g in items}
    with progress_bar(n_samples, "networks", enabled=progress) as advance:
        for s in range(n_samples):
            net = arch.build(seed=seed + s, dtype=dtype)
            if "nngp" in items:
                with torch.no_grad():
                    fa = net(a).reshape(a.shape[0], -1).double()
                    fb = fa if x2 is None else net(b).reshape(b.shape[0], -1).double()
                k = fa @ fb.T / fa.shape[1]
                sums["nngp"] += k
                sqs["nngp"] += k * k
            if "ntk" in items:
                k = empirical_ntk(net, a, None if x2 is None else b, outputs="trace").double() / arch.d_out
                sums["ntk"] += k
                sqs["ntk"] += k * k
            advance(1)
    mean = {g: sums[g] / n_samples for g in items}
    sem = {
        g: ((sqs[g] / n_samples - mean[g] ** 2).clamp_min(0) * n_samples / (n_samples - 1) / n_samples).sqrt()
        for g in items
    }
    return MonteCarloKernels(
        nngp=mean.get("nngp"),
        ntk=mean.get("ntk"),
        nngp_sem=sem.get("nngp"),
        ntk_sem=sem.get("ntk"),
        n_samples=n_samples,
    )
