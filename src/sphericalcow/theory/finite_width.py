"""Leading finite-width correction for one input: the four-point vertex V^{(l)} and the excess kurtosis.

Conventions follow Roberts & Yaida, *The Principles of Deep Learning Theory* (PDLT, 2022), chapter 4
(equation numbers below are to verify against the book).  Layer l = 1..L+1 has preactivations z^{(l)}; its
fan-in is n_{l-1} with n_0 = d_in and n_l = ``arch.widths[l-1]`` for the hidden layers; layer L+1 is the readout.

Definitions (one fixed input, so all sample indices are dropped)
    <z_i z_i>              = K^{(l)} + O(1/n)                                        (PDLT eq. 4.70-ish)
    <z_i z_i z_i z_i>_conn = (1/n_{l-1}) [V_{(aa)(aa)} + V_{(aa)(aa)} + V_{(aa)(aa)}] = 3 V^{(l)} / n_{l-1}
                                                                                      (PDLT eq. 4.77-ish)
    excess kurtosis kappa^{(l)} = E[z^4] / E[z^2]^2 - 3 = 3 V^{(l)} / (n_{l-1} (K^{(l)})^2) + O(1/n^2).

Recursions (PDLT eq. 4.90 for V at general widths, eq. 4.118 / 5.xx for K and chi_par; numbers to verify)
    K^{(1)}   = C_b + C_W |x|^2 / n_0,           V^{(1)} = 0  (the first layer is exactly Gaussian),
    K^{(l+1)} = C_b + C_W <sigma^2>_{K^{(l)}},
    V^{(l+1)} = C_W^2 [<sigma^4>_{K^{(l)}} - <sigma^2>_{K^{(l)}}^2] + (n_l / n_{l-1}) (chi_par^{(l)})^2 V^{(l)},
    chi_par^{(l)} = dK^{(l+1)}/dK^{(l)} = C_W d<sigma^2>_K/dK = (C_W / (2 K^2)) <sigma^2(z) (z^2 - K)>_K.

Derivation (sketch).  Given layer l, z^{(l+1)}_i ~ N(0, G) with the stochastic metric
G = C_b + (C_W/n_l) sum_j sigma(z_j^{(l)})^2, so E[z^4] - 3 E[z^2]^2 = 3 Var G, i.e. V^{(l+1)} = n_l Var G.
Var sum_j sigma_j^2 = n_l Var(sigma^2) + n_l (n_l - 1) Cov(sigma_j^2, sigma_k^2); the neurons of layer l are i.i.d.
N(0, G^{(l)}) given G^{(l)}, so Cov = Var_{G^{(l)}} <sigma^2>_{G^{(l)}} = (d<sigma^2>/dK)^2 V^{(l)} / n_{l-1} + ...
Keeping the leading order in 1/n gives the V recursion above, with the width ratio n_l / n_{l-1}.
Equivalently, kappa^{(l+1)} = 3 C_W^2 [<sigma^4> - <sigma^2>^2] / (n_l (K^{(l+1)})^2)
+ (chi_par^{(l)} K^{(l)} / K^{(l+1)})^2 kappa^{(l)}, so kappa is exactly linear in 1/n when all widths scale.

Note: a *linear* activation does NOT give V = 0: <z^4> - <z^2>^2 = 2 K^2, and a deep linear network at finite width
is a Gaussian scale mixture (see :func:`exact_homogeneous_kurtosis`).  V = 0 holds only at the first layer.

Exact check for ReLU (C_b = 0, any C_W, one input): see :func:`exact_relu_kurtosis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..activations import Activation, activation
from ..errors import SphericalCowError
from .gaussian import expect1

__all__ = ["FiniteWidth", "exact_homogeneous_kurtosis", "exact_relu_kurtosis", "finite_width"]


@dataclass(frozen=True)
class FiniteWidth:
    """Per-layer single-input finite-width quantities, arrays over layers l = 1..L+1 (index 0 is layer 1).

    ``K``: the infinite-width kernel K^{(l)}; ``V``: the four-point vertex V^{(l)} (PDLT normalisation,
    <zzzz>_conn = 3 V / n_{l-1}); ``kurtosis``: the leading-order excess kurtosis 3 V / (n_{l-1} K^2);
    ``chi_par``: chi_par^{(l)} = dK^{(l+1)}/dK^{(l)} evaluated at K^{(l)}; ``fan_in``: n_{l-1};
    ``aspect_ratio``: sum over hidden layers of 1/n_l (the expansion parameter).
    """

    K: np.ndarray
    V: np.ndarray
    kurtosis: np.ndarray
    chi_par: np.ndarray
    fan_in: np.ndarray
    aspect_ratio: float


def _gauss_moments(act: Activation, K: float) -> tuple[float, float, float]:
    """<sigma^2>_K, <sigma^4>_K and <sigma^2 (z^2 - K)>_K."""
    kinks = act.kinks
    s2 = float(expect1(lambda z: act(z) ** 2, K, kinks=kinks))
    s4 = float(expect1(lambda z: act(z) ** 4, K, kinks=kinks))
    s2z = float(expect1(lambda z: act(z) ** 2 * (z * z - K), K, kinks=kinks))
    return s2, s4, s2z


def finite_width(arch: Any, x: Any = None) -> FiniteWidth:
    """Leading-order K^{(l)}, V^{(l)} and excess kurtosis of one neuron's preactivation for a single input.

    ``arch``: a non-residual :class:`sphericalcow.MLP`.  ``x``: the input vector (length d_in); ``None`` means
    any input with |x|^2 / d_in = 1, i.e. K^{(1)} = C_b + C_W.  Formulas: see the module docstring.
    """
    if getattr(arch, "residual", False):
        raise SphericalCowError("finite_width supports plain (non-residual) MLPs only")
    act = arch.activation
    cw, cb = float(arch.cw), float(arch.cb)
    if x is None:
        q = 1.0
    else:
        xv = np.asarray(x, dtype=np.float64).reshape(-1)
        if xv.shape[0] != arch.d_in or not np.isfinite(xv).all():
            raise SphericalCowError(f"x must be a finite vector of length d_in={arch.d_in}; got shape {xv.shape}")
        q = float(xv @ xv) / arch.d_in
    fan_in = np.array([arch.d_in, *arch.widths], dtype=np.float64)  # n_{l-1} for l = 1..L+1
    n_layers = arch.depth + 1
    K = np.empty(n_layers)
    V = np.zeros(n_layers)
    chi = np.empty(n_layers)
    K[0] = cb + cw * q
    for i in range(n_layers):
        s2, s4, s2z = _gauss_moments(act, K[i])
        chi[i] = cw * s2z / (2.0 * K[i] ** 2) if K[i] > 0 else np.nan
        if i + 1 < n_layers:
            K[i + 1] = cb + cw * s2
            # V^{(l+1)} = C_W^2 [<s^4> - <s^2>^2] + (n_l / n_{l-1}) chi^2 V^{(l)}; i is the 0-based layer l - 1.
            V[i + 1] = cw**2 * (s4 - s2**2) + (fan_in[i + 1] / fan_in[i]) * chi[i] ** 2 * V[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.where(K > 0, 3.0 * V / (fan_in * K**2), 0.0)
    return FiniteWidth(K=K, V=V, kurtosis=kurt, chi_par=chi, fan_in=fan_in, aspect_ratio=float(arch.aspect_ratio))


def exact_homogeneous_kurtosis(widths: Sequence[int], moment_ratio: float) -> np.ndarray:
    """Exact excess kurtosis of z^{(l)}, l = 1..len(widths)+1, for a degree-1 positively homogeneous sigma, C_b = 0.

    ``moment_ratio`` = <sigma^4>_1 / <sigma^2>_1^2 (ReLU: (3/2)/(1/2)^2 = 6; linear: 3; leaky ReLU with slope a:
    6 (1 + a^4) / (1 + a^2)^2).  Derivation: given layer l, z^{(l+1)} ~ N(0, G^{(l+1)}) with
    G^{(l+1)} = (C_W/n_l) sum_j sigma(z_j^{(l)})^2.  Given G^{(l)}, z_j^{(l)} = sqrt(G^{(l)}) u_j with u_j i.i.d.
    N(0, 1) independent of G^{(l)}, and sigma(sqrt(G) u) = sqrt(G) sigma(u), so G^{(l+1)} = G^{(l)} (C_W/n_l) S_l,
    S_l = sum_j sigma(u_j)^2, a product of independent factors (G^{(1)} is deterministic for a fixed input).
    E[S_l^2] / E[S_l]^2 = 1 + (moment_ratio - 1) / n_l, hence
        E[z^4] / E[z^2]^2 = 3 E[G^2] / E[G]^2 = 3 prod_{k < l} (1 + (moment_ratio - 1) / n_k),
    and the excess kurtosis is 3 [prod_{k=1}^{l-1} (1 + (r - 1)/n_k) - 1] (zero at l = 1).  It expands to
    3 (r - 1) sum_k 1/n_k + O(1/n^2), matching the leading-order V recursion.
    """
    w = np.asarray(list(widths), dtype=np.float64)
    if w.ndim != 1 or (w < 1).any():
        raise SphericalCowError(f"widths={list(widths)!r} must be positive integers")
    factors = 1.0 + (float(moment_ratio) - 1.0) / w
    prod = np.concatenate([[1.0], np.cumprod(factors)])
    return 3.0 * (prod - 1.0)


def exact_relu_kurtosis(widths: Any) -> np.ndarray:
    """Exact excess kurtosis of z^{(l)}, l = 1..L+1, of a ReLU MLP with C_b = 0 (any C_W) at one input.

    kappa^{(l)} = 3 [prod_{k=1}^{l-1} (1 + 5/n_k) - 1], since for z ~ N(0, K): E[relu^2] = K/2, E[relu^4] = 3K^2/2,
    so E[S^2]/E[S]^2 = (n (3/2) + n (n - 1)/4) / (n/2)^2 = 1 + 5/n (see :func:`exact_homogeneous_kurtosis`).
    ``widths``: the hidden widths n_1..n_L, or an MLP (its ``widths``; its activation/C_b are checked).
    """
    if hasattr(arch := widths, "widths"):
        if activation(arch.activation).name != "relu" or float(arch.cb) != 0.0 or arch.residual:
            raise SphericalCowError("exact_relu_kurtosis needs a plain ReLU MLP with cb = 0")
        widths = arch.widths
    return exact_homogeneous_kurtosis(widths, 6.0)
