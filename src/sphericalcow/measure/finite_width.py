"""Finite-width statistics over ensembles of real random MLPs: kurtosis, two-neuron four-point function, NTK spread.

Thousands of initialisations of a narrow network are cheap when they run as one batched computation: the weights of
``chunk`` networks are stacked, z^{(l+1)} = sqrt(C_b) beta + sqrt(C_W / n_l) W sigma(z^{(l)}) is a batched matmul
(the same computation, parametrization and initialisation as :meth:`sphericalcow.MLP.build`; checked against it in
tests/test_finite_width_measure.py), and the NTK of neuron 0 of every layer comes from one backward pass per layer
whose per-network gradients are separated by the batch index.

Estimators (networks are the independent units; neurons of one network are exchangeable but correlated through
their shared stochastic metric):
    excess kurtosis       M4 / M2^2 - 3,        M_k = mean over networks of (1/n) sum_i z_i^k,
    two-neuron function   C / M2^2 - 1,         C = mean over networks of sum_{i != j} z_i^2 z_j^2 / (n (n - 1)),
    NTK relative variance S2 / S1^2 - 1,        S_k = mean over networks of Theta_00^k,
each with a delta-method standard error over networks.  For heavy-tailed layers (r = depth/width of order one) the
standard error itself is noisy: it needs eighth moments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError
from ..progress import progress_bar

__all__ = ["EnsembleStatistics", "VelocitySamples", "ensemble_statistics", "ntk_velocity_samples"]


@dataclass(frozen=True)
class EnsembleStatistics:
    """Per-layer estimates over ``n_nets`` networks, arrays over layers l = 1..L+1 (index 0 is layer 1).

    ``K``: mean z^2; ``kurtosis``/``kurtosis_se``: pooled excess kurtosis; ``four_point_cross``/``_se``:
    (E[z_i^2 z_j^2] - E[z^2]^2) / E[z^2]^2 for i != j (NaN where a layer has one neuron); ``theta``: mean NTK of
    neuron 0; ``ntk_variance``/``_se``: Var(Theta_00) / E[Theta_00]^2 (``None`` unless measured).
    """

    n_nets: int
    K: np.ndarray
    kurtosis: np.ndarray
    kurtosis_se: np.ndarray
    four_point_cross: np.ndarray
    four_point_cross_se: np.ndarray
    theta: np.ndarray | None
    ntk_variance: np.ndarray | None
    ntk_variance_se: np.ndarray | None


def _ratio_stat(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """mean(a) / mean(b)^2 - 1 and its delta-method standard error over the rows (networks)."""
    A, B = a.mean(), b.mean()
    infl = a / B**2 - 2.0 * A * b / B**3
    se = infl.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else math.nan
    return float(A / B**2 - 1.0), float(se)


def ensemble_statistics(
    arch: Any,
    n_nets: int,
    *,
    x: Any = None,
    seed: int = 0,
    chunk: int = 256,
    ntk: bool = True,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
) -> EnsembleStatistics:
    """Measure per-layer kurtosis, the two-neuron four-point function and NTK fluctuations over random networks.

    ``arch``: a plain (non-residual) :class:`sphericalcow.MLP`; ``x``: one input of length d_in (``None``: all ones,
    so |x|^2 / d_in = 1 as :func:`sphericalcow.theory.finite_width.finite_width` assumes); ``seed``: networks are
    drawn in chunks of ``chunk`` from ``torch.Generator().manual_seed(seed)``, so a seed fixes the whole ensemble.
    ``ntk``: also measure the NTK of neuron 0 at every layer (NTK parametrization only).
    """
    if getattr(arch, "residual", False):
        raise SphericalCowError("ensemble_statistics supports plain (non-residual) MLPs only; got residual=True")
    if not isinstance(n_nets, int) or isinstance(n_nets, bool) or n_nets < 2:
        raise SphericalCowError(f"n_nets={n_nets!r} is not allowed; expected an integer >= 2")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise SphericalCowError(f"chunk={chunk!r} is not allowed; expected a positive integer")
    if ntk and arch.parametrization != "ntk":
        raise SphericalCowError(
            f"NTK statistics need parametrization='ntk' (got {arch.parametrization!r}); pass ntk=False"
        )
    xv = _input_vector(arch, x, dtype)
    sizes = [arch.d_in, *arch.widths, arch.d_out]
    n_layers = len(sizes) - 1
    gen = torch.Generator().manual_seed(int(seed))
    m2 = [[] for _ in range(n_layers)]
    m4 = [[] for _ in range(n_layers)]
    cross = [[] for _ in range(n_layers)]
    th = [[] for _ in range(n_layers)]
    n_chunks = -(-n_nets // chunk)
    with progress_bar(n_chunks, "random networks", enabled=progress) as advance:
        for c in range(n_chunks):
            b = min(chunk, n_nets - c * chunk)
            zs, params = _forward(arch, sizes, xv, b, gen, dtype, requires_grad=ntk)
            for i, z in enumerate(zs):
                zd = z.detach()
                s2, s4 = (zd**2).sum(1), (zd**4).sum(1)
                n = zd.shape[1]
                m2[i].append((s2 / n).numpy())
                m4[i].append((s4 / n).numpy())
                cross[i].append(((s2 * s2 - s4) / (n * (n - 1))).numpy() if n > 1 else np.full(b, np.nan))
                if ntk:
                    own = params[: 2 * (i + 1)]  # the weights and biases of layers 1..l
                    grads = torch.autograd.grad(z[:, 0].sum(), own, retain_graph=i + 1 < n_layers)
                    th[i].append(sum(g.pow(2).flatten(1).sum(1) for g in grads).detach().numpy())
            advance()
    K, kurt, kurt_se, fp, fp_se = (np.empty(n_layers) for _ in range(5))
    thm, tv, tv_se = (np.empty(n_layers) for _ in range(3))
    for i in range(n_layers):
        a2, a4, cr = np.concatenate(m2[i]), np.concatenate(m4[i]), np.concatenate(cross[i])
        K[i] = a2.mean()
        k, se = _ratio_stat(a4, a2)
        kurt[i], kurt_se[i] = k - 2.0, se  # M4/M2^2 - 3
        fp[i], fp_se[i] = _ratio_stat(cr, a2) if np.isfinite(cr).all() else (np.nan, np.nan)
        if ntk:
            t = np.concatenate(th[i])
            thm[i] = t.mean()
            tv[i], tv_se[i] = _ratio_stat(t * t, t)
    return EnsembleStatistics(
        n_nets=n_nets,
        K=K,
        kurtosis=kurt,
        kurtosis_se=kurt_se,
        four_point_cross=fp,
        four_point_cross_se=fp_se,
        theta=thm if ntk else None,
        ntk_variance=tv if ntk else None,
        ntk_variance_se=tv_se if ntk else None,
    )


def _input_vector(arch: Any, x: Any, dtype: torch.dtype) -> torch.Tensor:
    """The one input as a tensor (``None``: all ones, so |x|^2 / d_in = 1 as the theory assumes)."""
    if x is None:
        return torch.ones(arch.d_in, dtype=dtype)
    xv = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype).reshape(-1)
    if xv.shape[0] != arch.d_in or not torch.isfinite(xv).all():
        raise SphericalCowError(f"x must be a finite vector of length d_in={arch.d_in}; got shape {tuple(xv.shape)}")
    return xv


def _forward(
    arch: Any, sizes: list[int], x: torch.Tensor, b: int, gen: torch.Generator, dtype: torch.dtype, requires_grad: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Preactivations z^{(1)}..z^{(L+1)} of ``b`` fresh networks, each (b, n_l), and their parameters [W1, b1, ...].

    Parameters are drawn N(0, 1) in the order weight then bias per layer (NTK parametrization; the standard one has
    the same forward distribution)."""
    cw, cb = float(arch.cw), float(arch.cb)
    act = arch.activation
    zs, params = [], []
    h = x.expand(b, -1)
    for i in range(len(sizes) - 1):
        W = torch.randn(b, sizes[i + 1], sizes[i], generator=gen, dtype=dtype).requires_grad_(requires_grad)
        beta = torch.randn(b, sizes[i + 1], generator=gen, dtype=dtype).requires_grad_(requires_grad)
        params += [W, beta]
        z = math.sqrt(cb) * beta + math.sqrt(cw / sizes[i]) * torch.bmm(W, h.unsqueeze(2)).squeeze(2)
        zs.append(z)
        h = act.torch(z)
    return zs, params


@dataclass(frozen=True)
class VelocitySamples:
    """Per-network readout output ``f``, NTK ``theta`` and dNTK ``dH`` (output 0, one input), and the estimates
    ``rate`` = mean of -2 f dH (E[dTheta/dt] at t = 0 under gradient flow) and ``cov_f2_theta`` = Cov(f^2, Theta),
    each with its standard error over networks."""

    f: np.ndarray
    theta: np.ndarray
    dH: np.ndarray
    rate: float
    rate_se: float
    cov_f2_theta: float
    cov_f2_theta_se: float


def ntk_velocity_samples(
    arch: Any, n_nets: int, *, x: Any = None, seed: int = 0, chunk: int = 500, dtype: torch.dtype = torch.float64
) -> VelocitySamples:
    """Measure dH = grad f . (Hessian of f) grad f on ``n_nets`` random networks (one batched double backward per
    chunk: the gradient of sum_b g_b . stop(g_b) is H_b g_b for every network b), to compare with
    :func:`sphericalcow.theory.finite_width.ntk_velocity`."""
    if getattr(arch, "residual", False) or arch.parametrization != "ntk":
        raise SphericalCowError("ntk_velocity_samples needs a plain MLP in NTK parametrization")
    if not isinstance(n_nets, int) or isinstance(n_nets, bool) or n_nets < 2:
        raise SphericalCowError(f"n_nets={n_nets!r} is not allowed; expected an integer >= 2")
    xv = _input_vector(arch, x, dtype)
    sizes = [arch.d_in, *arch.widths, arch.d_out]
    gen = torch.Generator().manual_seed(int(seed))
    fs, ths, dhs = [], [], []
    for c in range(-(-n_nets // chunk)):
        b = min(chunk, n_nets - c * chunk)
        zs, params = _forward(arch, sizes, xv, b, gen, dtype, requires_grad=True)
        f = zs[-1][:, 0]
        g = torch.autograd.grad(f.sum(), params, create_graph=True)
        hg = torch.autograd.grad(
            sum((t * t.detach()).sum() for t in g), params, allow_unused=True, materialize_grads=True
        )
        fs.append(f.detach().numpy())
        ths.append(sum(t.detach().pow(2).flatten(1).sum(1) for t in g).numpy())
        dhs.append(sum((t.detach() * h).flatten(1).sum(1) for t, h in zip(g, hg, strict=True)).numpy())
    f, th, dH = np.concatenate(fs), np.concatenate(ths), np.concatenate(dhs)
    est = -2.0 * f * dH
    f2 = f * f
    # Cov(f^2, Theta) = E[f^2 Theta] - E[f^2] E[Theta]; influence function for its standard error
    cov = float(np.mean(f2 * th) - f2.mean() * th.mean())
    infl = (f2 - f2.mean()) * (th - th.mean())
    return VelocitySamples(
        f=f,
        theta=th,
        dH=dH,
        rate=float(est.mean()),
        rate_se=float(est.std(ddof=1) / math.sqrt(len(est))),
        cov_f2_theta=cov,
        cov_f2_theta_se=float(infl.std(ddof=1) / math.sqrt(len(est))),
    )
