"""Infinite-width NNGP / NTK kernels (sphericalcow.theory.kernels).

* closed forms derived here, independently of the library (arc-cosine kernels, deep linear networks, erf, sin,
  the standard-parametrization NTK at depth 1);
* the library's routes against each other ("closed", "quadrature", "interpolation") and against the layer-by-layer
  NNGP of ``kernel_profile``;
* Monte Carlo over real random networks of large width (familywise Student-t confidence intervals);
* invariants (symmetry, PSD, blocking, dtype, sub-blocks, x2=None), numerical safety and input validation.

Every tolerance is stated next to the check with the reason for its size.
"""

import importlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

import sphericalcow as sc
from sphericalcow import SphericalCowError
from sphericalcow import activations as act_mod
from sphericalcow.theory.recursions import kernel_profile

km = importlib.import_module("sphericalcow.theory.kernels")  # the module (sc.theory.kernels is the function)

TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def _inputs(n, d, seed, *, norms=None, corr=0.0):
    """n Gaussian inputs in R^d; ``norms``: (lo, hi) -> each row rescaled to |x|/sqrt(d) uniform in [lo, hi]
    (``(1, 1)``: all on the sphere of radius sqrt(d)); ``corr`` > 0 mixes in a shared direction."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if corr:
        x = math.sqrt(1 - corr) * x + math.sqrt(corr) * rng.normal(size=(1, d))
    if norms is not None:
        x *= math.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
        x *= rng.uniform(norms[0], norms[1], size=(n, 1))
    return x


def _rel(a, b):
    """max |a - b| / max |b| (both as float64 numpy)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _np(k):
    return k.detach().numpy()


def _J1(q1, q2, theta):
    """<relu(z1) relu(z2)> for Var = q1, q2 and angle theta (Cho & Saul 2009, order-1 arc-cosine kernel / 2)."""
    return np.sqrt(q1 * q2) * (np.sin(theta) + (math.pi - theta) * np.cos(theta)) / TWO_PI


def _layer1(x1, x2, cw, cb):
    K = cb + cw * (x1 @ x2.T) / x1.shape[1]
    q1 = cb + cw * np.einsum("ij,ij->i", x1, x1) / x1.shape[1]
    q2 = cb + cw * np.einsum("ij,ij->i", x2, x2) / x2.shape[1]
    return K, q1[:, None], q2[None, :]


def _angle(K, q1, q2):
    return np.arccos(np.clip(K / np.sqrt(q1 * q2), -1.0, 1.0))


# ----------------------------------------------------------------------------------------------------------
# 1. closed forms derived in the test
# ----------------------------------------------------------------------------------------------------------

# rounding only: a handful of flops per entry in different orders, plus arccos at |rho| <= 0.95 (condition
# number <= 3.2), so the agreement is a few ulps of the largest entry.
CLOSED_TOL = 1e-14


@pytest.mark.parametrize("slope", [0.0, 0.2, 0.7])
def test_depth1_scale_invariant_nngp_and_ntk_match_arccos_formulas(slope):
    """sigma = relu(z) - slope relu(-z) (slope 0: relu, else leaky_relu).  (z1, -z2) has angle pi - t, so
    <s s'> = (1 + s^2) J1(t) - 2 s J1(pi - t) and <s' s'> = [(1 + s^2)(pi - t) + 2 s t] / (2 pi);
    K1 = cb + cw x.x'/d, NNGP = cb + cw <s s'>, NTK = NNGP + cw <s' s'> K1."""
    name = "relu" if slope == 0 else f"leaky_relu:slope={slope}"
    cw, cb, d = 1.7, 0.3, 5
    x1, x2 = _inputs(7, d, 0), _inputs(4, d, 1)
    arch = sc.MLP(d, 64, 1, activation=name, cw=cw, cb=cb)
    for a, b, k in ((x1, x1, sc.kernels(arch, x1)), (x1, x2, sc.kernels(arch, x1, x2))):
        K1, q1, q2 = _layer1(a, b, cw, cb)
        t = _angle(K1, q1, q2)
        if a is b:
            np.fill_diagonal(t, 0.0)
        ss = (1 + slope**2) * _J1(q1, q2, t) - 2 * slope * _J1(q1, q2, math.pi - t)
        dd = ((1 + slope**2) * (math.pi - t) + 2 * slope * t) / TWO_PI
        nngp = cb + cw * ss
        ntk = nngp + cw * dd * K1
        assert _rel(_np(k.nngp), nngp) < CLOSED_TOL
        assert _rel(_np(k.ntk), ntk) < CLOSED_TOL


def test_depth1_relu_readout_formula_written_out():
    """The brief's form: NNGP = cb + cw sqrt(q q')/(2 pi) (sin t + (pi - t) cos t) with q = K1_aa (cw multiplies
    the relu expectation, which carries 1/(2 pi)); NTK = NNGP + cw (pi - t)/(2 pi) K1."""
    cw, cb, d = 2.0, 0.1, 3
    x = _inputs(9, d, 2, corr=0.5)
    k = sc.kernels(sc.MLP(d, 10, 1, activation="relu", cw=cw, cb=cb), x)
    K1 = cb + cw * x @ x.T / d
    q = np.diag(K1)
    t = np.arccos(np.clip(K1 / np.sqrt(np.outer(q, q)), -1, 1))
    np.fill_diagonal(t, 0.0)
    nngp = cb + cw * np.sqrt(np.outer(q, q)) / TWO_PI * (np.sin(t) + (math.pi - t) * np.cos(t))
    ntk = nngp + cw * (math.pi - t) / TWO_PI * K1
    assert _rel(_np(k.nngp), nngp) < CLOSED_TOL
    assert _rel(_np(k.ntk), ntk) < CLOSED_TOL


@pytest.mark.parametrize(("cw", "cb", "depth"), [(0.9, 0.2, 7), (1.0, 0.0, 4), (1.3, 0.05, 3)])
def test_deep_linear_network_polynomial_recursion(cw, cb, depth):
    """sigma(z) = z: K^{l+1} = cb + cw K^l exactly, so K^l = cb sum_{j<l-1} cw^j + cw^{l-1} K^1 and
    Theta^{L+1} = sum_{l=1}^{L+1} cw^{L+1-l} K^l (each layer adds its own K and multiplies the rest by cw)."""
    d = 6
    x1, x2 = _inputs(8, d, 3), _inputs(5, d, 4)
    arch = sc.MLP(d, 32, depth, activation="linear", cw=cw, cb=cb)
    for a, b in ((x1, None), (x1, x2)):
        bb = a if b is None else b
        K1 = cb + cw * a @ bb.T / d
        Ks = [cb * sum(cw**j for j in range(ell - 1)) + cw ** (ell - 1) * K1 for ell in range(1, depth + 2)]
        ntk = sum(cw ** (depth + 1 - ell) * Ks[ell - 1] for ell in range(1, depth + 2))
        k = sc.kernels(arch, a, b)
        # the polynomial has <= 8 terms of one sign (cb, cw >= 0 but x.x' of either sign): a few ulps of max|K|
        assert _rel(_np(k.nngp), Ks[-1]) < CLOSED_TOL
        assert _rel(_np(k.ntk), ntk) < CLOSED_TOL


def test_deep_linear_standard_parametrization_uses_each_width():
    """Standard parametrization, sigma = z, widths n_1..n_L: Theta^1 = x.x' + 1 and
    Theta^{l+1} = n_l (K^{l+1} - cb)/cw + 1 + cw Theta^l = n_l K^l + 1 + cw Theta^l."""
    cw, cb, d, widths = 1.1, 0.2, 4, [3, 50, 7]
    x = _inputs(6, d, 5)
    arch = sc.MLP(d, widths, 3, activation="linear", cw=cw, cb=cb, parametrization="standard")
    K = cb + cw * x @ x.T / d
    T = x @ x.T + 1.0
    for n in widths:
        T = n * K + 1.0 + cw * T
        K = cb + cw * K
    k = sc.kernels(arch, x)
    assert _rel(_np(k.nngp), K) < CLOSED_TOL
    assert _rel(_np(k.ntk), T) < CLOSED_TOL
    # in NTK parametrization the widths do not enter at all (bitwise)
    a1 = sc.MLP(d, widths, 3, activation="linear", cw=cw, cb=cb)
    a2 = sc.MLP(d, 1000, 3, activation="linear", cw=cw, cb=cb)
    assert torch.equal(sc.ntk(a1, x), sc.ntk(a2, x))


def test_depth1_erf_williams_formula():
    """Williams (1997): <erf(z1) erf(z2)> = (2/pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22))); with
    erf' = (2/sqrt(pi)) exp(-z^2) and <exp(-z^T z)> = det(I + 2 K)^(-1/2):
    <erf' erf'> = (4/pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2)."""
    cw, cb, d = 1.4, 0.2, 4
    x1, x2 = _inputs(6, d, 6), _inputs(5, d, 7)
    arch = sc.MLP(d, 16, 1, activation="erf", cw=cw, cb=cb)
    for a, b in ((x1, x1), (x1, x2)):
        K1, q1, q2 = _layer1(a, b, cw, cb)
        den = (1 + 2 * q1) * (1 + 2 * q2)
        nngp = cb + cw * (2 / math.pi) * np.arcsin(2 * K1 / np.sqrt(den))
        ntk = nngp + cw * (4 / math.pi) / np.sqrt(den - 4 * K1**2) * K1
        k = sc.kernels(arch, a, None if a is b else b)
        # arcsin vs the library's atan2 form: arcsin(u) has condition u/(sqrt(1-u^2) arcsin u) <= ~2 for these
        # inputs (|u| <= 0.8), so a few ulps
        assert _rel(_np(k.nngp), nngp) < 1e-14
        assert _rel(_np(k.ntk), ntk) < 1e-14


def test_depth1_sin_formula():
    """sin: E[cos(z1 -+ z2)] = exp(-(K11 + K22 -+ 2 K12)/2) gives <sin sin> = exp(-(K11 + K22)/2) sinh K12 and
    <cos cos> = exp(-(K11 + K22)/2) cosh K12."""
    cw, cb, d = 0.8, 0.1, 3
    x = _inputs(7, d, 8)
    k = sc.kernels(sc.MLP(d, 16, 1, activation="sin", cw=cw, cb=cb), x)
    K1, q1, q2 = _layer1(x, x, cw, cb)
    g = np.exp(-(q1 + q2) / 2)
    nngp = cb + cw * g * np.sinh(K1)
    ntk = nngp + cw * g * np.cosh(K1) * K1
    assert _rel(_np(k.nngp), nngp) < 1e-14
    assert _rel(_np(k.ntk), ntk) < 1e-14


# ----------------------------------------------------------------------------------------------------------
# 7. standard parametrization NTK at depth 1, written out
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 37, 4096])
def test_standard_parametrization_depth1_relu(width):
    """Standard parametrization (W, b stored with their init variances): d f/d W2_j = sigma(z_j) gives
    n_1 <s s'> (n_1 terms of mean <s s'>), d f/d b2 = 1 gives 1, and the first layer's d z_i/d(W1_i, b1_i) =
    (x, 1) gives (x.x' + 1) times sum_i W2_i^2 s'_i s'_i' -> cw <s' s'>:
    Theta = n_1 <s s'> + 1 + cw <s' s'> (x.x' + 1), with <s s'> = J1 and <s' s'> = (pi - t)/(2 pi) for relu."""
    cw, cb, d = 2.0, 0.25, 5
    x1, x2 = _inputs(6, d, 9), _inputs(3, d, 10)
    arch = sc.MLP(d, width, 1, activation="relu", cw=cw, cb=cb, parametrization="standard")
    K1, q1, q2 = _layer1(x1, x2, cw, cb)
    t = _angle(K1, q1, q2)
    ntk = width * _J1(q1, q2, t) + 1.0 + cw * (math.pi - t) / TWO_PI * (x1 @ x2.T + 1.0)
    assert _rel(_np(sc.ntk(arch, x1, x2)), ntk) < CLOSED_TOL
    # the NNGP is the same in both parametrizations (same forward statistics; different code paths: rounding)
    arch_ntk = sc.MLP(d, width, 1, activation="relu", cw=cw, cb=cb)
    assert _rel(_np(sc.nngp(arch, x1, x2)), _np(sc.nngp(arch_ntk, x1, x2))) < CLOSED_TOL


# ----------------------------------------------------------------------------------------------------------
# 2. routes against each other, and against kernel_profile
# ----------------------------------------------------------------------------------------------------------

# closed vs per-entry quadrature: the quadrature is accurate to ~1e-15 relative for these smooth / split-at-kink
# integrands (measured <= 2e-15, diagonals included: the symmetric route puts rho = 1 exactly on the diagonal);
# 1e-13 leaves room for other platforms' libm while still catching any formula slip.
ROUTE_TOL = 1e-13


@pytest.mark.parametrize(
    ("act", "variant"),
    [
        *((a, "plain") for a in ("relu", "leaky_relu:slope=0.2", "abs", "erf", "sin")),
        # the fused scale-invariant layer step serves plain NTK-parametrized networks only; these take the
        # general closed-form map
        *((a, v) for a in ("relu", "leaky_relu:slope=0.2") for v in ("residual", "standard")),
    ],
)
def test_closed_matches_quadrature(act, variant):
    d = 5
    x1, x2 = _inputs(6, d, 11), _inputs(4, d, 12)
    kw = {"residual": {"residual": True, "cw": 0.5}, "standard": {"parametrization": "standard"}}.get(variant, {})
    arch = sc.MLP(d, 8, 3, **({"activation": act, "cw": 1.5, "cb": 0.1} | kw))
    for b in (None, x2):
        kc = sc.kernels(arch, x1, b, method="closed")
        kq = sc.kernels(arch, x1, b, method="quadrature")
        ka = sc.kernels(arch, x1, b)  # auto = closed for these
        for g in ("nngp", "ntk"):
            assert torch.equal(ka[g], kc[g])
            assert _rel(_np(kq[g]), _np(kc[g])) < ROUTE_TOL, (act, g)


def test_closed_vs_quadrature_for_nearly_identical_inputs_is_limited_by_the_quadrature():
    """x and x + 1e-9 noise: 1 - rho ~ 1e-18 rounds to a few ulps.  The closed route snaps rho to 1; the quadrature
    integrates the step function relu' over a numerically singular covariance, which is ill-conditioned (measured
    ~4e-9 relative).  NNGP (a continuous integrand) still agrees to ROUTE_TOL; the NTK only to 1e-7."""
    rng = np.random.default_rng(13)
    x0 = rng.normal(size=(1, 5))
    x = np.concatenate([x0, x0 + 1e-9 * rng.normal(size=(1, 5)), -x0, 1.5 * x0])
    arch = sc.MLP(5, 8, 2, activation="relu", cw=1.5, cb=0.1)
    kc, kq = sc.kernels(arch, x, method="closed"), sc.kernels(arch, x, method="quadrature")
    assert _rel(_np(kq.nngp), _np(kc.nngp)) < ROUTE_TOL
    assert _rel(_np(kq.ntk), _np(kc.ntk)) < 1e-7
    # and the closed route gives the x = x' value for the near-identical pair: rho snapped to 1 (theta = 0)
    assert abs(float(kc.ntk[0, 1] / kc.ntk[0, 0]) - 1) < 1e-8


# Interpolation (Chebyshev tables in theta and log K) against per-entry quadrature: the module docstring promises
# <= 1e-11 relative (tables converged to 1e-13 relative per direction, errors accumulating over layers and through
# the rounding of the nodes to 12 decimals in the memo); measured 3e-13 .. 1.1e-12.
INTERP_TOL = 1e-11


def _interp_vs_quadrature(act, x, depth, get=("nngp", "ntk"), rows=3):
    arch = sc.MLP(x.shape[1], 16, depth, activation=act, cw=1.5, cb=0.1)
    get = (get,) if isinstance(get, str) else get
    ki = sc.kernels(arch, x, method="interpolation", get=get)
    # per-entry quadrature costs ~1 ms per entry and layer: check `rows` full rows of the N x N kernel
    kq = sc.kernels(arch, x[:rows], x, method="quadrature", get=get)
    for g in get:
        assert _rel(_np(ki[g][:rows]), _np(kq[g])) < INTERP_TOL, (act, g)
    return ki


@pytest.mark.parametrize("act", ["tanh", "gelu", "softplus"])
def test_interpolation_matches_quadrature_equal_norms(act):
    """64 inputs on the sphere |x| = sqrt(d): one variance per layer, so 1-D tables in theta (fast path)."""
    x = _inputs(64, 8, 14, norms=(1, 1))
    _interp_vs_quadrature(act, x, depth=2)


@pytest.mark.slow
def test_interpolation_matches_quadrature_varying_norms_one_layer():
    """The quickest case with varying variances (2-D table in log K built by quadrature): softplus, NNGP only, one
    layer (~5000 quadratures, ~5 s).  The default run covers 2-D tables through relu's (closed-form values)."""
    x = _inputs(64, 8, 15, norms=(0.8, 1.25))
    _interp_vs_quadrature("softplus", x, depth=1, get="nngp")


@pytest.mark.slow
@pytest.mark.parametrize("act", ["tanh", "gelu", "softplus"])
def test_interpolation_matches_quadrature_varying_norms(act):
    """64 inputs with |x|/sqrt(d) in [0.7, 1.4]: the tables need 17 points per log K direction and 33-65 in theta
    (~10000 quadratures, 10-15 s, per table and layer on one core)."""
    x = _inputs(64, 8, 16, norms=(0.7, 1.4))
    _interp_vs_quadrature(act, x, depth=2)


def test_auto_switches_between_quadrature_and_tables():
    """auto: per-entry quadrature for few distinct entries, tables for many (80 inputs of one variance: 3240
    entries per layer, above the thresholds; 8 inputs: 36, below them)."""
    x = _inputs(80, 6, 17, norms=(1, 1))
    arch = sc.MLP(6, 16, 2, activation="tanh", cw=1.5, cb=0.1)
    assert torch.equal(sc.kernels(arch, x).ntk, sc.kernels(arch, x, method="interpolation").ntk)
    small = x[:8]
    assert torch.equal(sc.ntk(arch, small), sc.ntk(arch, small, method="quadrature"))


@pytest.mark.parametrize(("norms", "get"), [((1, 1), ("nngp", "ntk")), ((0.3, 2.0), "nngp")])
def test_interpolation_of_relu_matches_closed_form(norms, get):
    """relu's table (closed-form values tabulated in theta and log K) against the closed form itself: the theta
    series converges geometrically for sin t + (pi - t) cos t (entire in t); varying norms use log K too
    (NNGP only there)."""
    x = _inputs(90, 6, 18, norms=norms)
    arch = sc.MLP(6, 16, 3, activation="relu", cw=2.0, cb=0.05)
    ki, kc = sc.kernels(arch, x, method="interpolation", get=get), sc.kernels(arch, x, method="closed", get=get)
    for g in (get,) if isinstance(get, str) else get:
        a, b = (ki, kc) if isinstance(get, str) else (ki[g], kc[g])
        assert _rel(_np(a), _np(b)) < INTERP_TOL


def test_interpolation_nngp_and_ntk_tables_of_different_sizes():
    """Regression: relu's NNGP table needs 17 points in log K, its NTK table ((pi - t)/(2 pi), no K dependence)
    converges with 9; e95c22c built the log-K basis of both from the first table and raised RuntimeError
    'mat1 and mat2 shapes cannot be multiplied (2x17 and 9x9)'.  Two inputs of different norm suffice."""
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    arch = sc.MLP(2, 8, 1, activation="relu", cw=2.0)
    ki, kc = sc.kernels(arch, x, method="interpolation"), sc.kernels(arch, x, method="closed")
    for g in ("nngp", "ntk"):
        assert _rel(_np(ki[g]), _np(kc[g])) < INTERP_TOL


@pytest.fixture
def kinked_clone(monkeypatch):
    """relu registered as a user activation (no closed form, kink at 0): its kernels go through the
    quadrature-built tables, so comparing with the built-in relu tests that the theta tables resolve the kink's
    (1 - rho)^{3/2} behaviour.  The registry is restored afterwards."""
    monkeypatch.setattr(act_mod, "_REGISTRY", dict(act_mod._REGISTRY))
    return sc.register_activation("relu_clone_for_kernel_tests", torch.relu, kinks=(0.0,))


def test_interpolation_resolves_a_kink_without_closed_form(kinked_clone):
    x = _inputs(64, 6, 19, norms=(1, 1))
    clone = sc.MLP(6, 16, 2, activation=kinked_clone, cw=2.0, cb=0.05)
    relu = sc.MLP(6, 16, 2, activation="relu", cw=2.0, cb=0.05)
    with pytest.raises(SphericalCowError, match="no closed-form"):
        sc.kernels(clone, x, method="closed")
    ki, kc = sc.kernels(clone, x, method="interpolation"), sc.kernels(relu, x, method="closed")
    for g in ("nngp", "ntk"):
        assert _rel(_np(ki[g]), _np(kc[g])) < INTERP_TOL


@pytest.mark.parametrize(
    "kw",
    [
        {"activation": "relu", "cw": 2.0, "cb": 0.1},
        {"activation": "leaky_relu:slope=0.2", "cw": 1.5, "cb": 0.0},
        {"activation": "tanh", "cw": 1.2, "cb": 0.05},
        {"activation": "gelu", "cw": 1.8, "cb": 0.1},
        {"activation": "erf", "cw": 1.0, "cb": 0.2},
        {"activation": "relu", "cw": 0.5, "cb": 0.05, "residual": True},
        {"activation": "tanh", "cw": 0.3, "cb": 0.02, "residual": True},
        {"activation": "sin", "cw": 0.7, "cb": 0.1, "residual": True},
    ],
)
def test_nngp_matches_kernel_profile(kw):
    """Same recursion, different code (kernel_profile: NumPy, full matrices, expect_cross per layer); the
    quadrature-based ones use the same quadrature, so rounding only (1e-13; measured <= 1e-15)."""
    x = _inputs(6, 5, 20)
    arch = sc.MLP(5, 32, 4, **kw)
    assert _rel(_np(sc.nngp(arch, x)), kernel_profile(arch, x).K[-1]) < 1e-13


# ----------------------------------------------------------------------------------------------------------
# 3. Monte Carlo over real random networks
# ----------------------------------------------------------------------------------------------------------

MC_WIDTH = 512  # the slow variant below runs width 2048 with 64 networks
MC_ALPHA = 1e-3  # familywise error rate of each Monte Carlo check (fixed seeds: a pass is reproducible anyway)


def _mc_inputs():
    """5 inputs in R^16 of different norms, one pair strongly correlated, one anti-correlated."""
    rng = np.random.default_rng(21)
    x = rng.normal(size=(5, 16))
    x[1] = 0.9 * x[0] + 0.45 * rng.normal(size=16)
    x[2] = -0.7 * x[3] + 0.5 * rng.normal(size=16)
    x[4] *= 0.4
    return x


def _z_scores(mc, theory, g):
    """(mean - theory) / sem over the distinct entries (upper triangle: the kernels are symmetric)."""
    iu = np.triu_indices(mc.nngp.shape[0] if mc.nngp is not None else mc.ntk.shape[0])
    mean, sem = getattr(mc, g).numpy()[iu], getattr(mc, f"{g}_sem").numpy()[iu]
    assert (sem > 0).all()
    return (mean - _np(theory[g])[iu]) / sem


def _threshold(n_entries, n_samples):
    """Bonferroni over entries (conservative for correlated entries), Student t with n_samples - 1 dof (the sems
    are themselves estimated from n_samples networks)."""
    return stats.t.ppf(1 - MC_ALPHA / (2 * n_entries), n_samples - 1)


# Finite-width bias: at width n the mean kernels over networks differ from the infinite-width ones by O(L/n)
# relative (Roberts & Yaida 2022, sections 4.5 and 8.2; L = depth = 2), i.e. ~4e-3 at n = 512.  The relative
# standard errors are ~5e-2 .. 0.3 for the NNGP (f(x) f(x') fluctuates by O(1) per network) and ~2-4e-2 for the NTK
# (O(1/sqrt n) per network, / sqrt(32)), so the bias is <~ 0.2 standard errors and does not affect the test.
# The NNGP is estimated with d_out = 16 readouts (forward passes only, cheap): with d_out = 1 a diagonal entry is
# f(x)^2 ~ K chi^2_1, so skewed that the t statistic of 32 networks has a heavy left tail (seen: t = -6.3 on a
# correct kernel); the mean over 16 outputs (independent given the features) is ~ K chi^2_16 / 16 and fine.
MC_CASES = {
    "relu": {"activation": "relu", "cw": 2.0, "cb": 0.1},
    "tanh": {"activation": "tanh", "cw": 1.5, "cb": 0.05},
    "relu-residual": {"activation": "relu", "cw": 0.5, "cb": 0.05, "residual": True},
}


def _mc_check(kw, width, n_nngp, n_ntk, seed):
    x = _mc_inputs()
    arch = sc.MLP(16, width, 2, **kw)
    theory = sc.kernels(arch, x)
    # the infinite-width readout kernel is the same for every output, so d_out does not enter the theory
    assert torch.equal(sc.kernels(sc.MLP(16, width, 2, d_out=16, **kw), x).ntk, theory.ntk)
    mc_k = sc.monte_carlo_kernels(sc.MLP(16, width, 2, d_out=16, **kw), x, n_samples=n_nngp, seed=seed, get="nngp")
    mc_t = sc.monte_carlo_kernels(arch, x, n_samples=n_ntk, seed=seed + 10_000, get="ntk")
    z_k, z_t = _z_scores(mc_k, theory, "nngp"), _z_scores(mc_t, theory, "ntk")
    thr_k, thr_t = _threshold(z_k.size + z_t.size, n_nngp), _threshold(z_k.size + z_t.size, n_ntk)
    assert np.abs(z_k).max() < thr_k, ("nngp", np.round(z_k, 2), thr_k)
    assert np.abs(z_t).max() < thr_t, ("ntk", np.round(z_t, 2), thr_t)
    # the same rule rejects a 10% wrong C_W (power check): the NTK's intervals are a few % wide
    wrong = sc.kernels(sc.MLP(16, width, 2, **(kw | {"cw": 1.1 * kw["cw"]})), x)
    assert np.abs(_z_scores(mc_t, wrong, "ntk")).max() > thr_t
    return z_k, z_t


@pytest.mark.parametrize("case", list(MC_CASES))
def test_monte_carlo_networks_match_analytic_kernels(case):
    _mc_check(MC_CASES[case], MC_WIDTH, n_nngp=64, n_ntk=32, seed=1000)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MC_CASES))
def test_monte_carlo_networks_match_analytic_kernels_wide(case):
    """Width 2048, 64 networks for the NTK (60-90 s per case): the bias is then ~1e-3, < 0.1 sem."""
    _mc_check(MC_CASES[case], 2048, n_nngp=128, n_ntk=64, seed=3000)


def test_monte_carlo_standard_parametrization_ntk_includes_the_width_term():
    """Standard parametrization: Theta grows like n (n <s s'> from the readout weights), and a single network's
    empirical NTK scatters around it by O(1/sqrt n) relative.  The mean over networks matches the analytic kernel
    at the networks' width within the familywise interval, the per-network relative spread is O(1/sqrt n), and the
    analytic kernel at twice the width (a 2x different Theta) is rejected."""
    width, depth, n_samples = MC_WIDTH, 2, 32
    x = _mc_inputs()
    kw = {"activation": "tanh", "cw": 1.5, "cb": 0.05, "parametrization": "standard"}
    arch = sc.MLP(16, width, depth, **kw)
    mc = sc.monte_carlo_kernels(arch, x, n_samples=n_samples, seed=2000, get="ntk")
    theory = sc.kernels(arch, x, get=("ntk",))
    z = _z_scores(mc, theory, "ntk")
    thr = _threshold(z.size, n_samples)
    assert np.abs(z).max() < thr
    diag_t = np.diag(_np(theory.ntk))
    rel_err = np.abs(np.diag(mc.ntk.numpy()) / diag_t - 1)
    rel_spread = np.diag(mc.ntk_sem.numpy()) * math.sqrt(n_samples) / diag_t  # one network's relative sd
    assert (rel_spread * math.sqrt(width) < 3).all()  # O(1/sqrt n) with an O(1) constant (measured ~0.6-1.3)
    assert rel_err.max() < 3 * rel_spread.max() / math.sqrt(n_samples) + 3 / width
    doubled = sc.kernels(sc.MLP(16, 2 * width, depth, **kw), x, get=("ntk",))
    assert np.abs(_z_scores(mc, doubled, "ntk")).max() > thr


# ----------------------------------------------------------------------------------------------------------
# 4. invariants
# ----------------------------------------------------------------------------------------------------------

INVARIANT_ARCHS = {
    "relu": {"activation": "relu", "cw": 2.0, "cb": 0.1},
    "erf": {"activation": "erf", "cw": 1.3, "cb": 0.05},
    "tanh-interp": {"activation": "tanh", "cw": 1.5, "cb": 0.1},
    "relu-standard": {"activation": "relu", "cw": 1.8, "cb": 0.2, "parametrization": "standard"},
    "tanh-residual": {"activation": "tanh", "cw": 0.4, "cb": 0.02, "residual": True},
}


def _inv_setup(name, n=70, d=6):
    kw = INVARIANT_ARCHS[name]
    # tanh goes through the tables (method="interpolation"); on the sphere they are 1-D and cheap
    method = "interpolation" if kw["activation"] == "tanh" else "auto"
    x = _inputs(n, d, 30, norms=(1, 1) if method == "interpolation" else (0.5, 1.5))
    return sc.MLP(d, 24, 3, **kw), x, method


def _route(arch, method):
    """The route the pair map takes here: "closed", "interpolation" or (auto without closed form, small N)
    "quadrature"."""
    if method != "auto":
        return method
    return "closed" if arch.activation.has_closed_form("cross") else "quadrature"


@pytest.mark.parametrize("name", list(INVARIANT_ARCHS))
def test_symmetric_psd_and_blocking(name):
    arch, x, method = _inv_setup(name)
    ref = sc.kernels(arch, x, method=method, block_size=256)
    for g in ("nngp", "ntk"):
        k = ref[g]
        assert torch.equal(k, k.T)  # exact: the lower triangle is a copy
        ev = np.linalg.eigvalsh(_np(k))
        assert ev.min() >= -1e-12 * ev.max(), (g, ev.min(), ev.max())  # rounding of a PSD Gram-type matrix
    for bs in (16, 37):
        k = sc.kernels(arch, x, method=method, block_size=bs)
        for g in ("nngp", "ntk"):
            assert torch.equal(k[g], k[g].T)
            # entries are computed elementwise; only x x'^T may round differently for other block shapes
            assert _rel(_np(k[g]), _np(ref[g])) <= 1e-15, (bs, g)


@pytest.mark.parametrize("name", list(INVARIANT_ARCHS))
def test_cross_blocks_x2_none_and_float32(name):
    arch, x, method = _inv_setup(name, n=40)
    full = sc.kernels(arch, x, method=method, block_size=16)
    # x2=None computes the upper triangle with K_aa from the one-input recursion; an explicit x2 = x computes every
    # entry from x x'^T (rho within a few ulps of 1 on the diagonal is snapped): agreement to rounding.  The
    # inputs are well separated (|rho| < 0.9), so arccos does not amplify the rounding.
    # Closed forms: rounding only (measured <= 6e-16).  The explicit route's diagonal K_aa comes from the pair
    # map at rho ~ 1 (per-entry quadrature: measured 3e-15; tables: interpolated, measured 4e-14) while x2=None
    # takes the one-input recursion's, and the difference propagates through the layers.
    same = sc.kernels(arch, x, x.copy(), method=method, block_size=16)
    tol = {"interpolation": 1e-12, "quadrature": 1e-13}.get(_route(arch, method), 1e-14)
    for g in ("nngp", "ntk"):
        assert _rel(_np(same[g]), _np(full[g])) < tol, g
    # a cross kernel equals the corresponding sub-block of the full kernel
    cut = 23
    cross = sc.kernels(arch, x[:cut], x[cut:], method=method)
    for g in ("nngp", "ntk"):
        assert _rel(_np(cross[g]), _np(full[g][:cut, cut:])) < 1e-14, g
        assert cross[g].shape == (cut, 40 - cut)
    # float32 output = the float64 computation rounded once
    f32 = sc.kernels(arch, x, method=method, block_size=16, dtype=torch.float32)
    for g in ("nngp", "ntk"):
        assert f32[g].dtype == torch.float32
        assert torch.equal(f32[g], full[g].to(torch.float32))
    assert torch.equal(sc.ntk(arch, x, method=method, dtype="float32"), f32.ntk)


@pytest.mark.parametrize("name", list(INVARIANT_ARCHS))
def test_diagonal_equals_one_input_recursion(name):
    """K_aa and Theta_aa of the readout from the (N, N) computation against km._variances, the one-input
    recursion (1-D expectations).  Closed forms: rounding (measured 3e-16); tanh: the 2-D quadrature at rho = 1
    (measured 1e-14) or the table at theta = 0 (measured 8e-14) against the 1-D quadrature."""
    arch, x, method = _inv_setup(name, n=20)
    k = sc.kernels(arch, x, method=method)
    qs, ths = km._variances(arch, x, arch.parametrization == "standard")
    assert len(qs) == arch.depth + 1
    tol = {"interpolation": INTERP_TOL, "quadrature": 1e-13}.get(_route(arch, method), 1e-14)
    assert _rel(np.diag(_np(k.nngp)), qs[-1]) < tol
    assert _rel(np.diag(_np(k.ntk)), ths[-1]) < tol


def test_sc_nngp_and_ntk_shortcuts_and_kernels_mapping():
    arch = sc.MLP(4, 8, 2, activation="relu", cw=2.0, cb=0.1)
    x = _inputs(5, 4, 31)
    both = sc.kernels(arch, x)
    assert torch.equal(sc.nngp(arch, x), both.nngp) and torch.equal(sc.ntk(arch, x), both.ntk)
    assert torch.equal(both["ntk"], both.ntk)
    only = sc.kernels(arch, x, get=("ntk",))
    assert only.nngp is None and torch.equal(only.ntk, both.ntk)
    with pytest.raises(KeyError, match="nngp was not computed"):
        only["nngp"]
    one = sc.kernels(arch, torch.from_numpy(x).float()[0])  # a 1-D tensor is one input (float32 -> float64)
    assert one.ntk.shape == (1, 1) and one.ntk.dtype == torch.float64
    assert abs(float(one.ntk[0, 0] / sc.ntk(arch, torch.from_numpy(x).float())[0, 0]) - 1) < 1e-15


@pytest.mark.parametrize("cb", [0.0, 0.3])
def test_zero_input_relu(cb):
    """x = 0: with cb = 0 its preactivations are exactly 0, relu(0) = relu'(0) = 0 (torch's convention), so its row
    of both kernels is cb-only (0 here) at every depth; with cb > 0 it is an ordinary input of variance cb.
    Compared with the quadrature route and, at depth 1, with the arc-cosine formula (q = cb for x = 0)."""
    cw, d = 2.0, 4
    x = np.concatenate([np.zeros((1, d)), _inputs(4, d, 32)])
    for depth in (1, 3):
        arch = sc.MLP(d, 8, depth, activation="relu", cw=cw, cb=cb)
        kc, kq = sc.kernels(arch, x), sc.kernels(arch, x, method="quadrature")
        for g in ("nngp", "ntk"):
            assert torch.isfinite(kc[g]).all()
            assert _rel(_np(kq[g]), _np(kc[g])) < ROUTE_TOL
        if cb == 0:
            assert (kc.nngp[0] == 0).all() and (kc.ntk[0] == 0).all()
    arch = sc.MLP(d, 8, 1, activation="relu", cw=cw, cb=cb)
    if cb > 0:
        K1, q1, q2 = _layer1(x, x, cw, cb)
        t = _angle(K1, q1, q2)
        np.fill_diagonal(t, 0.0)
        nngp = cb + cw * _J1(q1, q2, t)
        ntk = nngp + cw * (math.pi - t) / TWO_PI * K1
        k = sc.kernels(arch, x)
        assert _rel(_np(k.nngp), nngp) < CLOSED_TOL and _rel(_np(k.ntk), ntk) < CLOSED_TOL


def test_zero_input_softplus_point_mass():
    """softplus(0) = log 2, softplus'(0) = 1/2: with cb = 0 and x = 0 the first layer is 0 exactly, so
    K2(0, x') = cw log2 <softplus(z')>_{q'}, K2(0, 0) = cw log^2 2, and Theta2(0, .) = K2(0, .) (Theta1(0, .) = 0).
    <softplus> by 200-point Gauss-Hermite here (error < 1e-15 for this entire integrand).  Also: the quadrature
    and interpolation routes (the latter with the zero row excluded from the 1-D table) agree."""
    cw, d = 1.6, 4
    xs = _inputs(6, d, 33, norms=(1, 1))
    x = np.concatenate([np.zeros((1, d)), xs])
    arch = sc.MLP(d, 8, 1, activation="softplus", cw=cw, cb=0.0)
    k = sc.kernels(arch, x)
    g, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / math.sqrt(TWO_PI)
    q = cw * np.einsum("ij,ij->i", xs, xs) / d
    mean_sp = np.array([np.sum(w * np.logaddexp(0.0, math.sqrt(qi) * g)) for qi in q])
    row = cw * math.log(2) * mean_sp
    assert abs(float(k.nngp[0, 0]) / (cw * math.log(2) ** 2) - 1) < 1e-14
    assert _rel(_np(k.nngp[0, 1:]), row) < 1e-13
    assert _rel(_np(k.ntk[0, 1:]), row) < 1e-13
    assert torch.equal(k.nngp[1:, 0], k.nngp[0, 1:])
    ki = sc.kernels(arch, x, method="interpolation")
    for gname in ("nngp", "ntk"):
        assert _rel(_np(ki[gname]), _np(k[gname])) < INTERP_TOL
    # deeper: the zero input's layer-2 variance is cw log^2 2 > 0, an ordinary input from then on
    deep = sc.MLP(d, 8, 2, activation="softplus", cw=cw, cb=0.0)
    kd = sc.kernels(deep, x)
    assert torch.isfinite(kd.ntk).all()
    assert _rel(_np(kd.nngp), kernel_profile(deep, x).K[-1]) < 1e-13


# ----------------------------------------------------------------------------------------------------------
# 5. numerical safety
# ----------------------------------------------------------------------------------------------------------


def test_deep_relu_at_criticality_is_finite_and_exact_on_the_diagonal():
    """relu, cw = 2, cb = 0: K_aa is preserved exactly (cw <relu^2> = K) and chi = cw <relu'^2> = 1, so
    Theta_aa = (L + 1) K1_aa; correlations approach 1.  1000 layers of rounding: 1e-12."""
    depth, d = 1000, 5
    x = _inputs(6, d, 34)
    k = sc.kernels(sc.MLP(d, 8, depth, activation="relu", cw=2.0, cb=0.0), x)
    q = 2.0 * np.einsum("ij,ij->i", x, x) / d
    assert torch.isfinite(k.nngp).all() and torch.isfinite(k.ntk).all()
    assert _rel(np.diag(_np(k.nngp)), q) < 1e-12
    assert _rel(np.diag(_np(k.ntk)), (depth + 1) * q) < 1e-12
    rho = _np(k.nngp) / np.sqrt(np.outer(q, q))
    assert rho.min() > 0.99 and rho.max() <= 1 + 1e-15


def test_deep_tanh_at_criticality_is_finite():
    """tanh at its critical point (cw = 1, cb = 0), 1000 layers, one pair (per-entry quadrature: ~1000 x 4
    quadratures): K decays like 1/l; the NTK stays finite and positive; the diagonal matches the 1-D recursion."""
    x = _inputs(2, 5, 35)
    arch = sc.MLP(5, 8, 1000, activation="tanh")
    assert arch.cw == pytest.approx(1.0) and arch.cb == 0.0
    k = sc.kernels(arch, x[:1], x[1:])
    assert torch.isfinite(k.nngp).all() and torch.isfinite(k.ntk).all()
    qs, ths = km._variances(arch, x, False)
    assert 0 < qs[-1].max() < 2e-3  # ~ 1/(2 l) at l = 1000 for the universality class K* = 0 (a = -2)
    assert (ths[-1] > 0).all() and np.isfinite(ths[-1]).all()
    assert abs(float(k.ntk[0, 0])) <= math.sqrt(ths[-1][0] * ths[-1][1]) * (1 + 1e-12)  # Cauchy-Schwarz
    assert abs(float(k.nngp[0, 0])) <= math.sqrt(qs[-1][0] * qs[-1][1]) * (1 + 1e-12)


def test_overflow_raises_instead_of_nan():
    """relu with cw = 3 multiplies K by 1.5 per layer: 1.5^2000 ~ 1e352 overflows float64 (depth 1000 does not:
    1.5^1000 ~ 1e176)."""
    x = _inputs(3, 5, 36)
    arch = sc.MLP(5, 8, 2000, activation="relu", cw=3.0)
    for get in ("nngp", "ntk", ("nngp", "ntk")):
        with pytest.raises(SphericalCowError, match="overflows"):
            sc.kernels(arch, x, get=get)


def test_huge_but_finite_variances_give_correct_kernels():
    """Regression (e95c22c computed sqrt(K_aa K_bb), which overflows once the variances exceed ~1.3e154, and then
    silently returned rho = 0, i.e. NNGP diag = K/pi): x = 1e80 e_1, 1e80 (e_1 + e_2); relu, cw = 2:
    K1 = [[1, 1], [1, 2]] * 1e160 is finite and relu at cw = 2 preserves the diagonal."""
    x = np.array([[1e80, 0.0], [1e80, 1e80]])
    k = sc.kernels(sc.MLP(2, 8, 1, activation="relu", cw=2.0), x)
    K1 = np.array([[1.0, 1.0], [1.0, 2.0]])  # in units of 1e160 (the reference must not overflow either)
    t = _angle(K1, np.diag(K1)[:, None], np.diag(K1)[None, :])
    np.fill_diagonal(t, 0.0)
    nngp = 2.0 * _J1(np.diag(K1)[:, None], np.diag(K1)[None, :], t)
    ntk = nngp + 2.0 * (math.pi - t) / TWO_PI * K1
    assert _rel(_np(k.nngp) / 1e160, nngp) < CLOSED_TOL
    assert _rel(_np(k.ntk) / 1e160, ntk) < CLOSED_TOL


def test_deep_relu_with_growing_variance_stays_exact_until_overflow():
    """relu, cw = 3, depth 1000: K_aa = 1.5^l K1_aa ~ 1e176 (finite) and Theta_aa = (L + 1) K_aa exactly
    (chi = 1.5 = K^{l+1}/K^l); e95c22c returned Theta_aa = 2 K_aa here (the overflow of sqrt(K_aa K_bb))."""
    depth = 1000
    x = _inputs(3, 5, 40)
    arch = sc.MLP(5, 8, depth, activation="relu", cw=3.0)
    k = sc.kernels(arch, x)
    qs, ths = km._variances(arch, x, False)
    assert 1e150 < qs[-1].min() and np.isfinite(ths[-1]).all()
    assert _rel(np.diag(_np(k.nngp)), qs[-1]) < 1e-12
    assert _rel(np.diag(_np(k.ntk)) / np.diag(_np(k.nngp)), np.full(3, depth + 1.0)) < 1e-12
    d = np.sqrt(np.diag(_np(k.nngp)))
    rho = _np(k.nngp) / d[:, None] / d[None, :]
    assert np.isfinite(rho).all() and 0.5 < rho.min() and rho.max() <= 1 + 1e-15


@pytest.mark.parametrize(
    ("variant", "scale"),
    [
        *((v, s) for v in ("plain", "residual", "standard") for s in (1e-100, 1e100, 1e150)),
        *((v, 1e-152) for v in ("plain", "residual", "standard")),
    ],
)
def test_scale_invariant_kernels_are_homogeneous(variant, scale):
    """relu at cb = 0 is positively homogeneous: K(s x, s x') = s^2 K(x, x'), and Theta too in NTK
    parametrization (the standard one adds x.x' + 1 and 1 per bias: NNGP only).  Rounding: a few ulps."""
    x = _inputs(4, 5, 41)
    kw = {"residual": {"residual": True, "cw": 0.5}, "standard": {"parametrization": "standard"}}.get(variant, {})
    arch = sc.MLP(5, 8, 2, **({"activation": "relu", "cw": 2.0} | kw))
    get = ("nngp",) if variant == "standard" else ("nngp", "ntk")
    ref, k = sc.kernels(arch, x, get=get), sc.kernels(arch, scale * x, get=get)
    for g in get:
        assert _rel(_np(k[g]) / scale**2, _np(ref[g])) < 1e-14


def test_nngp_alone_does_not_fail_on_ntk_overflow():
    """erf at cw = 10: K -> K* ~ 7.8 while chi_perp = cw <erf'^2>_{K*} ~ 2.2, so Theta ~ 2.2^l overflows at
    l ~ 875.  The NNGP (finite, ~7.8 on the diagonal) should still be returned by sc.nngp."""
    x = _inputs(2, 5, 37)
    arch = sc.MLP(5, 8, 1200, activation="erf", cw=10.0)
    with pytest.raises(SphericalCowError, match="NTK overflows"):
        sc.ntk(arch, x)  # right: the NTK does overflow
    k = sc.nngp(arch, x)
    assert torch.isfinite(k).all()


@pytest.mark.parametrize("act", ["relu", "erf", "tanh"])
def test_nearly_identical_and_opposite_inputs(act):
    """x, x + 1e-9 noise (1 - rho below rounding), x + 1e-6 noise, -x (rho = -1 at cb = 0) and 2x (rho = 1):
    finite kernels, |rho| <= 1, and continuity: the near-copies' kernels match x's own to the sqrt(eps) floor that
    rounding sets through arccos near rho = 1 (1e-6 relative)."""
    rng = np.random.default_rng(38)
    x0 = rng.normal(size=(1, 5))
    x = np.concatenate([x0, x0 + 1e-9 * rng.normal(size=(1, 5)), x0 + 1e-6 * rng.normal(size=(1, 5)), -x0, 2 * x0])
    arch = sc.MLP(5, 8, 3, activation=act, cw=1.5, cb=0.0)
    for b in (None, x.copy()):
        k = sc.kernels(arch, x, b)
        for g in ("nngp", "ntk"):
            m = _np(k[g])
            assert np.isfinite(m).all()
            d = np.sqrt(np.abs(np.diag(m)))
            assert np.all(np.abs(m) <= np.outer(d, d) * (1 + 1e-12))
            assert abs(m[0, 1] / m[0, 0] - 1) < 1e-6 and abs(m[0, 2] / m[0, 0] - 1) < 1e-5


# ----------------------------------------------------------------------------------------------------------
# 6. bad input
# ----------------------------------------------------------------------------------------------------------

ARCH = sc.MLP(5, 8, 2, activation="relu", cw=2.0)
X = np.ones((3, 5))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sc.kernels(ARCH, np.array([[0.0, 1, 2, 3, np.nan]])), "x1 contains NaN"),
        (lambda: sc.kernels(ARCH, X, np.array([[np.inf, 1, 2, 3, 4]])), "x2 contains NaN or inf"),
        (lambda: sc.kernels(ARCH, np.ones((3, 4))), "x1 has 4 features; the architecture expects d_in=5"),
        (lambda: sc.kernels(ARCH, X, np.ones((2, 6))), "x2 has 6 features"),
        (lambda: sc.kernels(ARCH, np.ones((2, 3, 5))), r"x1 has shape \(2, 3, 5\)"),
        (lambda: sc.kernels(ARCH, np.empty((0, 5))), "x1 has no rows"),
        (lambda: sc.kernels(ARCH, X, np.empty((0, 5))), "x2 has no rows"),
        (lambda: sc.kernels(ARCH, np.array([])), "x1 has 0 features"),
        (lambda: sc.kernels(ARCH, X, get="foo"), "get='foo' is not a kernel"),
        (lambda: sc.kernels(ARCH, X, get=("nngp", "Ntk")), "get='Ntk' is not a kernel"),
        (lambda: sc.kernels(ARCH, X, get=()), "get is empty"),
        (lambda: sc.kernels(ARCH, X, dtype=torch.int64), "dtype=torch.int64 is not allowed"),
        (lambda: sc.kernels(ARCH, X, dtype=torch.float16), "dtype=torch.float16 is not allowed"),
        (lambda: sc.kernels(ARCH, X, method="bogus"), "method='bogus' is not allowed"),
        (lambda: sc.kernels(sc.MLP(5, 8, 2, activation="tanh"), X, method="closed"), "'tanh' has no closed-form"),
        (lambda: sc.kernels({"d_in": 5}, X), "arch is a dict; expected an sc.MLP"),
        (lambda: sc.nngp("relu", X), "arch is a str"),
        (lambda: sc.kernels(ARCH, X, block_size=8), "block_size=8 is not allowed"),
        (lambda: sc.kernels(ARCH, X, block_size=20.5), "block_size=20.5 is not an integer"),
    ],
)
def test_bad_input_raises_sphericalcow_error(call, match):
    with pytest.raises(SphericalCowError, match=match):
        call()


@pytest.mark.parametrize("get", [None, 5])
def test_get_of_wrong_type_raises_sphericalcow_error(get):
    with pytest.raises(SphericalCowError, match="get"):
        sc.kernels(ARCH, X, get=get)


# ----------------------------------------------------------------------------------------------------------
# 8. progress bar
# ----------------------------------------------------------------------------------------------------------


def test_progress_bar_writes_to_stderr_and_changes_nothing(capsys):
    arch = sc.MLP(4, 8, 2, activation="relu", cw=2.0, cb=0.1)
    x = _inputs(40, 4, 39)
    quiet = sc.kernels(arch, x, block_size=16, progress=False)
    assert capsys.readouterr().err == ""
    loud = sc.kernels(arch, x, block_size=16, progress=True)
    err = capsys.readouterr().err
    assert "kernel blocks" in err and "6/6" in err  # 3 x 3 blocks, upper triangle
    for g in ("nngp", "ntk"):
        assert torch.equal(loud[g], quiet[g])


# ----------------------------------------------------------------------------------------------------------
# blocks on a thread pool (used when torch has more than one intra-op thread; the tests run with one)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "relu-standard", "tanh-interp", "tanh-residual"])
def test_thread_pool_gives_the_same_kernels_and_restores_threads(name):
    arch, x, method = _inv_setup(name, n=40)
    ref = sc.kernels(arch, x, method=method, block_size=16)  # one thread (conftest): blocks in sequence
    ref_x = sc.kernels(arch, x[:25], x, method=method, block_size=16)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        pooled = sc.kernels(arch, x, method=method, block_size=16)
        pooled_x = sc.kernels(arch, x[:25], x, method=method, block_size=16)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
    for g in ("nngp", "ntk"):
        # the same single-threaded ops on the same blocks, written to disjoint places: bitwise equal
        assert torch.equal(pooled[g], ref[g]) and torch.equal(pooled_x[g], ref_x[g])
        assert torch.equal(pooled[g], pooled[g].T)
