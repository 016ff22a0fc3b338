"""Closed-form predictions (``sphericalcow.predict``) against explicit linear algebra and simulated training.

The reference model is linear in its parameters, f(x) = phi(x) . w with random features phi, so the linearisation
is exact and the NTK is Theta = phi phi^T.  Gradient descent on w with the loss L = 1/(2N) sum ||f - y||^2 is then
simulated directly, and the gradient flow ODE is integrated numerically; both are compared with the predictions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate import solve_ivp

import sphericalcow.predict as predict
from sphericalcow.errors import SphericalCowError
from sphericalcow.predict import NTKPredictor, gp_inference, gradient_descent_mse

N, M, D = 12, 5, 2  # training points, test points, outputs


def features(p: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random features on N training and M test inputs: (N, p), (M, p)."""
    rng = np.random.default_rng(seed)
    phi = rng.standard_normal((N + M, p))
    return phi[:N], phi[N:]


def targets(seed: int = 1, d: int | None = D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(N if d is None else (N, d))


def simulate_gd(phi, phi_s, y, w0, lr, steps):
    """Plain gradient descent on w for L = 1/(2N) sum_i ||phi_i . w - y_i||^2; outputs at the given step counts."""
    w = w0.copy()
    out_train, out_test = {}, {}
    for k in range(max(steps) + 1):
        if k in steps:
            out_train[k], out_test[k] = phi @ w, phi_s @ w
        w = w - lr * phi.T @ (phi @ w - y) / phi.shape[0]
    return np.stack([out_train[k] for k in steps]), np.stack([out_test[k] for k in steps])


def flow_operator(theta: np.ndarray, a: float, t: float) -> np.ndarray:
    """Theta^{-1} (I - exp(-a Theta t)) without inverting Theta: the top-right block of expm([[-a t Theta, a t I],
    [0, 0]]) is phi_1(-a t Theta) a t = sum_k (-a t Theta)^k a t / (k+1)!.  Valid for singular Theta."""
    n = theta.shape[0]
    big = np.zeros((2 * n, 2 * n))
    big[:n, :n] = -a * t * theta
    big[:n, n:] = a * t * np.eye(n)
    return scipy.linalg.expm(big)[:n, n:]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ----------------------------------------------------------------------------------------------------------------
# gp_inference
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reg, absolute", [(0.0, False), (1e-3, False), (0.5, True)])
@pytest.mark.parametrize("d", [None, D])
def test_gp_inference_matches_explicit_formula(reg, absolute, d):
    phi, phi_s = features(p=40)
    k, ks, kss = phi @ phi.T, phi_s @ phi.T, phi_s @ phi_s.T
    y = targets(d=d)
    r = reg if absolute else reg * np.trace(k) / N
    a = k + r * np.eye(N)
    mean_ref = ks @ scipy.linalg.solve(a, y, assume_a="pos")
    cov_ref = kss - ks @ scipy.linalg.solve(a, ks.T, assume_a="pos")
    post = gp_inference(k, y, ks, kss, diag_reg=reg, diag_reg_absolute_scale=absolute)
    assert post.mean.dtype == torch.float64 and post.mean.shape == mean_ref.shape
    assert rel_err(post.mean, mean_ref) < 1e-12  # measured <= 5e-16
    assert rel_err(post.covariance, cov_ref) < 1e-12  # measured <= 3e-16 relative to max |cov|
    # torch inputs (float32 is converted), and no covariance without k_test_test
    post2 = gp_inference(
        torch.tensor(k), torch.tensor(y), torch.tensor(ks), diag_reg=reg, diag_reg_absolute_scale=absolute
    )
    assert post2.covariance is None
    torch.testing.assert_close(post2.mean, post.mean, rtol=0, atol=0)


def test_gp_posterior_invariants():
    phi, phi_s = features(p=40, seed=3)
    k, ks, kss = phi @ phi.T, phi_s @ phi.T, phi_s @ phi_s.T
    y = targets()
    post = gp_inference(k, y, ks, kss)
    cov = post.covariance.numpy()
    scale = np.abs(kss).max()
    assert np.array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > -1e-10 * scale  # PSD
    assert np.linalg.eigvalsh(kss - cov).min() > -1e-10 * scale  # posterior <= prior (Loewner order)
    # noise-free: interpolates the training data, with zero variance there
    at_train = gp_inference(k, y, k, k)
    assert rel_err(at_train.mean, y) < 1e-9  # measured 3e-16
    assert np.abs(at_train.covariance.numpy()).max() < 1e-9 * np.abs(k).max()


# ----------------------------------------------------------------------------------------------------------------
# gradient_descent_mse: means
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [40, 7])  # full-rank NTK, and rank 7 < N (zero eigenvalues)
@pytest.mark.parametrize("lr_frac", [0.05, 0.95])  # fraction of the stability limit 2N / lambda_max
@pytest.mark.parametrize("with_f0", [False, True])
def test_discrete_gradient_descent_is_exact(p, lr_frac, with_f0):
    phi, phi_s = features(p, seed=p)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y = targets()
    lr = lr_frac * 2 * N / np.linalg.eigvalsh(theta).max()
    w0 = np.random.default_rng(5).standard_normal((p, D)) if with_f0 else np.zeros((p, D))
    steps = [0, 1, 2, 7, 60, 300]
    train_ref, test_ref = simulate_gd(phi, phi_s, y, w0, lr, steps)
    f0 = {"f0_train": phi @ w0, "f0_test": phi_s @ w0} if with_f0 else {}
    pred = gradient_descent_mse(theta, y, lr, steps, ntk_test_train=theta_s, gradient_flow=False, **f0)
    assert pred.train_mean.shape == (len(steps), N, D) and pred.test_mean.shape == (len(steps), M, D)
    assert rel_err(pred.train_mean, train_ref) < 1e-10  # measured <= 1e-14
    assert rel_err(pred.test_mean, test_ref) < 1e-10  # measured <= 1e-13
    predictor = NTKPredictor(theta, y, lr, ntk_test_train=theta_s, gradient_flow=False, **f0)
    assert predictor.max_learning_rate == pytest.approx(lr / lr_frac, rel=1e-12)


@pytest.mark.parametrize("p", [40, 7])
def test_gradient_flow_matches_ode_integration(p):
    """Integrate dw/dt = -(lr/N) phi^T (phi w - y) numerically (DOP853) and compare at several t."""
    phi, phi_s = features(p, seed=10 + p)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y = targets()
    w0 = np.random.default_rng(2).standard_normal((p, D))
    lr = 0.3
    ts = [0.0, 0.5, 3.0, 20.0, 200.0]

    def rhs(_, w):
        w = w.reshape(p, D)
        return (-lr * phi.T @ (phi @ w - y) / N).ravel()

    sol = solve_ivp(rhs, (0, ts[-1]), w0.ravel(), method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-12)
    ws = sol.y.T.reshape(len(ts), p, D)
    pred = gradient_descent_mse(theta, y, lr, ts, ntk_test_train=theta_s, f0_train=phi @ w0, f0_test=phi_s @ w0)
    assert rel_err(pred.train_mean, phi @ ws) < 1e-9  # measured 5e-12 (the ODE tolerance)
    assert rel_err(pred.test_mean, phi_s @ ws) < 1e-9


def test_gradient_flow_vs_gradient_descent_is_first_order_in_lr():
    """At fixed lr * steps, GD differs from the flow by O(lr): halving lr halves the error."""
    phi, phi_s = features(40)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y = targets()
    lr_max = 2 * N / np.linalg.eigvalsh(theta).max()
    errs = []
    for lr, steps in [(0.02 * lr_max, 100), (0.01 * lr_max, 200), (0.005 * lr_max, 400)]:
        train_ref, test_ref = simulate_gd(phi, phi_s, y, np.zeros((40, D)), lr, [steps])
        pred = gradient_descent_mse(theta, y, lr, steps, ntk_test_train=theta_s)  # flow, same lr and t = steps
        errs.append(max(rel_err(pred.train_mean, train_ref[0]), rel_err(pred.test_mean, test_ref[0])))
    # per eigenmode |exp(-x T) - (1 - x)^T| <= x / (2e) (1 + O(x)), x = lr lambda / N <= 0.04 here (7.4e-3);
    # measured errors 2.8e-3, 1.4e-3, 6.9e-4 (ratios 1.998, 1.999)
    assert errs[0] < 0.04 / (2 * math.e) * 2
    assert errs[0] / errs[1] == pytest.approx(2, rel=0.05) and errs[1] / errs[2] == pytest.approx(2, rel=0.05)


@pytest.mark.parametrize("reg", [0.0, 1e-2])
def test_infinite_time_is_kernel_regression(reg):
    phi, phi_s = features(40, seed=4)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y = targets()
    f0, f0_s = np.full((N, D), 0.3), np.full((M, D), -0.2)
    pred = NTKPredictor(theta, y, 1.0, ntk_test_train=theta_s, diag_reg=reg, f0_train=f0, f0_test=f0_s)
    inf = pred(math.inf)
    gp = gp_inference(theta, y - f0, theta_s, diag_reg=reg)
    assert rel_err(inf.test_mean, gp.mean.numpy() + f0_s) < 1e-12
    gp_train = gp_inference(theta, y - f0, theta, diag_reg=reg)
    assert rel_err(inf.train_mean, gp_train.mean.numpy() + f0) < 1e-12
    if reg == 0:
        assert np.array_equal(inf.train_mean.numpy(), y)
    # continuity: a large finite time (slowest mode decayed by e^-60) agrees with t = inf
    lam_min = np.linalg.eigvalsh(theta).min() + (reg * np.trace(theta) / N)
    big = pred([0.0, 60 * N / lam_min, math.inf])
    assert rel_err(big.test_mean[1], big.test_mean[2]) < 1e-10  # measured 1e-15
    assert rel_err(big.train_mean[1], big.train_mean[2]) < 1e-10
    assert np.array_equal(big.train_mean[0].numpy(), f0) and np.array_equal(big.test_mean[0].numpy(), f0_s)


def test_time_axis_shapes_and_caching(monkeypatch):
    phi, phi_s = features(40)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y1 = targets(d=None)
    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: calls.append(1) or eigh(a))
    pred = NTKPredictor(theta, y1, 0.5, ntk_test_train=theta_s)
    only_inf = pred(np.inf)
    assert calls == []  # t = inf needs no eigendecomposition
    assert only_inf.train_mean.shape == (N,) and only_inf.test_mean.shape == (M,) and only_inf.t.ndim == 0
    many = pred(torch.tensor([3.0, math.inf, 0.0, 10.0]))
    scalar = pred(10.0)
    assert len(calls) == 1  # one eigendecomposition, reused across calls and times
    assert many.train_mean.shape == (4, N) and many.test_mean.shape == (4, M) and many.test_covariance is None
    torch.testing.assert_close(many.test_mean[3], scalar.test_mean, rtol=0, atol=0)
    torch.testing.assert_close(many.test_mean[1], only_inf.test_mean, rtol=1e-13, atol=0)
    assert torch.equal(many.test_mean[2], torch.zeros(M, dtype=torch.float64))
    train_only = gradient_descent_mse(theta, y1, 0.5, [1, 2])
    assert train_only.test_mean is None and train_only.train_mean.shape == (2, N)
    empty = pred([])
    assert empty.train_mean.shape == (0, N)


# ----------------------------------------------------------------------------------------------------------------
# gradient_descent_mse: covariance of the ensemble (Lee et al. 2019 eq. (16))
# ----------------------------------------------------------------------------------------------------------------
def test_covariance_invariants_when_nngp_equals_ntk():
    """Only the last layer trains: NNGP = NTK = phi phi^T.  Then cov(0) = prior and cov(inf) = GP posterior."""
    phi, phi_s = features(40, seed=7)
    k, ks, kss = phi @ phi.T, phi_s @ phi.T, phi_s @ phi_s.T
    y = targets()
    kw = {"ntk_test_train": ks, "nngp_train_train": k, "nngp_test_train": ks, "nngp_test_test": kss}
    ts = [0.0, 0.1, 1.0, 10.0, 1e3, math.inf]
    pred = gradient_descent_mse(k, y, 1.0, ts, ntk_test_test=kss, **kw)
    cov = pred.test_covariance.numpy()
    assert cov.shape == (len(ts), M, M)
    assert np.array_equal(cov[0], kss)
    gp = gp_inference(k, y, ks, kss)
    assert rel_err(cov[-1], gp.covariance) < 1e-12  # measured 1e-16
    assert rel_err(pred.test_mean[-1], gp.mean) < 1e-12
    scale = np.abs(kss).max()
    for c in cov:
        assert np.array_equal(c, c.T)
        assert np.linalg.eigvalsh(c).min() > -1e-10 * scale
        assert np.linalg.eigvalsh(kss - c).min() > -1e-10 * scale  # training with NNGP = NTK only shrinks it
    # scalar t: no time axis, same numbers
    one = gradient_descent_mse(k, y, 1.0, 10.0, **kw)
    assert one.test_covariance.shape == (M, M)
    torch.testing.assert_close(one.test_covariance, pred.test_covariance[3], rtol=1e-13, atol=1e-13 * scale)


@pytest.mark.parametrize("gradient_flow", [True, False])
def test_covariance_matches_explicit_operator_with_nngp_ne_ntk(gradient_flow):
    """f(x) = phi(x) . w + psi(x) . u with u frozen: NTK = phi phi^T, NNGP = phi phi^T + psi psi^T.

    f_t(x*) = f0(x*) - M(t) f0(X) + const, so cov = K** + M K M^T - M K_X* - K_*X M^T with M(t) computed
    independently: by iterating the function-space GD recursion (steps) or by a matrix exponential (flow).
    """
    phi, phi_s = features(7, seed=8)  # rank-deficient NTK
    psi, psi_s = features(30, seed=9)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    k = theta + psi @ psi.T
    k_sx = theta_s + psi_s @ psi.T
    k_ss = phi_s @ phi_s.T + psi_s @ psi_s.T
    y = targets()
    lr = 0.8 * 2 * N / np.linalg.eigvalsh(theta).max()
    a = lr / N
    ts = [0, 1, 5, 40]
    pred = gradient_descent_mse(
        theta,
        y,
        lr,
        ts,
        ntk_test_train=theta_s,
        nngp_train_train=k,
        nngp_test_train=k_sx,
        nngp_test_test=k_ss,
        gradient_flow=gradient_flow,
    )
    for i, t in enumerate(ts):
        if gradient_flow:
            op = theta_s @ flow_operator(theta, a, t)
        else:  # f_{k+1} = f_k - a Theta f_k,  f*_{k+1} = f*_k - a Theta_* f_k  from f_0 = I, f*_0 = 0 gives -M
            f, fs = np.eye(N), np.zeros((M, N))
            for _ in range(t):
                f, fs = f - a * theta @ f, fs - a * theta_s @ f
            op = -fs
        cov_ref = k_ss + op @ k @ op.T - op @ k_sx.T - k_sx @ op.T
        assert rel_err(pred.test_covariance[i], cov_ref) < 1e-10  # measured <= 2e-15
        assert rel_err(pred.test_mean[i], op @ y) < 1e-10  # measured <= 7e-15


def test_covariance_monte_carlo_ensemble():
    """Train an ensemble of 6000 random initialisations of f = phi . w + psi . u (u frozen) by GD; the sample mean
    and covariance of the test outputs agree with eqs. (15)-(16) within their standard errors."""
    p, q, s, steps = 7, 30, 6000, 25
    phi, phi_s = features(p, seed=11)
    psi, psi_s = features(q, seed=12)
    theta, theta_s = phi @ phi.T, phi_s @ phi.T
    y = targets(d=None)
    lr = 0.5 * 2 * N / np.linalg.eigvalsh(theta).max()
    rng = np.random.default_rng(13)
    w, u = rng.standard_normal((p, s)), rng.standard_normal((q, s))
    frozen, frozen_s = psi @ u, psi_s @ u
    for _ in range(steps):
        w = w - lr * phi.T @ (phi @ w + frozen - y[:, None]) / N
    out = phi_s @ w + frozen_s  # (M, s)
    pred = gradient_descent_mse(
        theta,
        y,
        lr,
        steps,
        ntk_test_train=theta_s,
        nngp_train_train=theta + psi @ psi.T,
        nngp_test_train=theta_s + psi_s @ psi.T,
        nngp_test_test=phi_s @ phi_s.T + psi_s @ psi_s.T,
        gradient_flow=False,
    )
    cov = pred.test_covariance.numpy()
    var = np.diag(cov)
    z_mean = (out.mean(1) - pred.test_mean.numpy()) / np.sqrt(var / s)
    se_cov = np.sqrt((np.outer(var, var) + cov**2) / s)
    z_cov = (np.cov(out) - cov) / se_cov
    assert np.abs(z_mean).max() < 4.5 and np.abs(z_cov).max() < 4.5  # measured max |z| 1.2 (mean), 2.3 (cov)


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------
def _good():
    phi, phi_s = features(40)
    return phi @ phi.T, targets(), phi_s @ phi.T


def _bad_cases():
    th, y, ts = _good()
    asym = th.copy()
    asym[0, 1] += 1.0
    nan = th.copy()
    nan[2, 3] = np.nan
    neg = th - 2 * np.linalg.eigvalsh(th).max() * np.outer(np.ones(N), np.ones(N)) / N
    rank1 = np.outer(y[:, 0], y[:, 0])
    gd = gradient_descent_mse
    return [
        (lambda: gd(th[:, :5], y, 1.0, 1.0), r"ntk_train_train has shape \(12, 5\)"),
        (lambda: gd(th, y[:5], 1.0, 1.0), r"y_train has shape \(5, 2\); expected \(12,\) or \(12, d_out\)"),
        (lambda: gd(th, y, 0.0, 1.0), "lr=0.0"),
        (lambda: gd(th, y, -1.0, 1.0), "lr=-1.0"),
        (lambda: gd(th, y, math.nan, 1.0), "lr=nan"),
        (lambda: gd(th, y, 1.0, -1.0), "t=-1.0"),
        (lambda: gd(th, y, 1.0, [0.0, math.nan]), "t=nan"),
        (lambda: gd(th, y, 1.0, -math.inf), "t=-inf"),
        (lambda: gd(th, y, 1.0, [[1.0]]), r"t has shape \(1, 1\)"),
        (lambda: gd(th, y, 1.0, "soon"), "t='soon'"),
        (lambda: gd(th, y, 1.0, [1, 2.5], gradient_flow=False), "t=2.5.*integers"),
        (lambda: gd(nan, y, 1.0, 1.0), "ntk_train_train contains NaN"),
        (lambda: gd(asym, y, 1.0, 1.0), "ntk_train_train is not symmetric"),
        (lambda: gd(neg, y, 1.0, 1.0), "ntk_train_train has eigenvalue"),
        (lambda: gd(th, y, 1.0, 1.0, diag_reg=-1.0), "diag_reg=-1.0"),
        (lambda: gd(th, y, 1.0, 1.0, ntk_test_train=ts[:, :4]), r"ntk_test_train has shape \(5, 4\)"),
        (lambda: gd(th, y, 1.0, 1.0, ntk_test_train=ts, nngp_train_train=th), "without nngp_test_train"),
        (
            lambda: gd(th, y, 1.0, 1.0, nngp_train_train=th, nngp_test_train=ts, nngp_test_test=th[:5, :5]),
            "without ntk_test_train",
        ),
        (
            lambda: gd(
                th,
                y,
                1.0,
                1.0,
                ntk_test_train=ts,
                nngp_train_train=th,
                nngp_test_train=ts,
                nngp_test_test=th[:5, :5],
                f0_train=y,
            ),
            "f0_train",
        ),
        (lambda: gd(th, y, 1.0, 1.0, ntk_test_train=ts, f0_train=y), "f0_train given without f0_test"),
        (lambda: gd(th, y, 1.0, 1.0, f0_train=y[:, :1]), r"f0_train has shape \(12, 1\)"),
        (lambda: gd(th, y, 1.0, 1.0, ntk_test_train=ts, f0_train=y, f0_test=y), r"f0_test has shape \(12, 2\)"),
        (lambda: gd(th, y, 1.0, 1.0, ntk_test_train=ts, ntk_test_test=th), r"ntk_test_test has shape \(12, 12\)"),
        (lambda: gd(th, y.astype(str), 1.0, 1.0), "y_train has dtype"),
        (lambda: gd(rank1, y, 1.0, [1.0, math.inf]), "ntk_train_train is (numerically singular|not positive def)"),
        (lambda: gp_inference(th[:7, :7] * 0 + 1.0, y[:7], ts[:, :7]), "pass diag_reg > 0"),
        (lambda: gp_inference(th, y, ts, ts), r"k_test_test has shape \(5, 12\); expected \(5, 5\)"),
        (lambda: gp_inference(th, y, ts.T), r"k_test_train has shape \(12, 5\)"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_raise_named_errors(case):
    call, pattern = _bad_cases()[case]
    with pytest.raises(SphericalCowError, match=pattern) as info:
        call()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_public_namespace():
    assert set(predict.__all__) == {
        "GPPosterior",
        "GradientDescentPrediction",
        "NTKPredictor",
        "gp_inference",
        "gradient_descent_mse",
    }
    assert predict.gp_inference is gp_inference
