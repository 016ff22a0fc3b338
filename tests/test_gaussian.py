"""Gaussian expectations: closed forms vs quadrature, independent references, invariants, edge cases.

Measured when this was written (see the module docstring of sphericalcow.theory.gaussian):
closed vs quadrature <= 2e-15 relative (1-D, K in [1e-3, 50]; 2-D, |rho| <= 0.99 and near-degenerate
|rho| = 1 - eps down to eps = 2^-52); smooth activations vs 30-digit mpmath <= 7e-16 for K up to 1e4.
The tests assert the spec's 1e-10 and, separately, the tighter accuracy the docs promise.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

import sphericalcow.activations as acts
from sphericalcow.activations import activation, available_activations, register_activation
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.gaussian import (
    expect1,
    expect2,
    expect_cross,
    expect_dcross,
    expect_dmean,
    expect_dsq,
    expect_mean,
    expect_sq,
    expect_zssd,
)

TOL = 1e-10  # the specification: |closed - quadrature| <= TOL (1 + |closed|)
DOC = 1e-13  # what the gaussian module docstring promises (measured 2e-15)
DEGENERATE_DOC = 1e-12  # documented for |rho| in (0.99, 1)

CLOSED = ["relu", "leaky_relu:slope=0.1", "leaky_relu:slope=-0.7", "linear", "abs", "erf", "sin"]
SMOOTH_NO_CLOSED = ["tanh", "gelu", "silu", "softplus", "sigmoid"]
ONE_D = {"mean": expect_mean, "dmean": expect_dmean, "sq": expect_sq, "dsq": expect_dsq, "zssd": expect_zssd}
TWO_D = {"cross": expect_cross, "dcross": expect_dcross}
K_GRID = np.concatenate([np.logspace(-3, math.log10(50.0), 40), [0.1, 0.25, 1.0, 2.0]])


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acts, "_REGISTRY", dict(acts._REGISTRY))
    monkeypatch.setattr(acts, "_ALIASES", dict(acts._ALIASES))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / (1.0 + np.abs(b))))


def pair_grid(ks: list[float], rhos: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K11, K22, R = np.meshgrid(np.array(ks), np.array(ks), np.array(rhos), indexing="ij")
    return K11, K22, R * np.sqrt(K11 * K22)


# -- closed forms vs quadrature ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ONE_D))
@pytest.mark.parametrize("name", CLOSED)
def test_closed_vs_quadrature_1d(name: str, kind: str) -> None:
    fn = ONE_D[kind]
    closed = fn(name, K_GRID, "closed")
    quad = fn(name, K_GRID, "quadrature")
    assert rel_err(quad, closed) <= TOL
    assert rel_err(quad, closed) <= DOC
    np.testing.assert_array_equal(fn(name, K_GRID), closed)  # auto = closed when available


@pytest.mark.parametrize("kind", list(TWO_D))
@pytest.mark.parametrize("name", CLOSED)
def test_closed_vs_quadrature_2d(name: str, kind: str) -> None:
    rhos = [-0.99, -0.9, -0.5, -0.1, 0.0, 0.1, 0.5, 0.9, 0.99]
    K11, K22, K12 = pair_grid([1e-3, 0.1, 1.0, 5.0, 50.0], rhos)
    fn = TWO_D[kind]
    closed = fn(name, K11, K22, K12, "closed")
    quad = fn(name, K11, K22, K12, "quadrature")
    assert quad.shape == K11.shape
    assert rel_err(quad, closed) <= TOL
    assert rel_err(quad, closed) <= DOC


@pytest.mark.parametrize("kind", list(TWO_D))
@pytest.mark.parametrize("name", CLOSED)
def test_near_degenerate_correlation(name: str, kind: str) -> None:
    eps = np.array([1e-3, 1e-5, 1e-8, 1e-11, 1e-14, 2.0**-52, 0.0])
    rhos = np.concatenate([1 - eps, eps - 1]).tolist()
    K11, K22, K12 = pair_grid([0.01, 1.0, 50.0], rhos)
    fn = TWO_D[kind]
    closed = fn(name, K11, K22, K12, "closed")
    quad = fn(name, K11, K22, K12, "quadrature")
    assert np.isfinite(quad).all()
    assert rel_err(quad, closed) <= DEGENERATE_DOC


def test_sin_documented_validity_range() -> None:
    """Oscillating sin is resolved up to K = 113 (24 panels 8 wide in z); measured <= 7e-15 to K = 150."""
    K = np.linspace(50.0, 113.0, 8)
    for fn in ONE_D.values():
        assert rel_err(fn("sin", K, "quadrature"), fn("sin", K, "closed")) <= TOL
    K11, K22, K12 = pair_grid([60.0, 113.0], [-0.9, 0.3, 0.99])
    for fn in TWO_D.values():
        assert rel_err(fn("sin", K11, K22, K12, "quadrature"), fn("sin", K11, K22, K12, "closed")) <= TOL


def test_closed_forms_spot_values() -> None:
    """Hand-checked values, independent of the implementation's formulas."""
    assert expect_sq("relu", 3.0) == 1.5
    assert expect_dsq("relu", 3.0) == 0.5
    assert expect_zssd("relu", 3.0) == 1.5
    assert expect_cross("relu", 2.0, 2.0, 0.0) == pytest.approx(2.0 / (2 * math.pi), rel=1e-15)  # J1(pi/2)
    assert expect_dcross("relu", 1.0, 4.0, 0.0) == pytest.approx(0.25, rel=1e-15)
    assert expect_dcross("abs", 1.0, 1.0, 0.5) == pytest.approx(2 / math.pi * math.asin(0.5), rel=1e-14)
    assert expect_cross("abs", 1.0, 1.0, 0.0) == pytest.approx(2 / math.pi, rel=1e-15)  # E|z|^2
    assert expect_cross("linear", 2.0, 3.0, -1.2) == pytest.approx(-1.2, rel=1e-15)
    assert expect_sq("erf", 1.0) == pytest.approx(2 / math.pi * math.asin(2 / 3), rel=1e-15)
    assert expect_dsq("erf", 1.0) == pytest.approx(4 / math.pi / math.sqrt(5), rel=1e-15)
    assert expect_sq("sin", 2.0) == pytest.approx(math.exp(-2) * math.sinh(2), rel=1e-15)
    assert expect_cross("sin", 1.0, 2.0, 0.7) == pytest.approx(math.exp(-1.5) * math.sinh(0.7), rel=1e-15)
    assert expect_dcross("sin", 1.0, 2.0, 0.7) == pytest.approx(math.exp(-1.5) * math.cosh(0.7), rel=1e-15)
    assert expect_cross("sin", 400.0, 400.0, 400.0) == pytest.approx(0.5, rel=1e-15)  # no overflow
    leaky = activation("leaky_relu:slope=0.1")
    assert expect_sq(leaky, 2.0) == pytest.approx(1.01, rel=1e-15)
    assert expect_mean(leaky, 2.0) == pytest.approx(0.9 * math.sqrt(2 / (2 * math.pi)), rel=1e-15)


# -- independent references --------------------------------------------------------------------------------

# mpmath.quad at 30 digits (maxdegree=10) of F(z) exp(-z^2/2K)/sqrt(2 pi K) over breakpoints 0, +-2^j sqrt(K)
# (j = 0..3) and +-{0.5, 1, ..., 32} resp. +-{0.25, 0.75, ..., 48}: the two breakpoint sets agree to 1e-20.
MPMATH = {
    ("tanh", "sq", 0.05): 0.045602101143321204842,
    ("tanh", "sq", 1): 0.39429449039784117442,
    ("tanh", "sq", 50): 0.88807451168029498606,
    ("tanh", "sq", 10000): 0.9920214824805130433,
    ("tanh", "dsq", 0.05): 0.9143882811893379806,
    ("tanh", "dsq", 1): 0.46440290244826824197,
    ("tanh", "dsq", 50): 0.074984095897567672619,
    ("tanh", "dsq", 10000): 0.0053191446440146221396,
    ("tanh", "zssd", 0.05): 0.041718452292732817574,
    ("tanh", "zssd", 1): 0.18179768814048707475,
    ("tanh", "zssd", 50): 0.055065552664649498749,
    ("tanh", "zssd", 10000): 0.0039889306995302690993,
    ("sigmoid", "sq", 0.05): 0.25304952238645412454,
    ("sigmoid", "sq", 1): 0.29337903585809296274,
    ("sigmoid", "sq", 50): 0.4453206548501866847,
    ("sigmoid", "sq", 10000): 0.4960112332031644197,
    ("sigmoid", "dsq", 0.05): 0.061002271714197416253,
    ("sigmoid", "dsq", 1): 0.044836241350194371793,
    ("sigmoid", "dsq", 50): 0.0092845988112463736189,
    ("sigmoid", "dsq", 10000): 0.00066486092372651972515,
    ("sigmoid", "zssd", 0.05): 0.0029765788167909655513,
    ("sigmoid", "zssd", 1): 0.031198241979629596747,
    ("sigmoid", "zssd", 50): 0.02570619294162316044,
    ("sigmoid", "zssd", 10000): 0.0019937276176902489272,
    ("softplus", "sq", 0.05): 0.50167889894003131087,
    ("softplus", "sq", 1): 0.92124590885930027868,
    ("softplus", "sq", 50): 25.129430340959851651,
    ("softplus", "sq", 10000): 5000.0095886226269046,
    ("softplus", "dsq", 0.05): 0.25304952238645412454,
    ("softplus", "dsq", 1): 0.29337903585809296274,
    ("softplus", "dsq", 50): 0.4453206548501866847,
    ("softplus", "dsq", 10000): 0.4960112332031644197,
    ("softplus", "zssd", 0.05): 0.021285986996929101776,
    ("softplus", "zssd", 1): 0.4533019724796301102,
    ("softplus", "zssd", 50): 24.940965941004675834,
    ("softplus", "zssd", 10000): 4999.9952080913090653,
    ("gelu", "sq", 0.05): 0.01360169457636989874,
    ("gelu", "sq", 1): 0.42522148257029867492,
    ("gelu", "sq", 50): 24.97414376159359311,
    ("gelu", "sq", 10000): 4999.9981245829413409,
    ("gelu", "dsq", 0.05): 0.27893154080610858493,
    ("gelu", "dsq", 1): 0.45585086564928712211,
    ("gelu", "dsq", 50): 0.5073227310428713798,
    ("gelu", "dsq", 10000): 0.50056246795620249712,
    ("gelu", "zssd", 0.05): 0.014618354900896405901,
    ("gelu", "zssd", 1): 0.48648024872827556931,
    ("gelu", "zssd", 50): 25.012273010347589226,
    ("gelu", "zssd", 10000): 5000.000937466622667,
    ("silu", "sq", 0.05): 0.012950134001001802782,
    ("silu", "sq", 1): 0.35577551981735215623,
    ("silu", "sq", 50): 24.836652036671650279,
    ("silu", "sq", 10000): 4999.9868843854491755,
    ("silu", "dsq", 0.05): 0.26190916123432650908,
    ("silu", "dsq", 1): 0.379482351632829309,
    ("silu", "dsq", 50): 0.50832444977483434289,
    ("silu", "dsq", 10000): 0.50085612793083836843,
    ("silu", "zssd", 0.05): 0.013382517414849512423,
    ("silu", "zssd", 1): 0.41718025913171888614,
    ("silu", "zssd", 50): 25.062283603835423898,
    ("silu", "zssd", 10000): 5000.0065487539353406,
}


@pytest.mark.parametrize("name", SMOOTH_NO_CLOSED)
def test_smooth_activations_vs_mpmath(name: str) -> None:
    for kind in ("sq", "dsq", "zssd"):
        ks = [k for (n, kd, k) in MPMATH if n == name and kd == kind]
        got = ONE_D[kind](name, np.array(ks, dtype=float))
        want = np.array([MPMATH[(name, kind, k)] for k in ks])
        assert rel_err(got, want) <= DOC, (kind, got - want)


def test_tanh_cross_vs_adaptive_scipy_reference() -> None:
    # scipy.integrate.quad nested (epsrel 1e-14) gave 0.8030891050257539 for K11 = K22 = 20, rho = 0.99
    assert expect_cross("tanh", 20.0, 20.0, 19.8) == pytest.approx(0.8030891050257539, rel=1e-13)


def _mc(act_name: str, K: float, n: int = 10**6) -> dict[str, tuple[float, float]]:
    """Monte Carlo (mean, standard error) of every 1-D kind from one fixed-seed sample."""
    rng = np.random.default_rng(12345)
    z = rng.standard_normal(n) * math.sqrt(K)
    a = activation(act_name)
    s, d = a(z), a.derivative(z)
    samples = {"mean": s, "dmean": d, "sq": s * s, "dsq": d * d, "zssd": z * s * d}
    return {k: (float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))) for k, v in samples.items()}


@pytest.mark.parametrize("name", SMOOTH_NO_CLOSED)
def test_monte_carlo_1d(name: str) -> None:
    for K in (0.5, 4.0):
        for kind, (mean, se) in _mc(name, K).items():
            assert abs(float(ONE_D[kind](name, K)) - mean) <= 5 * se, (kind, K)


@pytest.mark.parametrize("name", SMOOTH_NO_CLOSED)
def test_monte_carlo_2d(name: str) -> None:
    rng = np.random.default_rng(54321)
    n = 10**6
    K11, K22, K12 = 1.0, 3.0, -1.2
    L = np.linalg.cholesky(np.array([[K11, K12], [K12, K22]]))
    z1, z2 = L @ rng.standard_normal((2, n))
    a = activation(name)
    for fn, f in ((expect_cross, a), (expect_dcross, a.derivative)):
        vals = f(z1) * f(z2)
        se = vals.std(ddof=1) / math.sqrt(n)
        assert abs(float(fn(name, K11, K22, K12)) - vals.mean()) <= 5 * se


# -- invariants ----------------------------------------------------------------------------------------------


ALL_NAMES = CLOSED + SMOOTH_NO_CLOSED


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("method", ["auto", "quadrature"])
def test_rho_one_and_zero_invariants(name: str, method: str) -> None:
    K = np.array([0.01, 1.0, 10.0])
    # rho = 1, K11 = K22: <sigma(z1) sigma(z2)> = <sigma^2>
    assert rel_err(expect_cross(name, K, K, K, method), expect_sq(name, K, method)) <= 1e-12
    assert rel_err(expect_dcross(name, K, K, K, method), expect_dsq(name, K, method)) <= 1e-12
    # rho = 0: independence factorises
    K2 = np.array([2.0, 0.3, 7.0])
    cross0 = expect_cross(name, K, K2, 0.0, method)
    assert rel_err(cross0, expect_mean(name, K, method) * expect_mean(name, K2, method)) <= 1e-12
    dcross0 = expect_dcross(name, K, K2, 0.0, method)
    assert rel_err(dcross0, expect_dmean(name, K, method) * expect_dmean(name, K2, method)) <= 1e-12


@pytest.mark.parametrize("name", ALL_NAMES)
def test_symmetry_and_cauchy_schwarz(name: str) -> None:
    K11, K22, K12 = pair_grid([0.05, 1.0, 20.0], [-0.95, -0.3, 0.4, 0.97])
    c = expect_cross(name, K11, K22, K12, "quadrature")
    assert rel_err(expect_cross(name, K22, K11, K12, "quadrature"), c) <= 1e-12  # swapped roles of u and v
    sq1, sq2 = expect_sq(name, K11), expect_sq(name, K22)
    assert np.all(c**2 <= sq1 * sq2 * (1 + 1e-12))
    d = expect_dcross(name, K11, K22, K12, "quadrature")
    assert np.all(d**2 <= expect_dsq(name, K11) * expect_dsq(name, K22) * (1 + 1e-12))


def test_odd_activation_at_rho_minus_one() -> None:
    K = np.array([0.2, 3.0, 40.0])
    for name in ("tanh", "erf", "sin"):
        assert rel_err(expect_cross(name, K, K, -K, "quadrature"), -expect_sq(name, K)) <= 1e-12


@pytest.mark.parametrize("name", ALL_NAMES)
def test_zssd_heat_equation_identity(name: str) -> None:
    """<z sigma sigma'>_K = <sigma^2 (z^2 - K)>_K / (2K), both sides by quadrature."""
    a = activation(name)
    K = np.array([1e-3, 0.05, 0.7, 3.0, 25.0])
    lhs = expect_zssd(a, K, "quadrature")
    rhs = np.array([expect1(lambda z, k=k: a(z) ** 2 * (z * z - k), k, kinks=a.kinks) / (2 * k) for k in K])
    assert rel_err(lhs, rhs) <= 1e-10


def test_relu_exact_values_by_quadrature() -> None:
    K = K_GRID
    assert rel_err(expect_sq("relu", K, "quadrature"), K / 2) <= 1e-14
    assert rel_err(expect_dsq("relu", K, "quadrature"), np.full_like(K, 0.5)) <= 1e-14


def test_hermite_and_legendre_agree_for_smooth_small_K() -> None:
    K = np.logspace(-3, -1, 7)
    for name in [*SMOOTH_NO_CLOSED, "erf", "sin"]:
        a = activation(name)
        for f in (lambda z, a=a: a(z) ** 2, lambda z, a=a: a.derivative(z) ** 2):
            h = expect1(f, K, rule="hermite")
            g = expect1(f, K, rule="legendre")
            assert rel_err(h, g) <= 1e-14


# -- kinks: user-registered piecewise functions ------------------------------------------------------------


def test_registered_relu_copy_matches_closed_forms() -> None:
    mine = register_activation("relu_copy", lambda t: torch.clamp(t, min=0.0), kinks=(0.0,))
    for kind, fn in ONE_D.items():
        assert rel_err(fn(mine, K_GRID), fn("relu", K_GRID)) <= TOL, kind
    K11, K22, K12 = pair_grid([0.01, 1.0, 30.0], [-0.99, -0.5, 0.0, 0.7, 0.99, 1.0])
    for kind, fn in TWO_D.items():
        assert rel_err(fn(mine, K11, K22, K12), fn("relu", K11, K22, K12)) <= TOL, kind


def test_registered_relu_copy_without_kinks_is_worse() -> None:
    """Measured: kink-free relu copy gives mean errors ~8e-5..8e-4 at K <= 0.1 (Gauss-Hermite across the
    kink; K > 0.1 happens to put a breakpoint at z = 0 and is exact), 7e-10 for cross and 3e-7 for dcross
    near rho = 0.99 (no grading where the kink crosses); sq/dsq/zssd stay exact by the symmetry of the
    Gauss-Hermite nodes.  Only the robust one is asserted."""
    blind = register_activation("relu_blind", lambda t: torch.clamp(t, min=0.0))
    K = np.array([1e-3, 0.01, 0.1])
    assert rel_err(expect_mean(blind, K), expect_mean("relu", K)) > 1e-5
    good = register_activation("relu_seen", lambda t: torch.clamp(t, min=0.0), kinks=(0.0,))
    assert rel_err(expect_mean(good, K), expect_mean("relu", K)) <= 1e-15


C0 = 0.5  # kink of the shifted relu (z - C0)_+, away from every default breakpoint


def _shifted_relu_1d(K: np.ndarray) -> dict[str, np.ndarray]:
    s = np.sqrt(K)
    a = C0 / s
    return {
        "mean": s * norm.pdf(a) - C0 * norm.sf(a),
        "sq": (K + C0**2) * norm.sf(a) - C0 * s * norm.pdf(a),
        "dsq": norm.sf(a),
    }


def _shifted_relu_2d(K11: float, K22: float, rho: float, deriv: bool) -> float:
    """Semi-analytic: inner Gaussian integral in closed form, outer by adaptive scipy quad."""
    s1, s2 = math.sqrt(K11), math.sqrt(K22)
    b, c2 = s2 * math.sqrt(1 - rho * rho), s2 * rho

    def integrand(u: float) -> float:
        a = c2 * u - C0
        h = norm.cdf(a / b) if deriv else a * norm.cdf(a / b) + b * norm.pdf(a / b)
        return (1.0 if deriv else s1 * u - C0) * h * norm.pdf(u)

    lo = C0 / s1
    pts = [C0 / c2] if rho != 0 and lo < C0 / c2 < 12 else None
    return integrate.quad(integrand, lo, 12, points=pts, epsabs=1e-16, epsrel=1e-13, limit=500)[0]


def test_shifted_relu_kink_splitting() -> None:
    f = lambda z: np.maximum(z - C0, 0.0)  # noqa: E731
    df = lambda z: (z > C0).astype(float)  # noqa: E731
    K = np.array([1e-3, 0.05, 0.5, 1.0, 5.0, 50.0])
    ref = _shifted_relu_1d(K)
    with_kink = {
        "mean": expect1(f, K, kinks=(C0,)),
        "sq": expect1(lambda z: f(z) ** 2, K, kinks=(C0,)),
        "dsq": expect1(df, K, kinks=(C0,)),
    }
    for kind, v in with_kink.items():
        assert rel_err(v, ref[kind]) <= 1e-14, kind
    # without the kink the piecewise-polynomial integrand is integrated across a jump in f'' (or f): worse
    # by orders of magnitude (measured 1e-6..3e-5 for sq, 1e-3.. for dsq at K >= 0.05)
    assert rel_err(expect1(lambda z: f(z) ** 2, K[1:], kinks=()), ref["sq"][1:]) > 1e-8
    assert rel_err(expect1(df, K[1:], kinks=()), ref["dsq"][1:]) > 1e-6
    cases = [(1.0, 1.0, 0.5), (0.3, 5.0, -0.9), (2.0, 2.0, 0.99), (20.0, 1.0, 0.999), (1.0, 1.0, 0.0)]
    for K11, K22, rho in cases:
        K12 = rho * math.sqrt(K11 * K22)
        got = expect2(f, f, K11, K22, K12, kinks_f=(C0,), kinks_g=(C0,))
        assert got == pytest.approx(_shifted_relu_2d(K11, K22, rho, False), rel=1e-12, abs=1e-14)
        got_d = expect2(df, df, K11, K22, K12, kinks_f=(C0,), kinks_g=(C0,))
        assert got_d == pytest.approx(_shifted_relu_2d(K11, K22, rho, True), rel=1e-12, abs=1e-14)
    # measured without kinks: 1e-7..2e-5 (cross), 2e-5..9e-3 (dcross)
    blind = expect2(df, df, 1.0, 1.0, 0.5, kinks_f=(), kinks_g=())
    assert abs(blind - _shifted_relu_2d(1.0, 1.0, 0.5, True)) > 1e-6


# -- conventions and edge cases ------------------------------------------------------------------------------


def test_zero_variance_is_point_mass() -> None:
    for method in ("auto", "quadrature"):
        assert expect_sq("sigmoid", 0.0, method) == 0.25
        assert expect_dsq("tanh", 0.0, method) == 1.0
        assert expect_dsq("relu", 0.0, method) == 0.0  # relu'(0) = 0 (torch), though the K -> 0+ limit is 1/2
        assert expect_zssd("gelu", 0.0, method) == 0.0
        assert expect_cross("softplus", 0.0, 0.0, 0.0, method) == pytest.approx(math.log(2) ** 2, rel=1e-15)
        # one degenerate variance: f(0) <g>_{K22}
        got = expect_cross("softplus", 0.0, 2.0, 0.0, method)
        assert got == pytest.approx(math.log(2) * float(expect_mean("softplus", 2.0)), rel=1e-14)
        got = expect_dcross("erf", 3.0, 0.0, 0.0, method)
        assert got == pytest.approx(2 / math.sqrt(math.pi) * float(expect_dmean("erf", 3.0)), rel=1e-14)
        got = expect_dcross("leaky_relu:slope=0.2", 0.0, 1.0, 0.0, method)
        assert got == pytest.approx(0.2 * 0.6, rel=1e-14)  # sigma'(0) = slope times <sigma'> = (1 + slope)/2
    assert expect1(np.cos, 0.0) == 1.0
    assert expect2(np.cos, np.exp, 0.0, 0.0, 0.0) == 1.0
    mixed = expect_sq("tanh", np.array([0.0, 1.0]))
    assert mixed[0] == 0.0 and mixed[1] == pytest.approx(MPMATH[("tanh", "sq", 1)], rel=1e-14)


def test_rho_is_clipped_but_gross_violations_raise() -> None:
    for method in ("closed", "quadrature"):
        v = expect_cross("relu", 1.0, 1.0, 1.0 + 1e-12, method)
        assert np.isfinite(v) and v == pytest.approx(0.5, rel=1e-12)
        v = expect_dcross("erf", 2.0, 2.0, -2.0 * (1 + 1e-10), method)
        assert np.isfinite(v)
    assert np.isfinite(expect_cross("tanh", 0.0, 1.0, 1e-14))
    with pytest.raises(SphericalCowError) as exc:
        expect_cross("tanh", 1.0, 1.0, 1.1)
    assert "K12=1.1" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "abc", [1.0, -0.5]])
def test_bad_variances_raise(bad: object) -> None:
    for call in (
        lambda: expect_sq("tanh", bad),
        lambda: expect1(np.tanh, bad),
        lambda: expect_cross("relu", bad, 1.0, 0.0),
        lambda: expect2(np.tanh, np.tanh, 1.0, bad, 0.0),
    ):
        with pytest.raises(SphericalCowError) as exc:
            call()
        assert "\n" not in str(exc.value)
    with pytest.raises(SphericalCowError):
        expect_cross("relu", 1.0, 1.0, float("nan"))


def test_bad_arguments_raise() -> None:
    with pytest.raises(SphericalCowError, match="method='exact'"):
        expect_sq("relu", 1.0, method="exact")
    with pytest.raises(SphericalCowError, match="no closed form"):
        expect_sq("tanh", 1.0, method="closed")
    with pytest.raises(SphericalCowError, match="no closed form"):
        expect_cross("gelu", 1.0, 1.0, 0.5, method="closed")
    with pytest.raises(SphericalCowError, match="unknown activation"):
        expect_dsq("relu2", 1.0)
    with pytest.raises(SphericalCowError, match="rule="):
        expect1(np.tanh, 1.0, rule="simpson")
    with pytest.raises(SphericalCowError, match="n="):
        expect1(np.tanh, 1.0, n=1)
    with pytest.raises(SphericalCowError, match="n=301"):
        expect1(np.tanh, 1.0, n=301)
    assert expect1(np.cos, 0.05, n=300, rule="hermite") == pytest.approx(math.exp(-0.025), rel=1e-14)
    with pytest.raises(SphericalCowError, match="not callable"):
        expect1(3.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(SphericalCowError, match="kinks"):
        expect1(np.tanh, 1.0, kinks=(float("inf"),))
    with pytest.raises(SphericalCowError, match="shapes"):
        expect_cross("relu", np.ones(2), np.ones(3), 0.0)


def test_shapes_scalars_and_kink_defaults() -> None:
    v = expect_sq("tanh", 1.0)
    assert isinstance(v, np.float64)
    out = expect_cross("tanh", np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0, 0.5]), 0.3)
    assert out.shape == (3, 4)
    assert expect_sq("relu", np.ones((2, 0))).shape == (2, 0)
    relu = activation("relu")
    # kinks default to those of an Activation or of its bound derivative
    assert expect1(relu.derivative, 0.05) == pytest.approx(0.5, rel=1e-15)
    assert expect1(relu, 0.05) == pytest.approx(math.sqrt(0.05 / (2 * math.pi)), rel=1e-14)
    want = float(expect_cross("relu", 1.0, 1.0, 0.99))
    assert expect2(relu, relu, 1.0, 1.0, 0.99) == pytest.approx(want, rel=1e-14)
    # n: more nodes per panel change nothing visible
    assert expect1(np.tanh, 2.0, n=24) == pytest.approx(float(expect1(np.tanh, 2.0)), abs=1e-16)


def test_every_registered_builtin_has_working_expectations() -> None:
    for name in available_activations():
        for fn in ONE_D.values():
            assert np.isfinite(fn(name, np.array([0.0, 0.3, 30.0]))).all()


def test_vectorised_speed() -> None:
    K = np.exp(np.random.default_rng(0).uniform(math.log(1e-3), math.log(50.0), 10_000))
    expect_sq("tanh", K[:10])  # warm caches
    t0 = time.perf_counter()
    v = expect_sq("tanh", K)
    elapsed = time.perf_counter() - t0
    assert v.shape == K.shape and np.isfinite(v).all()
    assert elapsed < 1.0  # measured ~0.15 s
