"""Criticality theory: exact points of the named classes, invariants, and independent numerical routes."""

import math

import numpy as np
import pytest

import sphericalcow as sc
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.criticality import (
    chi_parallel,
    chi_perpendicular,
    critical_line_points,
    fixed_point,
)
from sphericalcow.theory.gaussian import expect_dsq, expect_sq
from sphericalcow.theory.recursions import variance_recursion


@pytest.mark.parametrize(
    ("name", "cw"),
    [
        ("relu", 2.0),
        ("leaky_relu:slope=0.1", 2 / 1.01),
        ("linear", 1.0),
        ("abs", 1.0),
        ("tanh", 1.0),
        ("erf", math.pi / 4),
        ("sin", 1.0),
    ],
)
def test_exact_critical_points_of_named_classes(name, cw):
    assert sc.critical_init(name) == pytest.approx((cw, 0.0), rel=1e-12)
    c = sc.criticality(name, cw, 0.0)
    assert c.phase == "critical"
    assert c.chi_perp == pytest.approx(1.0, abs=1e-9)
    assert c.chi_par == pytest.approx(1.0, abs=1e-9)


def test_relu_at_criticality_keeps_K_fixed_and_doubles_in_the_residual_net():
    K = variance_recursion("relu", 2.0, 0.0, 1.7, 60)
    np.testing.assert_allclose(K, 1.7, rtol=1e-13)
    # residual: K' = K + C_b + C_W K / 2 = 2 K at C_W = 2, C_b = 0
    Kr = variance_recursion("relu", 2.0, 0.0, 1.0, 10, residual=True)
    np.testing.assert_allclose(Kr, 2.0 ** np.arange(10), rtol=1e-13)


def test_universality_classes_and_tanh_class_constants():
    assert sc.universality("relu")[0] == "scale-invariant"
    assert sc.universality("leaky_relu:slope=0.3")[1]["A2"] == pytest.approx((1 + 0.09) / 2)
    cls, k = sc.universality("tanh")
    assert cls == "K*=0"
    # tanh = z - z^3/3: sigma_3 = -1/3 so a_1 = b_1 = 6 * (-1/3) = -2 and p_perp = 1
    assert k["a1"] == pytest.approx(-2.0, abs=1e-12)
    assert k["b1"] == pytest.approx(-2.0, abs=1e-12)
    assert k["p_perp"] == pytest.approx(1.0, abs=1e-12)
    for name in ("sigmoid", "softplus", "gelu", "silu"):
        assert sc.universality(name)[0] == "other"


def test_tanh_K_decays_as_one_over_minus_a1_l_by_iterating_the_recursion():
    """Independent route for the class constant: iterate 20000 layers; l K^(l) -> 1/(-a1) = 1/2.

    The next order is a log correction, l K = 1/2 + O(log l / l), so at l = 2e4 the product is 1/2 within 0.2%."""
    K = variance_recursion("tanh", 1.0, 0.0, 1.0, 20000)
    layer = np.arange(1, 20001)
    assert layer[-1] * K[-1] == pytest.approx(0.5, rel=2e-3)
    assert (layer[-1000:] * K[-1000:]).std() < 1e-4


def test_phases_off_criticality():
    assert sc.criticality("relu", 1.5).phase == "ordered"
    c = sc.criticality("relu", 2.5)
    assert c.phase == "chaotic" and c.K_star == math.inf and c.chi_perp == pytest.approx(1.25)
    t = sc.criticality("tanh", 0.5)
    assert t.phase == "ordered" and t.K_star == 0.0 and t.chi_perp == pytest.approx(0.5, abs=1e-9)
    assert t.xi_perp == pytest.approx(1 / math.log(2))
    assert sc.criticality("tanh", 2.0, 0.0).phase == "chaotic"
    # relu with bias below criticality: K* = C_b / (1 - C_W/2) exactly
    r = sc.criticality("relu", 1.5, 0.1)
    assert r.K_star == pytest.approx(0.1 / (1 - 0.75), rel=1e-10)


def test_tanh_critical_line_is_an_attracting_fixed_point_with_chi_perp_one():
    cw, cb = sc.critical_init("tanh", 0.05)
    K, status = fixed_point("tanh", cw, cb, 1.0)
    assert status == 0
    assert float(chi_perpendicular("tanh", cw, K)) == pytest.approx(1.0, abs=1e-10)
    assert float(chi_parallel("tanh", cw, K)) < 1
    assert K == pytest.approx(cb + cw * float(expect_sq("tanh", K)), rel=1e-12)


def test_tanh_critical_line_matches_a_scan_of_the_phase_boundary():
    """Independent route: plain iteration to K*(C_W) on a C_W grid (no Newton, no h(K) root), then the sign change
    of chi_perp(K*) - 1, refined on a second grid inside the first bracket."""
    cb = 0.05
    lo, hi = 1.2, 2.5
    for _ in range(2):
        cw = np.linspace(lo, hi, 401)
        K = np.ones_like(cw)
        for _ in range(3000):
            K = cb + cw * expect_sq("tanh", K)
        j = int(np.nonzero(cw * expect_dsq("tanh", K) > 1)[0][0])
        lo, hi = cw[j - 1], cw[j]
    assert lo <= sc.critical_init("tanh", cb)[0] <= hi
    assert hi - lo < 1e-4


def test_tanh_critical_line_published_value():
    """Schoenholz et al. 2017 (Deep Information Propagation), Fig. 1/4: sigma_b^2 = 0.05 -> sigma_w^2 ~ 1.76."""
    assert sc.critical_init("tanh", 0.05)[0] == pytest.approx(1.76, abs=0.01)


def test_tanh_critical_line_approaches_the_exact_point_by_its_small_cb_law():
    """Near C_b = 0: h(K) = K - <tanh^2>/<tanh'^2> = (4/3) K^3 + O(K^4) and C_W = 1/<tanh'^2> = 1 + 2K + O(K^2),
    so C_W - 1 -> 2 (3 C_b / 4)^(1/3) with a relative error O(K*) (derived by expanding tanh to z^5)."""
    ratios = []
    for cb in (1e-4, 1e-5, 1e-6):
        cw = sc.critical_init("tanh", cb)[0]
        ratios.append((cw - 1) / (2 * (0.75 * cb) ** (1 / 3)))
    assert abs(ratios[-1] - 1) < 0.03
    assert abs(ratios[0] - 1) > abs(ratios[1] - 1) > abs(ratios[2] - 1)


def test_gelu_book_criticality_both_susceptibilities_one():
    cp = sc.critical_point("gelu")
    assert cp.cb > 0 and cp.K_star > 0
    K, status = fixed_point("gelu", cp.cw, cp.cb, cp.K_star)
    assert status == 0 and float(K) == pytest.approx(cp.K_star, rel=1e-6)
    assert float(chi_perpendicular("gelu", cp.cw, cp.K_star)) == pytest.approx(1, abs=1e-10)
    assert float(chi_parallel("gelu", cp.cw, cp.K_star)) == pytest.approx(1, abs=1e-8)
    c = sc.criticality("gelu", cp.cw, cp.cb, K0=cp.K_star)
    assert c.phase == "critical"


def test_no_critical_point_is_a_clear_error():
    with pytest.raises(SphericalCowError, match=r"softplus.*no critical initialisation"):
        sc.critical_init("softplus")
    with pytest.raises(SphericalCowError, match=r"gelu.*critical point.*cw="):
        sc.critical_init("gelu", 0.0)


@pytest.mark.parametrize(
    ("name", "cw", "cb"),
    [
        ("tanh", 1.7, 0.3),
        ("relu", 1.2, 0.2),
        ("gelu", 1.5, 0.4),
        ("sigmoid", 3.0, 0.0),
        ("erf", 2.0, 0.1),
        ("softplus", 1.5, 0.1),
    ],
)
def test_fixed_point_against_plain_iteration(name, cw, cb):
    K = 1.0
    for _ in range(3000):  # contraction chi_par < 0.9 at all these points: 0.9^3000 ~ 1e-137
        K = cb + cw * float(expect_sq(name, K))
    Kf, status = fixed_point(name, cw, cb, 1.0)
    assert status == 0
    assert float(Kf) == pytest.approx(K, rel=1e-9)


def test_fixed_point_is_vectorised():
    cw = np.array([[0.5, 1.5], [2.5, 3.0]])
    K, status = fixed_point("relu", cw, 0.1, 1.0)
    assert K.shape == (2, 2)
    np.testing.assert_array_equal(status, [[0, 0], [1, 1]])
    np.testing.assert_allclose(K[0], [0.1 / 0.75, 0.1 / 0.25], rtol=1e-10)


def test_critical_line_points_satisfy_their_definition():
    for p in critical_line_points("sigmoid", 0.0):
        assert float(chi_perpendicular("sigmoid", p.cw, p.K_star)) == pytest.approx(1, abs=1e-10)
        assert p.K_star == pytest.approx(p.cw * float(expect_sq("sigmoid", p.K_star)), rel=1e-10)


@pytest.mark.parametrize("bad", [dict(cw=0.0), dict(cw=-1.0), dict(cw=float("nan")), dict(cb=-0.1)])
def test_bad_parameters(bad):
    kw = {"cw": 1.0, "cb": 0.0} | bad
    with pytest.raises(SphericalCowError, match=r"not allowed|not finite"):
        sc.criticality("tanh", **kw)


def test_phase_diagram_boundary_matches_the_traced_critical_line():
    pd = sc.phase_diagram("tanh", np.linspace(0.5, 3.0, 126), np.linspace(0.0, 0.3, 4))
    assert pd.chi_perp.shape == (4, 126)
    for i, cb in enumerate(pd.cb):
        row = pd.chi_perp[i]
        j = int(np.nonzero(row > 1)[0][0])  # first chaotic C_W on the grid
        cw_c = sc.critical_init("tanh", float(cb))[0]
        assert pd.cw[j - 1] <= cw_c + 1e-9 and cw_c <= pd.cw[j] + 1e-9
    assert np.isfinite(pd.line_cw).all()


def test_scale_invariant_at_criticality_with_bias_grows_linearly():
    """ReLU at C_W = 2, C_b > 0: K^(l+1) = K^(l) + C_b, no finite fixed point, chi = 1 exactly (regression: the
    generic fixed-point search used to report 'did not converge')."""
    c = sc.criticality("relu", 2.0, 0.1)
    assert c.K_star == math.inf and c.phase == "critical"
    assert any("linearly" in n for n in c.notes)
    np.testing.assert_allclose(variance_recursion("relu", 2.0, 0.1, 1.0, 5), 1.0 + 0.1 * np.arange(5), rtol=1e-14)


def test_nearly_critical_gelu_says_so():
    cp = sc.critical_point("gelu")
    c = sc.criticality("gelu", cp.cw, cp.cb, K0=cp.cb + cp.cw)  # starts below the half-stable K*
    assert c.phase == "ordered" and c.xi_perp > 50
    assert any("nearly critical" in n for n in c.notes)


def test_user_registered_activations_work_with_every_theory_function():
    """Regression: autograd Taylor coefficients used to raise for piecewise-linear and linear user functions."""
    import torch

    from sphericalcow.activations import _ALIASES, _REGISTRY

    saved = (dict(_REGISTRY), dict(_ALIASES))
    try:
        ht = sc.register_activation("hardtanh_t", torch.nn.functional.hardtanh, kinks=(-1.0, 1.0))
        lin = sc.register_activation("double_t", lambda x: 2 * x)
        assert sc.universality(ht)[0] == "other" and sc.universality(lin)[0] == "other"
        cw, cb = sc.critical_init(ht, 0.1)
        K, status = fixed_point(ht, cw, cb, 1.0)
        assert status == 0 and float(chi_perpendicular(ht, cw, K)) == pytest.approx(1, abs=1e-9)
        assert sc.criticality(lin, 0.25, 0.0).phase == "critical"  # chi = C_W * 2^2 = 1
        with pytest.raises(SphericalCowError, match="no critical initialisation"):
            sc.MLP(3, 4, 2, activation=lin)
        assert sc.phase_diagram(ht, n=4).chi_perp.shape == (4, 4)
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved[0])
        _ALIASES.clear()
        _ALIASES.update(saved[1])


def test_gelu_critical_point_is_half_stable_reached_from_above():
    cp = sc.critical_point("gelu")
    assert (cp.cw, cp.cb, cp.K_star) == pytest.approx((1.98306, 0.172922, 3.5616), abs=1e-4)
    K_above, s1 = fixed_point("gelu", cp.cw, cp.cb, 1.3 * cp.K_star)
    K_below, s2 = fixed_point("gelu", cp.cw, cp.cb, cp.cb + cp.cw)
    assert s1 == 0 and float(K_above) == pytest.approx(cp.K_star, rel=1e-5)
    assert s2 == 0 and float(K_below) == pytest.approx(3.035, abs=2e-3)  # the nearby stable fixed point


@pytest.mark.parametrize("slope", np.linspace(-2, 2, 41))
def test_scale_invariant_fixed_point_closed_form_over_slopes(slope):
    act = sc.activation("leaky_relu", slope=float(slope))
    A2 = (1 + slope**2) / 2
    assert sc.criticality(act, None, 0.05).K_star == math.inf  # at 1/A2 with C_b > 0: linear growth
    assert sc.criticality(act, 0.5 / A2, 0.05).K_star == pytest.approx(0.05 / 0.5, rel=1e-12)


def test_chi_parallel_zero_K_limit_when_sigma0_is_nonzero():
    """<sigma^2>_K = sigma_0^2 + (sigma_1^2 + 2 sigma_0 sigma_2) K + ...: softplus 0.4233 = ln2 ln2 ... limit."""
    assert float(chi_parallel("softplus", 1.0, 0.0)) == pytest.approx(
        float(chi_parallel("softplus", 1.0, 1e-7)), rel=1e-6
    )
    assert fixed_point("relu", 2.0, 0.05, 1.0, n_newton=0)[1] == 1


def test_phase_diagram_critical_line_has_only_attracting_points():
    """The traced line keeps chi_perp = 1 points that are not repelling along K (chi_par <= 1); GELU's repelling
    ones below its critical C_b (where the boundary is a jump of K* to infinity) are left out."""
    pd = sc.phase_diagram("gelu", np.linspace(1.0, 3.0, 5), np.linspace(0.0, 0.4, 5), n_line=9)
    assert np.isnan(pd.line_cw[0])  # C_b = 0: no attracting critical point
    drawn = 0
    for cb, cw in zip(pd.line_cb, pd.line_cw, strict=True):
        pts = {round(p.cw, 12): p for p in critical_line_points("gelu", float(cb))}
        if np.isfinite(cw):
            drawn += 1
            assert pts[round(cw, 12)].chi_par <= 1 + 1e-9
        else:
            assert all(p.chi_par > 1 + 1e-9 for p in pts.values())
    assert drawn >= 4
