"""Per-layer learning rates from the learning-rate equivalence principle (sphericalcow.theory.learning_rates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sphericalcow as sc
from sphericalcow.theory.learning_rates import learning_rates


def test_relu_critical_rates_are_uniform_one_over_depth():
    # scale-invariant class (PDLT eq. 9.95): eta_b = eta_W proportional to 1/L, the same for every layer
    for L in (3, 10):
        lr = learning_rates(sc.MLP(5, 64, L, activation="relu", cw=2.0, cb=0.0), 0.3)
        np.testing.assert_allclose(lr.weight_lr, 0.3 / (L + 1), rtol=1e-13)
        assert lr.ntk == pytest.approx(0.3 * 2.0, rel=1e-13)


def test_tanh_bias_rates_fall_as_one_over_layer_and_weights_flat():
    # K*=0 class with p_perp = 1 (tanh): eta_b^{(l)} ~ 1/l, eta_W^{(l)} ~ (L/l)^0 at large l and L.
    L = 400
    lr = learning_rates(sc.MLP(1, 64, L, activation="tanh", cw=1.0, cb=0.0), 1.0)
    layer = np.arange(1, L + 2)
    mid = slice(50, 300)
    slope_b = np.polyfit(np.log(layer[mid]), np.log(lr.bias_multiplier[mid]), 1)[0]
    slope_w = np.polyfit(np.log(layer[mid]), np.log(lr.weight_multiplier[mid]), 1)[0]
    assert slope_b == pytest.approx(-1.0, abs=0.05)
    assert slope_w == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("act,cb", [("tanh", 0.1), ("gelu", 0.05), ("relu", 0.2)])
def test_contributions_equal_and_recursion_reproduces_total(act, cb):
    arch = sc.MLP(3, 64, 6, activation=act, cw=1.7, cb=cb)
    lr = learning_rates(arch, 0.5)
    assert np.allclose(lr.weight_contribution, lr.weight_contribution[0], rtol=1e-12)
    assert np.allclose(lr.bias_contribution, lr.bias_contribution[0], rtol=1e-12)
    assert lr.ntk == pytest.approx(0.5 * (cb + 1.7), rel=1e-12)


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_lr_weighted_empirical_ntk_of_real_networks(param):
    # With per-parameter rates eta_p, gradient descent follows the kernel sum_p eta_p df/dp df/dp. At width 512 its
    # mean over 12 networks must equal base_lr (C_b + C_W q), the prescription's target, for either parametrization.
    arch = sc.MLP(4, 512, 4, activation="tanh", cw=1.5, cb=0.1, parametrization=param)
    lr = learning_rates(arch, 0.2)
    x = torch.ones(1, 4, dtype=torch.float64)
    vals = []
    for seed in range(12):
        net = arch.build(seed=seed, dtype=torch.float64)
        groups = lr.param_groups(net)
        out = net(x)[0, 0]
        grads = torch.autograd.grad(out, [g["params"][0] for g in groups])
        vals.append(float(sum(g["lr"] * gr.pow(2).sum() for g, gr in zip(groups, grads, strict=True))))
    m, se = np.mean(vals), np.std(vals, ddof=1) / np.sqrt(len(vals))
    assert abs(m - lr.ntk) < 4 * se + 0.01 * lr.ntk, (m, se, lr.ntk)
    opt = torch.optim.SGD(lr.param_groups(arch.build(seed=0)), lr=1.0)  # usable as optimizer groups
    assert len(opt.param_groups) == 2 * (arch.depth + 1)


def test_bad_inputs():
    arch = sc.MLP(3, 8, 2, activation="relu")
    for bad in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(sc.SphericalCowError, match="base_lr"):
            learning_rates(arch, bad)
    with pytest.raises(sc.SphericalCowError, match="residual"):
        learning_rates(sc.MLP(3, 8, 2, activation="relu", residual=True), 0.1)
    with pytest.raises(sc.SphericalCowError, match="no parameter"):
        learning_rates(arch, 0.1).param_groups(torch.nn.Linear(3, 1))
