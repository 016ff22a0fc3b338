"""Finite-width theory (vertex, kurtosis, NTK fluctuations) against ensembles of real random networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sphericalcow as sc
from sphericalcow.measure.finite_width import _forward, ensemble_statistics
from sphericalcow.theory.finite_width import finite_width


def test_batched_ensemble_is_the_real_module():
    # The batched forward must be the network arch.build() makes: copy chunk member 3's weights into the module.
    arch = sc.MLP(5, [7, 6], 2, d_out=3, activation="tanh", cw=1.3, cb=0.2)
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    zs, params = _forward(arch, [5, 7, 6, 3], x, 4, torch.Generator().manual_seed(0), torch.float64, True)
    net = arch.build(seed=0, dtype=torch.float64)
    mods = [b.dense for b in net.layers] + [net.readout]
    with torch.no_grad():
        for m, (W, beta) in zip(mods, zip(params[::2], params[1::2], strict=True), strict=True):
            m.weight.copy_(W[3])
            m.bias.copy_(beta[3])
    torch.testing.assert_close(net(x[None])[0], zs[-1][3].detach(), rtol=1e-14, atol=1e-14)
    # and the per-network NTK of output 0 from the batched backward equals sc.empirical_ntk of that module
    g = torch.autograd.grad(zs[-1][:, 0].sum(), params)
    theta = sum(t.pow(2).flatten(1).sum(1) for t in g)[3]
    emp = sc.empirical_ntk(net, x[None], outputs="full")[0, 0, 0, 0]
    torch.testing.assert_close(theta, emp, rtol=1e-12, atol=1e-12)


def _z(meas, theory, se):
    return (meas - theory) / se


@pytest.mark.parametrize(
    "act,cw,cb", [("relu", 2.0, 0.0), ("tanh", 1.0, 0.0), pytest.param("gelu", 1.8, 0.1, marks=pytest.mark.slow)]
)
def test_leading_order_against_networks_by_richardson(act, cw, cb):
    # Measured = a/n + c/n^2 + noise; n m(n) = a + c/n, so 2 (2n m(2n)) - n m(n) = a removes the O(1/n^2) term
    # (visible: ReLU NTK variance at n=32, L=5 is 0.94 measured vs 0.65 at leading order, at n=64 0.39 vs 0.33).
    # The extrapolated slope a must equal n x (leading-order theory) within 4 combined standard errors (5 layers
    # x 3 quantities x 3 activations = 45 comparisons; a 4-sigma miss has probability ~3e-3 in all of them).
    n, L, nets = 32, 5, 4000
    meas = [
        ensemble_statistics(sc.MLP(4, m, L, d_out=m, activation=act, cw=cw, cb=cb), nets, seed=7) for m in (n, 2 * n)
    ]
    th = finite_width(sc.MLP(4, n, L, d_out=n, activation=act, cw=cw, cb=cb))
    for q in ("kurtosis", "four_point_cross", "ntk_variance"):
        m1, m2 = getattr(meas[0], q)[1:], getattr(meas[1], q)[1:]
        s1, s2 = getattr(meas[0], q + "_se")[1:], getattr(meas[1], q + "_se")[1:]
        a = 4 * n * m2 - n * m1
        se = np.hypot(4 * n * s2, n * s1)
        expected = n * getattr(th, q)[1:]
        assert np.all(np.abs(a - expected) < 4 * se), (q, a, expected, se)
        assert np.all(expected[1:] > 3 * se[1:].mean() / 4) or q == "four_point_cross"  # the check has power
    # The mean NTK has its own O(1/n) shift (GELU: +2.5% at n=64, layer 6), which the infinite-width value does not
    # include: extrapolate it away the same way (2 m(2n) - m(n)), with the standard error from the measured variance.
    t1, t2 = meas[0].theta, meas[1].theta
    se_t = np.hypot(
        2 * t2 * np.sqrt(np.clip(meas[1].ntk_variance, 0, None) / nets),
        t1 * np.sqrt(np.clip(meas[0].ntk_variance, 0, None) / nets),
    )
    assert np.all(np.abs(2 * t2 - t1 - th.theta) <= 4 * se_t + 1e-12), (2 * t2 - t1, th.theta, se_t)


def test_first_layer_is_gaussian_and_ntk_deterministic():
    m = ensemble_statistics(sc.MLP(3, 16, 2, activation="relu", cw=2.0, cb=0.3), 3000, seed=1)
    assert abs(m.kurtosis[0]) < 4 * m.kurtosis_se[0]
    assert abs(m.ntk_variance[0]) < 1e-12


def test_relu_exact_formula_holds_at_order_one_aspect_ratio():
    # r = 8/16 = 0.5: LO is far off (7.5 vs exact 25.6 at the last hidden layer) and the measurement follows the
    # exact product formula. Heavy tails make the SE noisy, so 4 SE.
    arch = sc.MLP(4, 16, 6, d_out=16, activation="relu", cw=2.0)
    m = ensemble_statistics(arch, 8000, seed=3, ntk=False)
    fw = finite_width(arch)
    assert np.all(np.abs(m.kurtosis - fw.kurtosis_exact) < 4 * m.kurtosis_se + 1e-9)
    assert np.max((m.kurtosis - fw.kurtosis)[1:] / m.kurtosis_se[1:]) > 4  # and the 1/n expansion visibly fails


def test_seed_reproduces_and_bad_arguments():
    arch = sc.MLP(3, 8, 2, activation="tanh")
    a = ensemble_statistics(arch, 50, seed=5, chunk=16)
    b = ensemble_statistics(arch, 50, seed=5, chunk=16)
    np.testing.assert_array_equal(a.kurtosis, b.kurtosis)
    for kwargs, msg in [
        ({"n_nets": 1}, "n_nets"),
        ({"n_nets": 10, "chunk": 0}, "chunk"),
        ({"n_nets": 10, "x": [1.0]}, "d_in"),
    ]:
        with pytest.raises(sc.SphericalCowError, match=msg):
            ensemble_statistics(arch, **kwargs)
    with pytest.raises(sc.SphericalCowError, match="parametrization"):
        ensemble_statistics(sc.MLP(3, 8, 2, activation="tanh", parametrization="standard"), 10)
    with pytest.raises(sc.SphericalCowError, match="residual"):
        ensemble_statistics(sc.MLP(3, 8, 2, activation="tanh", residual=True), 10)


def test_ntk_velocity_and_same_neuron_covariance_against_networks():
    # E[dTheta/dt] at t=0 = -2 E[f dH] and Cov(f^2, Theta) = (D + 2F)/n, leading order, for ReLU (C_b = 0):
    # Richardson between n = 32 and 64 (measured n x rate: -400, -354 -> -308 vs theory -320 at L = 3), 4 SE.
    from sphericalcow.measure.finite_width import ntk_velocity_samples
    from sphericalcow.theory.finite_width import ntk_velocity

    L, n = 3, 32
    th = ntk_velocity(sc.MLP(4, n, L, activation="relu", cw=2.0))
    fw = finite_width(sc.MLP(4, n, L, activation="relu", cw=2.0))
    m1, m2 = (ntk_velocity_samples(sc.MLP(4, m, L, activation="relu", cw=2.0), 10000, seed=2) for m in (n, 2 * n))
    a, se = 4 * n * m2.rate - n * m1.rate, np.hypot(4 * n * m2.rate_se, n * m1.rate_se)
    assert abs(a - n * th.rate) < 4 * se, (a, n * th.rate, se)
    assert abs(n * th.rate) > 5 * se  # the effect is resolved
    c, cse = 4 * n * m2.cov_f2_theta - n * m1.cov_f2_theta, np.hypot(4 * n * m2.cov_f2_theta_se, n * m1.cov_f2_theta_se)
    assert abs(c - (fw.D[-1] + 2 * fw.F[-1])) < 4 * cse, (c, fw.D[-1] + 2 * fw.F[-1], cse)
    # the exact integration-by-parts identity holds per ensemble, with no expansion in 1/n
    ident = -((L + 1) * m1.f**2 * m1.theta - m1.theta**2)
    assert abs(ident.mean() - m1.rate) < 4 * np.hypot(ident.std() / np.sqrt(len(ident)), m1.rate_se)


def test_ntk_velocity_refuses_what_it_cannot_compute():
    from sphericalcow.theory.finite_width import ntk_velocity

    for arch in (
        sc.MLP(3, 8, 2, activation="tanh", parametrization="standard"),
        sc.MLP(3, 8, 2, activation="relu", residual=True),
    ):
        with pytest.raises(sc.SphericalCowError, match="NTK parametrization"):
            ntk_velocity(arch)


@pytest.mark.parametrize(
    "act,cw,cb", [("gelu", 1.98306, 0.172922), ("tanh", 1.0, 0.3), ("relu", 2.0, 0.2), ("silu", 1.7, 0.1)]
)
def test_ntk_velocity_one_hidden_layer_is_exact_at_small_width(act, cw, cb):
    # with one hidden layer the first layer is Gaussian and linear in its parameters, so E[f dH] = (P + 2Q)/n holds
    # at every n: checked at n = 4 against the double-backward dNTK of 30000 networks (measured |z| <= 1.6)
    from sphericalcow.measure.finite_width import ntk_velocity_samples

    arch = sc.MLP(3, 4, 1, activation=act, cw=cw, cb=cb)
    th = sc.ntk_velocity(arch).rate
    m = ntk_velocity_samples(arch, 30000, seed=7)
    assert abs(m.rate - th) < 4 * m.rate_se, (m.rate, th, m.rate_se)
    assert abs(th) > 10 * m.rate_se


def test_ntk_change_after_one_gradient_step_matches_velocity():
    # the NTK before and after one step of gradient descent (eta = 1e-3, target y = 0.7) on 40000 real one-hidden-
    # layer GELU networks, with no second derivatives: E[Theta_after - Theta_before] / eta = E[dTheta/dt] + O(eta)
    cw, cb, n, eta, y = 1.98306, 0.172922, 6, 1e-3, 0.7
    arch = sc.MLP(3, n, 1, activation="gelu", cw=cw, cb=cb)
    gen = torch.Generator().manual_seed(3)
    b = 40000
    x = torch.ones(3, dtype=torch.float64)
    params = [
        torch.randn(b, n, 3, generator=gen, dtype=torch.float64),
        torch.randn(b, n, generator=gen, dtype=torch.float64),
        torch.randn(b, n, generator=gen, dtype=torch.float64),
        torch.randn(b, generator=gen, dtype=torch.float64),
    ]

    def f_and_grads(ps):
        ps = [p.detach().requires_grad_(True) for p in ps]
        W1, b1, w2, b2 = ps
        z1 = np.sqrt(cb) * b1 + np.sqrt(cw / 3) * (W1 @ x)
        f = np.sqrt(cb) * b2 + np.sqrt(cw / n) * (w2 * torch.nn.functional.gelu(z1)).sum(1)
        g = torch.autograd.grad(f.sum(), ps)
        return f.detach(), g, sum(t.pow(2).flatten(1).sum(1) if t.dim() > 1 else t.pow(2) for t in g)

    f, g, th0 = f_and_grads(params)
    stepped = [p - eta * (f - y).reshape(-1, *([1] * (p.dim() - 1))) * gp for p, gp in zip(params, g, strict=True)]
    _, _, th1 = f_and_grads(stepped)
    d = ((th1 - th0) / eta).numpy()
    theory = sc.ntk_velocity(arch).rate
    se = d.std(ddof=1) / np.sqrt(b)
    assert abs(d.mean() - theory) < 4 * se, (d.mean(), theory, se)
    assert abs(theory) > 10 * se


def test_ntk_velocity_tanh_depth3_richardson():
    # the P, Q recursions across layers for a K*=0 activation at criticality: Richardson between n = 16 and 32
    # (80000 nets each; measured 0.482 +- 0.013 vs theory 0.492 for n x rate), 4 SE. Power: dropping the
    # C_W Theta d<sigma'^2>/dK F term gives 0.384 (z = 7.3), dropping C_W <sigma sigma''> B gives 0.294 (z = 14),
    # dropping the sigma'' source gives -0.160 (z = 48); the one-hidden-layer tests see only the source
    from sphericalcow.measure.finite_width import ntk_velocity_samples

    L, n = 3, 16
    th = n * sc.ntk_velocity(sc.MLP(4, n, L, activation="tanh", cw=1.0)).rate
    m1, m2 = (
        ntk_velocity_samples(sc.MLP(4, m, L, activation="tanh", cw=1.0), 80000, seed=5, chunk=2000) for m in (n, 2 * n)
    )
    a, se = 4 * n * m2.rate - n * m1.rate, np.hypot(4 * n * m2.rate_se, n * m1.rate_se)
    assert abs(a - th) < 4 * se, (a, th, se)
    assert th > 5 * se
