"""Kernel recursions against independently derived closed-form iterations, invariants and bad input."""

import math

import numpy as np
import pytest

import sphericalcow as sc
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.recursions import kernel_profile


def _inputs(rho=0.3, q=(1.0, 2.0), d=5):
    u = np.zeros(d)
    u[0] = 1
    v = np.zeros(d)
    v[1] = 1
    return np.stack([math.sqrt(q[0] * d) * u, math.sqrt(q[1] * d) * (rho * u + math.sqrt(1 - rho**2) * v)])


def test_relu_pair_recursion_matches_the_arc_cosine_map():
    """Cho & Saul (2009): <relu relu> = sqrt(K11 K22) (sin t + (pi - t) cos t) / (2 pi), t = arccos rho;
    written out here independently of the library and iterated by hand."""
    cw, cb, L = 1.8, 0.1, 12
    x = _inputs()
    prof = kernel_profile(sc.MLP(5, 7, L, activation="relu", cw=cw, cb=cb), x)
    K = cb + cw * x @ x.T / 5
    for layer in range(L + 1):
        np.testing.assert_allclose(prof.K[layer], K, rtol=1e-13)
        k11, k22, k12 = K[0, 0], K[1, 1], K[0, 1]
        t = math.acos(k12 / math.sqrt(k11 * k22))
        e12 = math.sqrt(k11 * k22) * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi)
        K = cb + cw * np.array([[k11 / 2, e12], [e12, k22 / 2]])


def test_erf_pair_recursion_matches_williams_formula():
    """Williams (1997): <erf erf> = (2/pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22)))."""
    cw, cb, L = 1.3, 0.05, 8
    x = _inputs(rho=-0.4)
    prof = kernel_profile(sc.MLP(5, 7, L, activation="erf", cw=cw, cb=cb), x)
    K = cb + cw * x @ x.T / 5

    def e(a, b, c):
        return 2 / math.pi * math.asin(2 * c / math.sqrt((1 + 2 * a) * (1 + 2 * b)))

    for layer in range(L + 1):
        np.testing.assert_allclose(prof.K[layer], K, rtol=1e-12)
        k11, k22, k12 = K[0, 0], K[1, 1], K[0, 1]
        K = cb + cw * np.array([[e(k11, k11, k11), e(k11, k22, k12)], [e(k11, k22, k12), e(k22, k22, k22)]])


def test_quadrature_activation_recursion_agrees_with_its_closed_form_twin():
    """tanh has no closed form; a registered copy of erf (quadrature only) must reproduce erf's closed-form profile."""
    import torch

    name = "erf_by_quadrature_for_test"
    if name not in sc.available_activations():
        sc.register_activation(name, torch.erf)
    x = _inputs(rho=0.6)
    a = kernel_profile(sc.MLP(5, 7, 10, activation="erf", cw=2.0, cb=0.1), x)
    b = kernel_profile(sc.MLP(5, 7, 10, activation=name, cw=2.0, cb=0.1), x)
    np.testing.assert_allclose(b.K, a.K, rtol=1e-11)


def test_invariants_identical_inputs_stay_identical_and_kernels_are_psd():
    x = _inputs(rho=1.0 - 1e-15, q=(1.0, 1.0))
    prof = kernel_profile(sc.MLP(5, 7, 20, activation="tanh", cw=2.5, cb=0.1), x)
    np.testing.assert_allclose(prof.correlation(), 1.0, atol=1e-9)
    x = np.random.default_rng(0).normal(size=(6, 5))
    prof = kernel_profile(sc.MLP(5, 7, 6, activation="gelu", cw=1.7, cb=0.2), x)
    for K in prof.K:
        np.testing.assert_allclose(K, K.T, rtol=1e-14)
        assert np.linalg.eigvalsh(K).min() > -1e-12 * np.abs(K).max()


def test_residual_recursion_adds_the_branch():
    x = _inputs()
    cw, cb = 0.5, 0.02
    res = kernel_profile(sc.MLP(5, 7, 4, activation="relu", cw=cw, cb=cb, residual=True), x)
    plain = kernel_profile(sc.MLP(5, 7, 4, activation="relu", cw=cw, cb=cb), x)
    np.testing.assert_allclose(res.K[0], plain.K[0])
    np.testing.assert_allclose(res.K[1], res.K[0] + plain.K[1], rtol=1e-13)  # K^(2) = K^(1) + branch(K^(1))
    assert res.K[-1][0, 0] < res.K[-2][0, 0]  # readout is not residual


def test_overflow_is_a_clear_error_not_nan():
    x = _inputs()
    with pytest.raises(SphericalCowError, match="overflows float64 at layer"):
        kernel_profile(sc.MLP(5, 7, 1000, activation="relu", cw=50.0), x)


@pytest.mark.parametrize(
    ("x", "match"),
    [(np.ones((2, 3)), "3 features"), (np.full((2, 5), np.nan), "NaN"), (np.ones((2, 5, 1)), "shape")],
)
def test_bad_inputs(x, match):
    with pytest.raises(SphericalCowError, match=match):
        kernel_profile(sc.MLP(5, 7, 2), x)
