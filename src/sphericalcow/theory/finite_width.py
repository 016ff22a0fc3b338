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

NTK fluctuations at initialisation (one input; NTK parametrization, every parameter N(0, 1), unit learning rates;
the single-input form of PDLT ch. 8, whose tensors A, B, D we follow in normalisation)
    E[Theta_ii]                      = Theta^{(l)} + O(1/n),
    Cov(Theta_ii, Theta_kk), i != k  = A^{(l)} / n_{l-1},      E[Theta_ik^2], i != k = B^{(l)} / n_{l-1},
    Var(Theta_ii)                    = (A^{(l)} + 2 B^{(l)}) / n_{l-1},
    Cov(Theta_ii, z_k^2), i != k     = D^{(l)} / n_{l-1},      Cov(Theta_ii, z_i^2) = (D^{(l)} + 2 F^{(l)}) / n_{l-1}.
Derivation.  Theta^{(l+1)}_ik = delta_ik G + w_i^T M w_k with G = C_b + (C_W/n) sum_j sigma_j^2 and
M = (C_W/n) diag(sigma') Theta^{(l)} diag(sigma'), the rows w_i of the fresh N(0, 1) weights independent of layer l.
Given layer l, w_i^T M w_i has mean tr M and variance 2 tr M^2, and E[(w_i^T M w_k)^2] = tr M^2; the neuron-level
sums fluctuate through the previous layer's stochastic metric (variance V / n), NTK mean (A / n) and their
covariance (D / n).  Linearising the Gaussian averages in those fluctuations gives, with n = n_l, rho = n_l/n_{l-1},
h = sigma^2 + Theta sigma'^2, chi_perp = C_W <sigma'^2>, u = C_W d<h>/dK = chi_par + C_W Theta d<sigma'^2>/dK:
    B^{(l+1)} = C_W^2 <sigma'^4> Theta^2  + rho chi_perp^2 B^{(l)},
    D^{(l+1)} = C_W^2 Cov(sigma^2, h)      + rho chi_par (u V^{(l)} + chi_perp D^{(l)}),
    A^{(l+1)} = C_W^2 Var(h)               + rho (u^2 V^{(l)} + 2 u chi_perp D^{(l)} + chi_perp^2 A^{(l)}),
    F^{(l+1)} = C_W^2 <sigma^2 sigma'^2> Theta           + rho chi_par^2 F^{(l)}
(F: given layer l, Cov(w^T M w, (a.w)^2) = 2 a^T M a with a = sqrt(C_W/n) sigma; the off-diagonal part of a^T M a
needs E[Theta_jk f(z_j) f(z_k)] = <f'>^2 F / n by Stein's lemma, with C_W <(sigma sigma')'> = chi_par),
with A = B = D = F = 0 at the first layer (its NTK is deterministic for one input).  The B recursion has the book's
form (PDLT eq. 8.89-ish: chi_perp^2 B plus a <sigma'^4> source); all three are checked against Monte Carlo over
thousands of real networks in tests/test_finite_width.py.

dNTK-preactivation correlators (one input; the analogue of PDLT §11.2's P and Q, derived here the same way; the
labels and normalisation are ours and may differ from the book's: here the same-neuron correlator is P + 2Q).
The dNTK of layer l is dH_{i0 i1 i2} = sum_{mu nu} d^2 z_{i0}/dtheta_mu dtheta_nu dz_{i1}/dtheta_mu dz_{i2}/dtheta_nu
(all parameters of layers <= l).  For different neurons j != k and any functions phi, psi, at leading order
    E[phi(z_j) psi(z_k) dH_{jkk}] = <phi'> <psi> P^{(l)} / n_{l-1},
    E[phi(z_j) psi(z_k) dH_{jkj}] = <phi> <psi'> Q^{(l)} / n_{l-1},      E[z_i dH_{iii}] = (P + 2Q) / n_{l-1}.
Derivation.  With z_i = sqrt(C_b) b_i + sqrt(C_W/n) w_i . sigma, the layer-(l+1) dNTK is
    dH_{i0 i1 i2} = (C_W/n)^{3/2} [delta_{i0 i1} sum_{jk} sigma_j sigma'_j w_{i2 k} sigma'_k Theta_jk + (i1 <-> i2)
                    + sum_{jkm} w_{i0 j} w_{i1 k} w_{i2 m} (sigma''_j sigma'_k sigma'_m Theta_jk Theta_jm
                                                          + sigma'_j sigma'_k sigma'_m dH_jkm)];
Stein's lemma on the rows w (E[w phi(a.w)] = a <phi'>, E[w w^T psi(a.w)] = I <psi> + a a^T <psi''>) reduces the
expectations to sums over the previous layer, whose j = k parts are O(1/n) sources and whose j != k parts carry
B, F, P, Q (the a a a T contractions are O(1/n^2)).  With rho = n_l / n_{l-1} and Gaussian averages at K^{(l)}:
    P^{(l+1)} = C_W^2 <sigma sigma'^2 sigma''> Theta^2 + rho chi_perp (C_W <sigma sigma''> B^{(l)} + chi_par P^{(l)}),
    Q^{(l+1)} = F^{(l+1)} + C_W^2 <sigma sigma'^2 sigma''> Theta^2
                + rho chi_par (C_W Theta d<sigma'^2>/dK F^{(l)} + chi_perp Q^{(l)}),
with P = Q = 0 at the first layer (it is linear in its parameters).  The sigma'' averages are taken by Gaussian
integration by parts, <sigma sigma''> = <z sigma sigma'>/K - <sigma'^2> and
<sigma sigma'^2 sigma''> = (<z sigma sigma'^3>/K - <sigma'^4>)/3, so kinks need no delta functions (ReLU: both 0).
Checks: for a scale-invariant activation with C_b = 0, P + 2Q equals the exact identity of :func:`ntk_velocity`,
(1/2)[(L+1)(D + 2F) - (A + 2B)], to rounding at every depth and width profile; for one hidden layer the 1/n
formula is exact at every n; and it is compared with the double-backward dNTK of thousands of real networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..activations import Activation, activation
from ..errors import SphericalCowError
from .gaussian import expect1

__all__ = [
    "FiniteWidth",
    "exact_homogeneous_kurtosis",
    "exact_relu_kurtosis",
    "finite_width",
    "moment_ratio",
    "normalized_kurtosis_slope",
    "ntk_velocity",
    "universal_kurtosis_slope",
]


@dataclass(frozen=True)
class FiniteWidth:
    """Per-layer single-input finite-width quantities, arrays over layers l = 1..L+1 (index 0 is layer 1).

    ``K``: the infinite-width kernel K^{(l)}; ``V``: the four-point vertex V^{(l)} (PDLT normalisation,
    <zzzz>_conn = 3 V / n_{l-1}); ``kurtosis``: the leading-order excess kurtosis 3 V / (n_{l-1} K^2);
    ``four_point_cross``: the connected four-point function of two different neurons normalised by K^2,
    (E[z_i^2 z_j^2] - E[z_i^2] E[z_j^2]) / K^2 = V / (n_{l-1} K^2) = kurtosis / 3;
    ``kurtosis_exact``: the exact finite-width excess kurtosis where one exists (scale-invariant activation, C_b = 0,
    :func:`exact_homogeneous_kurtosis`), else ``None``; ``chi_par``, ``chi_perp``: susceptibilities at K^{(l)};
    ``fan_in``: n_{l-1}; ``aspect_ratio``: sum over hidden layers of 1/n_l (the expansion parameter).
    NTK statistics (``None`` for the standard parametrization): ``theta`` the infinite-width NTK Theta^{(l)};
    ``A``, ``B``, ``D``, ``F`` (module docstring);
    ``ntk_variance`` = Var(Theta_ii) / Theta^2 = (A + 2B) / (n_{l-1} Theta^2),
    the relative variance of one output's NTK over initialisations; ``ntk_cross_covariance`` = A / (n_{l-1} Theta^2);
    ``P``, ``Q``: the dNTK-preactivation correlators (module docstring), E[z_i dH_iii] = (P + 2Q) / n_{l-1}.
    """

    K: np.ndarray
    V: np.ndarray
    kurtosis: np.ndarray
    four_point_cross: np.ndarray
    kurtosis_exact: np.ndarray | None
    chi_par: np.ndarray
    chi_perp: np.ndarray
    fan_in: np.ndarray
    aspect_ratio: float
    theta: np.ndarray | None
    A: np.ndarray | None
    B: np.ndarray | None
    D: np.ndarray | None
    F: np.ndarray | None
    ntk_variance: np.ndarray | None
    ntk_cross_covariance: np.ndarray | None
    P: np.ndarray | None = None
    Q: np.ndarray | None = None

    def as_rows(self) -> list[dict[str, float]]:
        """One dict per layer (``layer`` 1..L+1), for tables and JSON."""
        rows = []
        for i in range(len(self.K)):
            row = {
                "layer": i + 1,
                "fan_in": int(self.fan_in[i]),
                "r": float(np.sum(1.0 / self.fan_in[1 : i + 1])),
                "K": float(self.K[i]),
                "V": float(self.V[i]),
                "kurtosis": float(self.kurtosis[i]),
                "kurtosis_exact": None if self.kurtosis_exact is None else float(self.kurtosis_exact[i]),
                "chi_par": float(self.chi_par[i]),
                "chi_perp": float(self.chi_perp[i]),
            }
            if self.theta is not None:
                row |= {"theta": float(self.theta[i]), "ntk_variance": float(self.ntk_variance[i])}
            rows.append(row)
        return rows


@dataclass(frozen=True)
class _Moments:
    """Gaussian averages at one K that the recursions need."""

    s2: float  # <sigma^2>
    s4: float  # <sigma^4>
    ds2: float  # d<sigma^2>/dK
    p2: float  # <sigma'^2>
    p4: float  # <sigma'^4>
    dp2: float  # d<sigma'^2>/dK
    s2p2: float  # <sigma^2 sigma'^2>
    s_dd: float  # <sigma sigma''>
    s_pp_dd: float  # <sigma sigma'^2 sigma''>


def _moments(act: Activation, K: float, with_ntk: bool) -> _Moments:
    """d<f>/dK = <f(z) (z^2 - K)> / (2 K^2) (differentiating the Gaussian density in K)."""
    kinks = act.kinks
    s2 = float(expect1(lambda z: act(z) ** 2, K, kinks=kinks))
    s4 = float(expect1(lambda z: act(z) ** 4, K, kinks=kinks))
    ds2 = float(expect1(lambda z: act(z) ** 2 * (z * z - K), K, kinks=kinks)) / (2.0 * K * K) if K > 0 else np.nan
    if not with_ntk:
        return _Moments(s2, s4, ds2, *(np.nan,) * 6)
    p2 = float(expect1(lambda z: act.derivative(z) ** 2, K, kinks=kinks))
    p4 = float(expect1(lambda z: act.derivative(z) ** 4, K, kinks=kinks))
    dp2 = float(expect1(lambda z: act.derivative(z) ** 2 * (z * z - K), K, kinks=kinks)) / (2.0 * K * K)
    s2p2 = float(expect1(lambda z: act(z) ** 2 * act.derivative(z) ** 2, K, kinks=kinks))
    # <g'> = <z g> / K (Gaussian integration by parts) for g = sigma sigma' and g = sigma sigma'^3
    zs1 = float(expect1(lambda z: z * act(z) * act.derivative(z), K, kinks=kinks))
    zs3 = float(expect1(lambda z: z * act(z) * act.derivative(z) ** 3, K, kinks=kinks))
    return _Moments(s2, s4, ds2, p2, p4, dp2, s2p2, zs1 / K - p2, (zs3 / K - p4) / 3.0)


def input_q(arch: Any, x: Any) -> float:
    """q = |x|^2 / d_in of one input vector (``None``: 1, i.e. K^{(1)} = C_b + C_W); a one-line error otherwise."""
    if x is None:
        return 1.0
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    if xv.shape[0] != arch.d_in or not np.isfinite(xv).all():
        raise SphericalCowError(f"x must be a finite vector of length d_in={arch.d_in}; got shape {xv.shape}")
    return float(xv @ xv) / arch.d_in


def finite_width(arch: Any, x: Any = None) -> FiniteWidth:
    """Leading-order K, V, kurtosis and NTK fluctuations (A, B, D) of one neuron for a single input, per layer.

    ``arch``: a non-residual :class:`sphericalcow.MLP` (any activation: Gaussian averages by quadrature split at
    kinks; per-layer widths allowed).  ``x``: the input vector (length d_in); ``None`` means any input with
    |x|^2 / d_in = 1, i.e. K^{(1)} = C_b + C_W.  Formulas and sources: the module docstring.
    """
    if getattr(arch, "residual", False):
        raise SphericalCowError("finite_width supports plain (non-residual) MLPs only; got residual=True")
    act = arch.activation
    cw, cb = float(arch.cw), float(arch.cb)
    q = input_q(arch, x)
    with_ntk = arch.parametrization == "ntk"
    fan_in = np.array([arch.d_in, *arch.widths], dtype=np.float64)  # n_{l-1} for l = 1..L+1
    n_layers = arch.depth + 1
    K, theta = np.empty(n_layers), np.empty(n_layers)
    V, A, B, D, F, P, Q = (np.zeros(n_layers) for _ in range(7))
    chi, chi_perp = np.empty(n_layers), np.empty(n_layers)
    K[0] = cb + cw * q
    theta[0] = cb + cw * q
    for i in range(n_layers):
        m = _moments(act, K[i], with_ntk)
        chi[i] = cw * m.ds2
        chi_perp[i] = cw * m.p2
        if i + 1 == n_layers:
            break
        rho = fan_in[i + 1] / fan_in[i]  # n_l / n_{l-1}; i is the 0-based layer l - 1
        K[i + 1] = cb + cw * m.s2
        var_s2 = m.s4 - m.s2**2
        V[i + 1] = cw**2 * var_s2 + rho * chi[i] ** 2 * V[i]
        if with_ntk:
            th = theta[i]
            theta[i + 1] = cb + cw * m.s2 + chi_perp[i] * th
            cov_s2_p2 = m.s2p2 - m.s2 * m.p2
            var_h = var_s2 + 2 * th * cov_s2_p2 + th**2 * (m.p4 - m.p2**2)
            u = chi[i] + cw * th * m.dp2
            B[i + 1] = cw**2 * m.p4 * th**2 + rho * chi_perp[i] ** 2 * B[i]
            F[i + 1] = cw**2 * m.s2p2 * th + rho * chi[i] ** 2 * F[i]
            D[i + 1] = cw**2 * (var_s2 + th * cov_s2_p2) + rho * chi[i] * (u * V[i] + chi_perp[i] * D[i])
            A[i + 1] = cw**2 * var_h + rho * (u**2 * V[i] + 2 * u * chi_perp[i] * D[i] + chi_perp[i] ** 2 * A[i])
            source = cw**2 * m.s_pp_dd * th**2
            P[i + 1] = source + rho * chi_perp[i] * (cw * m.s_dd * B[i] + chi[i] * P[i])
            Q[i + 1] = F[i + 1] + source + rho * chi[i] * (cw * th * m.dp2 * F[i] + chi_perp[i] * Q[i])
    with np.errstate(divide="ignore", invalid="ignore"):
        kurt = np.where(K > 0, 3.0 * V / (fan_in * K**2), 0.0)
        ntk_var = (A + 2 * B) / (fan_in * theta**2) if with_ntk else None
        ntk_cross = A / (fan_in * theta**2) if with_ntk else None
    exact = None
    if act.scale_invariant is not None and cb == 0.0:
        exact = exact_homogeneous_kurtosis(arch.widths, moment_ratio(act))
    return FiniteWidth(
        K=K,
        V=V,
        kurtosis=kurt,
        four_point_cross=kurt / 3.0,
        kurtosis_exact=exact,
        chi_par=chi,
        chi_perp=chi_perp,
        fan_in=fan_in,
        aspect_ratio=float(arch.aspect_ratio),
        theta=theta if with_ntk else None,
        A=A if with_ntk else None,
        F=F if with_ntk else None,
        B=B if with_ntk else None,
        D=D if with_ntk else None,
        ntk_variance=ntk_var,
        ntk_cross_covariance=ntk_cross,
        P=P if with_ntk else None,
        Q=Q if with_ntk else None,
    )


def moment_ratio(act: str | Activation) -> float:
    """<sigma^4>_K / <sigma^2>_K^2 of a scale-invariant activation (independent of K): 3 A_4 / A_2^2 with
    A_2 = (a_+^2 + a_-^2)/2, A_4 = (a_+^4 + a_-^4)/2 (PDLT §5.2 notation).  ReLU: 6; linear: 3."""
    act = activation(act) if isinstance(act, str) else act
    if act.scale_invariant is None:
        raise SphericalCowError(f"activation {act.label!r} is not scale-invariant; moment_ratio needs one")
    ap, am = act.scale_invariant
    A2, A4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
    if A2 == 0:
        raise SphericalCowError(f"activation {act.label!r} is identically zero")
    return 3.0 * A4 / A2**2


def universal_kurtosis_slope(act: str | Activation) -> tuple[str, float]:
    """(class, nu): at criticality and large depth the excess kurtosis grows as kappa^{(l)} ~ nu * l / n.

    Scale-invariant class (any C_W, C_b = 0): nu = 3 (moment_ratio - 1) exactly at leading order, since
    chi_par K^{(l)} / K^{(l+1)} = 1 and each layer adds C_W^2 Var(sigma^2) / (K^{(l+1)})^2 = moment_ratio - 1 to
    V / K^2 (PDLT §5.4; ReLU: nu = 15).
    K*=0 class at its critical point (C_b = 0, C_W = 1/sigma_1^2): V^{(l)} / (K^{(l)})^2 -> (2/3) l, i.e. nu = 2 for
    every member (PDLT §5.4, the universal 2/3; tanh, erf and sin reach it as 1 - O(log l / l)).
    Other activations have no universal slope: :class:`SphericalCowError`.
    """
    from .criticality import universality

    act = activation(act) if isinstance(act, str) else act
    cls, _ = universality(act)
    if cls == "scale-invariant":
        return cls, 3.0 * (moment_ratio(act) - 1.0)
    if cls == "K*=0":
        return cls, 2.0
    raise SphericalCowError(
        f"activation {act.label!r} is in class {cls!r}, which has no universal kurtosis slope; "
        "allowed: scale-invariant or K*=0 activations"
    )


#: Normalisation kinds for :func:`normalized_kurtosis_slope`.
NORM_KINDS = ("layer", "rms", "batch")


def normalized_kurtosis_slope(act: str | Activation, norm: str, batch: int | None = None) -> float:
    """nu_norm: the excess kurtosis n * kappa of a layer reading sigma(Norm(z)) of n units, at leading order.

    Normalisation resets the carried fluctuation of the metric (the scale of z is divided out) and leaves only the
    fresh one of sigma^2. Derivation (ours): after a per-example norm the n units u_a are i.i.d. N(0, 1) conditioned
    on sum_a u_a^2 = n (RMSNorm) and, for LayerNorm, also on sum_a u_a = 0. By the joint central limit theorem the
    conditional variance of (1/n) sum_a sigma(u_a)^2 is that of the residual of sigma^2 regressed on u^2 (and u),
    and u, u^2 are uncorrelated, so with z ~ N(0, 1)

        nu_rms   = 3 [Var(sigma^2) - Cov(sigma^2, z^2)^2 / 2] / <sigma^2>^2,
        nu_layer = nu_rms - 3 Cov(sigma^2, z)^2 / <sigma^2>^2.

    BatchNorm (train mode) standardises each unit over the batch of ``batch`` = B examples, not over units, so the
    units stay independent and nu_batch = 3 Var(sigma(u)^2) / <sigma(u)^2>^2 with u one standardised element of a
    Gaussian sample: u^2 / (B - 1) ~ Beta(1/2, (B - 2)/2), density prop. to (1 - u^2/(B - 1))^((B - 4)/2) on
    |u| < sqrt(B - 1) (so <u^4> = 3 (B - 1)/(B + 1)); ``batch=None`` is B -> infinity, u ~ N(0, 1), the plain
    slope of PDLT §5.4 at K = 1. Values: linear 0 (rms, layer), 6 (batch, B -> inf; 4.94 at B = 16); ReLU 9 (rms),
    1.36 (layer), 15 (batch, B -> inf). Checked against Monte Carlo over real normalised layers
    (tests/test_finite_width.py).
    """
    act = activation(act) if isinstance(act, str) else act
    if norm not in NORM_KINDS:
        raise SphericalCowError(f"norm {norm!r} is not allowed; expected one of {', '.join(NORM_KINDS)}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 4):
        raise SphericalCowError(f"batch={batch!r} is not allowed; expected an integer >= 4 or None")
    if norm == "batch" and batch is not None:
        from scipy import integrate, special

        half = math.sqrt(batch - 1.0)
        log_norm = -0.5 * math.log(batch - 1.0) - special.betaln(0.5, (batch - 2) / 2.0)

        def moment(k: int) -> float:
            def f(u: float) -> float:
                dens = math.exp(log_norm + (batch - 4) / 2.0 * math.log1p(-(u * u) / (batch - 1.0)))
                return float(act(np.array(u))) ** k * dens

            pts = [p for p in act.kinks if -half < p < half]
            return float(integrate.quad(f, -half, half, points=pts or None, limit=200, epsabs=1e-13)[0])

        s2, s4 = moment(2), moment(4)
        if s2 <= 0:
            raise SphericalCowError(f"activation {act.label!r} is zero almost everywhere; no kurtosis slope")
        return 3.0 * (s4 - s2 * s2) / s2**2

    from .gaussian import expect1

    one = np.array(1.0)
    s2 = float(expect1(lambda z: act(z) ** 2, one, kinks=act.kinks))
    s4 = float(expect1(lambda z: act(z) ** 4, one, kinks=act.kinks))
    if s2 <= 0:
        raise SphericalCowError(f"activation {act.label!r} is zero almost everywhere; no kurtosis slope")
    var = s4 - s2 * s2
    if norm == "batch":
        return 3.0 * var / s2**2
    c2 = float(expect1(lambda z: act(z) ** 2 * z**2, one, kinks=act.kinks)) - s2
    out = var - c2 * c2 / 2.0
    if norm == "layer":
        c1 = float(expect1(lambda z: act(z) ** 2 * z, one, kinks=act.kinks))
        out -= c1 * c1
    return 3.0 * max(out, 0.0) / s2**2


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


@dataclass(frozen=True)
class NTKVelocity:
    """The initial rate of change of the NTK under gradient flow, at one input (see :func:`ntk_velocity`).

    ``rate``: E[dTheta/dt] at t = 0; ``relative``: rate / Theta^2 (the relative change of Theta per unit of the
    natural time Theta t); ``coefficient``: n_L x relative, the O(1/n) coefficient; ``theta``: the mean NTK.
    """

    rate: float
    relative: float
    coefficient: float
    theta: float
    aspect_ratio: float


def ntk_velocity(arch: Any, x: Any = None) -> NTKVelocity:
    """E[dTheta/dt] at t = 0 for gradient flow on one input x with loss (1/2)(f - y)^2, f the first output.

    dTheta/dt = -2 (f - y) dH with the dNTK dH = sum_{mu nu} d^2 f/dtheta_mu dtheta_nu df/dtheta_mu df/dtheta_nu
    (PDLT ch. 11); E[dH] = 0 (the readout's sign symmetry), so E[dTheta/dt] = -2 E[f dH] for every target y, and at
    leading order (module docstring, the single-input P and Q)
        E[dTheta/dt] = -2 (P + 2Q) / n_L,
    for any activation, C_b and per-layer widths (NTK parametrization, every parameter N(0, 1), unit learning rates).
    One step of gradient descent with learning rate eta changes the mean NTK by eta E[dTheta/dt] + O(eta^2); the
    relative rate (``relative``, per unit of the natural time Theta t) is O(1/n) and grows with depth: the leading
    change of the NTK during training as a function of r.  Sigma'' averages count kinks as the mean NTK sees them,
    i.e. d E[Theta]/dt; for activations with sigma sigma' continuous (ReLU, leaky ReLU, smooth ones) that is
    also the mean of the almost-everywhere derivative that autograd measures.

    Independent check (tests): for a scale-invariant activation with C_b = 0, f is positively homogeneous of degree
    one in each layer's weights and piecewise linear in each weight, so Gaussian integration by parts gives exactly
    E[f dH] = (1/2)[(L+1) E[f^2 Theta] - E[Theta^2]], i.e. P + 2Q = (1/2)[(L+1)(D + 2F) - (A + 2B)] at 1/n.
    """
    if getattr(arch, "residual", False) or arch.parametrization != "ntk":
        raise SphericalCowError(
            f"ntk_velocity needs a plain (non-residual) MLP in NTK parametrization; got "
            f"residual={getattr(arch, 'residual', False)}, parametrization={arch.parametrization!r}"
        )
    fw = finite_width(arch, x)
    n_L = fw.fan_in[-1]
    rate = -2.0 * (fw.P[-1] + 2.0 * fw.Q[-1]) / n_L
    theta = float(fw.theta[-1])
    rel = rate / theta**2
    return NTKVelocity(
        rate=float(rate), relative=float(rel), coefficient=float(rel * n_L), theta=theta, aspect_ratio=fw.aspect_ratio
    )
