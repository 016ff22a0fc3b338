"""Sample-complexity laws: closed forms and published values, independent numerical routes (enumeration, Monte
Carlo), and invariants."""

import itertools
import math

import numpy as np
import pytest
from scipy.special import gamma

from sphericalcow.data.hierarchy import random_hierarchy_model
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.sample_complexity import (
    barron_bound,
    barron_constant_gaussian,
    barron_width,
    kernel_regression_exponent,
    minimax_exponent,
    rhm_p_max,
    rhm_sample_complexity,
    sample_size_for_error,
)


def test_rhm_p_max_closed_form_and_counting():
    # published example (Cagnetta et al. 2024): s = 2, L = 3 has 1 + 2 + 4 = 7 internal nodes
    assert rhm_p_max(n_c=8, m=8, s=2, L=3) == 8 * 8**7
    assert rhm_p_max(n_c=2, m=3, s=3, L=2) == 2 * 3**4
    # independent route: count distinct inputs by exhaustive enumeration of a small grammar
    rhm = random_hierarchy_model(v=3, m=2, n_c=2, s=3, L=2, seed=0)
    sym = rhm.symbols(rhm.digits_of_indices(np.arange(rhm.p_max)))
    assert len({tuple(r) for r in sym}) == rhm_p_max(n_c=2, m=2, s=3, L=2) == 2 * 2**4
    # exact big ints, no float overflow
    assert rhm_p_max(n_c=32, m=32, s=4, L=4) == 32 * 32**85


def test_rhm_deep_vs_shallow_invariants():
    for n_c, m, s, L in [(4, 4, 2, 3), (8, 8, 2, 2), (10, 3, 3, 3)]:
        deep, shallow = rhm_sample_complexity(n_c=n_c, m=m, L=L), rhm_p_max(n_c=n_c, m=m, s=s, L=L)
        assert deep == n_c * m**L
        # the gap P_max / P* = m^((s^L-1)/(s-1) - L) grows with depth: polynomial vs exponential in s^L
        assert shallow // deep == m ** ((s**L - 1) // (s - 1) - L)
    assert rhm_sample_complexity(n_c=4, m=4, L=1) == rhm_p_max(n_c=4, m=4, s=2, L=1)  # L = 1: no hierarchy
    with pytest.raises(SphericalCowError, match="L=0"):
        rhm_sample_complexity(n_c=2, m=2, L=0)


def test_minimax_exponent_values_and_limits():
    assert minimax_exponent(1.0, 1) == pytest.approx(2 / 3)  # Lipschitz in 1d: n^(-2/3)
    assert minimax_exponent(2.0, 4) == pytest.approx(0.5)
    assert minimax_exponent(1.0, 4, noise=False) == pytest.approx(0.5)
    betas = [minimax_exponent(1.0, d) for d in range(1, 50)]
    assert all(a > b for a, b in itertools.pairwise(betas))  # the curse: decreasing in d
    # large d: 2s/(2s+d) -> 2s/d (the noiseless exponent) with relative gap 2s/d
    assert minimax_exponent(1.0, 1000) / minimax_exponent(1.0, 1000, noise=False) == pytest.approx(1000 / 1002)
    with pytest.raises(SphericalCowError, match="d=0"):
        minimax_exponent(1.0, 0)


def test_kernel_regression_exponent_spigler_geiger_wyart():
    # Laplace student (alpha_S = d + 1) on a Laplace teacher (alpha_T = d + 1, nu = 1/2): beta = 1/d
    for d in (1, 2, 5, 10):
        assert kernel_regression_exponent(d, teacher_smoothness=0.5, student_alpha=d + 1) == pytest.approx(1 / d)
    # a student too rough for a very smooth teacher saturates at 2 alpha_S / d
    assert kernel_regression_exponent(2, teacher_smoothness=10, student_alpha=3) == pytest.approx(3.0)
    # coincides with the noiseless optimal rate when the student is smooth enough
    assert kernel_regression_exponent(3, teacher_smoothness=1, student_alpha=4) == minimax_exponent(1, 3, noise=False)


def test_sample_size_inverts_the_learning_curve():
    p = sample_size_for_error(1e-3, 0.5, prefactor=2.0)
    assert 2.0 * p**-0.5 == pytest.approx(1e-3)
    # at beta = 2/d, reaching eps costs eps^(-d/2): exponential in d
    assert sample_size_for_error(0.1, 2 / 10) == pytest.approx(1e5)


def test_barron_bound_and_width():
    assert barron_bound(1.5, 9, radius=2.0) == pytest.approx((2 * 2 * 1.5) ** 2 / 9)
    n = barron_width(1.5, 0.01, radius=2.0)
    assert barron_bound(1.5, n, radius=2.0) <= 0.01 < barron_bound(1.5, n - 1, radius=2.0)
    assert barron_width(0.0, 0.1) == 1
    with pytest.raises(SphericalCowError, match="n=0"):
        barron_bound(1.0, 0)


@pytest.mark.parametrize("d", [1, 2, 3, 7, 20])
def test_barron_constant_of_a_gaussian_closed_form_and_monte_carlo(d):
    sigma = 0.8
    c = barron_constant_gaussian(d, sigma=sigma)
    assert c == pytest.approx(math.sqrt(2) * gamma((d + 1) / 2) / gamma(d / 2) / sigma, rel=1e-12)
    # Monte Carlo of C_f = E|w|, w ~ N(0, I / sigma^2) (f's Fourier distribution), 200k samples
    w = np.random.default_rng(d).standard_normal((200_000, d)) / sigma
    norms = np.linalg.norm(w, axis=1)
    assert abs(norms.mean() - c) < 5 * norms.std() / math.sqrt(len(norms))
    # invariant: C_f ~ sqrt(d)/sigma for large d (chi mean)
    if d >= 7:
        assert c == pytest.approx(math.sqrt(d) / sigma, rel=0.05)
