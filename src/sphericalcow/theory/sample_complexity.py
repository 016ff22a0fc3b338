"""Sample-complexity and approximation laws as plain functions (float64 / exact ints, no randomness).

* Random Hierarchy Model (Cagnetta, Petrini, Tomasini, Favero & Wyart, Phys. Rev. X 14, 031001 (2024),
  arXiv:2307.02129): the number of distinct data :func:`rhm_p_max`, which a shallow (one-hidden-layer, fully
  connected) network needs a finite fraction of (it cannot do better than memorising), and the sample complexity of
  deep CNNs matched to the hierarchy, :func:`rhm_sample_complexity` = n_c m^L.
* Curse of dimensionality: the minimax exponent of the L2 risk for s-smooth targets (:func:`minimax_exponent`,
  Stone 1982), its noiseless counterpart, and the learning-curve exponent of ridgeless kernel regression in the
  teacher-student setting (:func:`kernel_regression_exponent`, Spigler, Geiger & Wyart 2020; Paccolat, Spigler &
  Wyart 2021 for targets that depend on a few directions).
* Barron's width bound for one-hidden-layer sigmoidal networks (:func:`barron_bound`, :func:`barron_width`; Barron
  1993) and the Fourier moment C_f of a Gaussian bump (:func:`barron_constant_gaussian`).
"""

from __future__ import annotations

import math

from scipy.special import gammaln

from ..errors import check_int, check_positive

__all__ = [
    "barron_bound",
    "barron_constant_gaussian",
    "barron_width",
    "kernel_regression_exponent",
    "minimax_exponent",
    "rhm_p_max",
    "rhm_sample_complexity",
    "sample_size_for_error",
]


def rhm_p_max(*, n_c: int, m: int, s: int, L: int) -> int:
    """Number of distinct data of the Random Hierarchy Model, an exact int:

        P_max = n_c * m ** ((s**L - 1) / (s - 1))

    (Cagnetta et al. 2024, sec. II: a class, then one of m rules at each of the 1 + s + ... + s^(L-1) internal nodes of
    the tree). This is also the scale of the sample complexity of a shallow fully connected network, which learns
    the RHM only by seeing a finite fraction of all the data (ibid.: P* ~ P_max for shallow networks)."""
    n_c = check_int("n_c", n_c, minimum=1)
    m = check_int("m", m, minimum=1)
    s = check_int("s", s, minimum=2)
    L = check_int("L", L, minimum=1)
    return n_c * m ** ((s**L - 1) // (s - 1))


def rhm_sample_complexity(*, n_c: int, m: int, L: int) -> int:
    """Sample complexity of a deep CNN matched to the hierarchy (filter size = stride = s, L layers), up to an
    O(1) constant:

        P* ~ n_c * m ** L

    (Cagnetta et al. 2024, their main result, stated in the abstract and sec. IV). Convention of the paper: P* is
    the training-set size at which the test error falls below 10% of the chance error 1 - 1/n_c; learning curves of
    different (v, m, n_c, L) collapse when plotted against P / (n_c m^L), and P* is where the correlations between a
    low-level s-patch and the label become detectable above sampling noise. The constant in front is of order one
    (it depends on v/m and the architecture); the law is asymptotic in large v. Independent of the patch size s and
    polynomial in the input dimension s^L, unlike P_max."""
    n_c = check_int("n_c", n_c, minimum=1)
    m = check_int("m", m, minimum=1)
    L = check_int("L", L, minimum=1)
    return n_c * m**L


def minimax_exponent(smoothness: float, d: float, *, noise: bool = True) -> float:
    """Exponent beta of the optimal rate P^-beta of the expected squared L2 error for s-smooth targets in d dims.

    With noisy labels (Stone 1982, "Optimal global rates of convergence for nonparametric regression", Ann. Statist.
    10, 1040; s = 1 is the Lipschitz class):
        beta = 2 s / (2 s + d).
    Without noise (optimal recovery / scattered-data interpolation: error ~ fill distance^s with fill distance
    ~ P^(-1/d); Novak 1988, Wendland 2005 "Scattered Data Approximation", ch. 11):
        beta = 2 s / d.
    Both fall to zero as d grows at fixed s: the curse of dimensionality."""
    s = check_positive("smoothness", smoothness)
    dd = check_positive("d", d)
    return 2 * s / (2 * s + dd) if noise else 2 * s / dd


def kernel_regression_exponent(d: float, *, teacher_smoothness: float, student_alpha: float) -> float:
    """Learning-curve exponent of ridgeless kernel regression, test MSE ~ P^-beta, teacher-student setting.

    Spigler, Geiger & Wyart 2020, J. Stat. Mech. 124001 ("Asymptotic learning curves of kernel methods: empirical
    data versus teacher-student paradigm"), main result: a teacher Gaussian random field whose covariance has Fourier
    transform ~ |w|^-alpha_T, learnt by a student kernel with Fourier transform ~ |w|^-alpha_S from P points in d
    (intrinsic) dimensions, gives

        beta = min(alpha_T - d, 2 alpha_S) / d.

    Here ``teacher_smoothness`` nu = (alpha_T - d)/2 (a Matern-nu teacher: the GP's mean-square smoothness), so
    beta = min(2 nu, 2 alpha_S) / d. Laplace kernels and the ReLU NTK on the sphere have alpha_S = d + 1 (Bietti &
    Bach 2021, "Deep equals shallow for ReLU networks in kernel regimes"), so for them beta = 2 nu / d for
    nu <= d + 1: the noiseless rate 2 s / d of :func:`minimax_exponent`.
    For a target depending on d_par < d directions with smoothness nu in those directions, an isotropic kernel
    still has beta = 2 nu / d with d the full input dimension (Paccolat, Spigler & Wyart 2021, "How isotropic
    kernels perform on simple invariants", Mach. Learn.: Sci. Technol. 2, 025020): invariants do not lift
    the curse for isotropic kernels; a learner acting on the d_par relevant coordinates gets d -> d_par."""
    dd = check_positive("d", d)
    nu = check_positive("teacher_smoothness", teacher_smoothness)
    a_s = check_positive("student_alpha", student_alpha)
    return min(2 * nu, 2 * a_s) / dd


def sample_size_for_error(eps: float, beta: float, *, prefactor: float = 1.0) -> float:
    """Training-set size at which a learning curve error = prefactor * P^-beta reaches ``eps``:
    P = (prefactor / eps)^(1/beta). With beta ~ 1/d this is exponential in d (the curse of dimensionality)."""
    e = check_positive("eps", eps)
    b = check_positive("beta", beta)
    c = check_positive("prefactor", prefactor)
    return float((c / e) ** (1.0 / b))


def barron_bound(c_f: float, n: int, *, radius: float = 1.0) -> float:
    """Barron's bound on the squared L2(mu) approximation error of the best one-hidden-layer network with n
    sigmoidal units, for any probability measure mu on the ball of radius r:

        inf_{f_n} int (f - f_n)^2 dmu <= (2 r C_f)^2 / n,   C_f = int |w| |F(w)| dw

    (Barron 1993, IEEE Trans. Inf. Theory 39, 930, Thm. 1; F the Fourier distribution of f, f(x) = int e^{i w.x}
    F(w) dw). The rate 1/n does not depend on the input dimension; d enters only through C_f."""
    c = check_positive("c_f", c_f, allow_zero=True)
    n = check_int("n", n, minimum=1)
    r = check_positive("radius", radius)
    return (2.0 * r * c) ** 2 / n


def barron_width(c_f: float, eps: float, *, radius: float = 1.0) -> int:
    """Smallest width n for which Barron's bound (2 r C_f)^2 / n is <= eps (Barron 1993, Thm. 1)."""
    c = check_positive("c_f", c_f, allow_zero=True)
    e = check_positive("eps", eps)
    r = check_positive("radius", radius)
    return max(1, math.ceil((2.0 * r * c) ** 2 / e * (1 - 1e-12)))


def barron_constant_gaussian(d: int, *, sigma: float = 1.0) -> float:
    """C_f = int |w| |F(w)| dw for the Gaussian bump f(x) = exp(-|x|^2 / (2 sigma^2)) in d dimensions.

    Its Fourier distribution F is the N(0, I/sigma^2) density (f(x) = E_w e^{i w.x}), so C_f = E|w| with
    w ~ N(0, I/sigma^2): C_f = sqrt(2) Gamma((d+1)/2) / (Gamma(d/2) sigma) ~ sqrt(d)/sigma (the chi mean;
    Barron 1993, sec. IX lists Gaussians among the functions with C_f growing only polynomially in d)."""
    d = check_int("d", d, minimum=1)
    sg = check_positive("sigma", sigma)
    return float(math.sqrt(2.0) * math.exp(gammaln((d + 1) / 2) - gammaln(d / 2)) / sg)
