"""Lin, Tegmark & Rolnick (2017) constructions: the 4-neuron multiplication gate, the 4(n-1)-neuron deep product and
the 2^n-neuron one-hidden-layer product, checked numerically against their Taylor-expansion error laws."""

import math

import numpy as np
import pytest
import torch

from sphericalcow.errors import SphericalCowError
from sphericalcow.theory import expressivity as ex


def points(n, P=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(P, n, generator=g, dtype=torch.float64) - 1


def test_activation_derivatives_against_closed_forms():
    # softplus: sigma(0) = log 2, sigma' = sigmoid: 1/2, 1/4, 0, -1/8 (derivatives of the sigmoid at 0)
    d = ex.activation_derivatives("softplus", 4)
    assert d == pytest.approx([math.log(2), 0.5, 0.25, 0.0, -0.125], abs=1e-12)
    assert ex.activation_derivatives("exp", 5) == pytest.approx([1.0] * 6)
    # gelu = x Phi(x): gelu''(0) = 2 phi(0)
    assert ex.activation_derivatives("gelu", 2)[2] == pytest.approx(2 / math.sqrt(2 * math.pi), rel=1e-10)


@pytest.mark.parametrize("act", ["softplus", "gelu", "exp"])
def test_gate_error_is_lambda_squared_with_the_taylor_coefficient(act):
    x = points(2)
    c = ex.gate_error_coefficient(act)
    lead = x[:, 0] * x[:, 1] * (x[:, 0] ** 2 + x[:, 1] ** 2)
    errs, lams = [], [0.2, 0.1, 0.05, 0.025]
    for lam in lams:
        e = ex.multiplication_gate(x[:, 0], x[:, 1], act, lam) - x[:, 0] * x[:, 1]
        errs.append(float(e.abs().max()))
        # residual after the predicted leading term is O(lambda^4)
        resid = float((e - c * lam**2 * lead).abs().max())
        assert resid < 10 * lam**4 * max(1.0, abs(c))
    slope = np.polyfit(np.log(lams), np.log(errs), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.03)


def test_gate_coefficient_closed_forms():
    assert ex.gate_error_coefficient("softplus") == pytest.approx((-1 / 8) / (6 / 4), rel=1e-10)
    assert ex.gate_error_coefficient("exp") == pytest.approx(1 / 6, rel=1e-12)


def test_gate_weights_are_four_neurons_and_need_curvature():
    w = ex.multiplication_gate_weights("softplus", 0.1)
    assert w["W"].shape == (4, 2) and w["a"].shape == (4,) and w["neurons"] == 4
    with pytest.raises(SphericalCowError, match="sigma''"):
        ex.multiplication_gate_weights("tanh", 0.1)  # tanh''(0) = 0
    with pytest.raises(SphericalCowError, match="lam"):
        ex.multiplication_gate_weights("softplus", 0.0)


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_deep_product_uses_4_n_minus_1_neurons_and_converges(n):
    assert ex.deep_product_neurons(n) == 4 * (n - 1)
    x = points(n, seed=n)
    errs = [float((ex.deep_product(x, "softplus", lam) - x.prod(1)).abs().max()) for lam in (0.08, 0.04)]
    assert errs[1] < errs[0] / 3  # O(lambda^2): halving lambda divides the error by ~4
    assert errs[1] < 1e-3


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_shallow_product_with_2_to_the_n_neurons(n):
    assert ex.shallow_product_neurons(n) == 2**n
    x = points(n, seed=10 + n)
    errs = [float((ex.shallow_product(x, "exp", lam) - x.prod(1)).abs().max()) for lam in (0.1, 0.05)]
    assert errs[1] < errs[0] / 3
    assert errs[1] < 5e-3


def test_shallow_product_needs_a_nonzero_nth_derivative():
    with pytest.raises(SphericalCowError, match=r"sigma\^\(3\)"):
        ex.shallow_product(points(3), "softplus", 0.1)  # softplus'''(0) = sigmoid''(0) = 0
