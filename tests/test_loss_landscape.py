"""Loss slices and interpolation: closed forms for a linear model, curvature against Hessian-vector products,
direction invariants (filter norms, orthogonality), end points, and no mutation of the models."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure.hessian import HessianOperator
from sphericalcow.measure.loss_landscape import (
    interpolate,
    loss_slice_1d,
    loss_slice_2d,
    random_directions,
)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def bn_net(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 2)).double()
    with torch.no_grad():
        m[1].running_mean.copy_(torch.randn(6) * 0.2)
        m[1].running_var.copy_(torch.rand(6) + 0.5)
    return m


def data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)


def snapshot(model):
    return [t.detach().clone() for t in [*model.parameters(), *model.buffers()]], [m.training for m in model.modules()]


def assert_unchanged(model, snap):
    now = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(now[0], snap[0], strict=True))
    assert now[1] == snap[1]


def test_linear_model_slice_is_the_exact_quadratic():
    """For f = W x + b and MSE, L(theta + a d) = mean((f + a (D x + e) - y)^2): a quadratic in a, by hand."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2).double()
    x, y = data()
    alphas = np.linspace(-2, 2, 9)
    d = {"weight": torch.randn(2, 4, dtype=torch.float64), "bias": torch.randn(2, dtype=torch.float64)}
    s = loss_slice_1d(model, "mse", (x, y), direction=d, alphas=alphas)
    with torch.no_grad():
        r = model(x) - y
        u = x @ d["weight"].T + d["bias"]
    c0, c1, c2 = float((r**2).mean()), float((2 * r * u).mean()), float((u**2).mean())
    np.testing.assert_allclose(s.losses, c0 + c1 * alphas + c2 * alphas**2, rtol=1e-12)
    assert s.center_loss == pytest.approx(c0, rel=1e-14)


def test_slice_curvature_equals_the_hessian_quadratic_form():
    model = mlp()
    x, y = data()
    for kind in ("gaussian", "filter_normalized", "orthogonal"):
        h = 1e-3
        s = loss_slice_1d(model, "mse", (x, y), direction=kind, alphas=[-h, 0.0, h], seed=3)
        curv = (s.losses[0] - 2 * s.losses[1] + s.losses[2]) / h**2
        op = HessianOperator(model, "mse", (x, y))
        v = torch.cat([s.direction[n].reshape(-1) for n in op.param_names])
        dHd = float(v @ op.matvec(v))
        slope = (s.losses[2] - s.losses[0]) / (2 * h)
        assert curv == pytest.approx(dHd, rel=1e-4, abs=1e-8), kind
        assert slope == pytest.approx(float(op.gradient() @ v), rel=1e-5), kind


def test_direction_invariants():
    model = mlp(seed=2)
    theta = dict(model.named_parameters())
    tnorm = torch.sqrt(sum((p.detach() ** 2).sum() for p in theta.values()))
    (fn,) = random_directions(model, 1, "filter_normalized", seed=0)
    for k, p in theta.items():
        if p.ndim >= 2:
            torch.testing.assert_close(fn[k].norm(dim=1), p.detach().norm(dim=1), rtol=1e-12, atol=0)
        else:
            assert torch.count_nonzero(fn[k]) == 0  # biases ignored (Li et al. 2018)
    (fb,) = random_directions(model, 1, "filter_normalized", seed=0, include_1d=True)
    assert all(torch.allclose(fb[k].norm(), p.detach().norm()) for k, p in theta.items() if p.ndim == 1)
    d1, d2 = random_directions(model, 2, "orthogonal", seed=1)

    def dot(a, b):
        return float(sum((a[k] * b[k]).sum() for k in a))

    th = {k: p.detach() for k, p in theta.items()}
    assert abs(dot(d1, d2)) < 1e-10 * float(tnorm) ** 2
    assert abs(dot(d1, th)) < 1e-10 * float(tnorm) ** 2 and abs(dot(d2, th)) < 1e-10 * float(tnorm) ** 2
    for d in (d1, d2, *random_directions(model, 1, "gaussian", seed=4)):
        assert dot(d, d) ** 0.5 == pytest.approx(float(tnorm), rel=1e-12)
    # reproducible by seed, different across seeds; the same kind over names regex only covers those names
    a, b = random_directions(model, 1, "gaussian", seed=5)[0], random_directions(model, 1, "gaussian", seed=5)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = random_directions(model, 1, "gaussian", seed=6)[0]
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert set(random_directions(model, 1, params=r"^2\.")[0]) == {"2.weight", "2.bias"}


def test_orthogonal_direction_keeps_the_norm_to_first_order():
    """|theta + a d|^2 = |theta|^2 (1 + a^2) exactly for d orthogonal to theta with |d| = |theta|."""
    model = mlp(seed=3)
    (d,) = random_directions(model, 1, "orthogonal", seed=0)
    th = {k: p.detach() for k, p in model.named_parameters()}
    n0 = float(sum((t**2).sum() for t in th.values()))
    for a in (0.1, 0.5):
        n1 = float(sum(((th[k] + a * d[k]) ** 2).sum() for k in th))
        assert n1 == pytest.approx(n0 * (1 + a * a), rel=1e-12)


def test_2d_slice_grid_and_center():
    model = mlp(seed=4)
    x, y = data()
    s = loss_slice_2d(model, "mse", (x, y), directions="orthogonal", alphas=[-0.5, 0, 0.5], betas=[-0.2, 0, 0.2, 0.4])
    assert s.losses.shape == (3, 4)
    with torch.no_grad():
        base = float(nn.functional.mse_loss(model(x), y))
    assert s.losses[1, 1] == pytest.approx(base, rel=1e-13) and s.center_loss == pytest.approx(base, rel=1e-13)
    d1, d2 = s.directions
    m2 = copy.deepcopy(model)
    with torch.no_grad():
        for k, p in m2.named_parameters():
            p.add_(0.5 * d1[k] + 0.4 * d2[k])
        ref = float(nn.functional.mse_loss(m2(x), y))
    assert s.losses[2, 3] == pytest.approx(ref, rel=1e-12)
    # the 1-D slice along d1 is the beta = 0 column
    s1 = loss_slice_1d(model, "mse", (x, y), direction=d1, alphas=[-0.5, 0, 0.5])
    np.testing.assert_allclose(s1.losses, s.losses[:, 1], rtol=1e-13)
    assert s.plot().axes and s1.plot().axes


def test_interpolation_end_points_midpoint_and_buffers():
    a, b = bn_net(0), bn_net(1)
    x, y = data(n=20)
    snaps = snapshot(a), snapshot(b)
    r = interpolate(a, b, "mse", [(x[:12], y[:12]), (x[12:], y[12:])], alphas=[0.0, 0.5, 1.0])
    a.eval(), b.eval()
    with torch.no_grad():
        la, lb = float(nn.functional.mse_loss(a(x), y)), float(nn.functional.mse_loss(b(x), y))
        mid = copy.deepcopy(a)
        for (_, p), q in zip(mid.named_parameters(), b.parameters(), strict=True):
            p.copy_((p + q) / 2)
        mid[1].running_mean.copy_((a[1].running_mean + b[1].running_mean) / 2)
        mid[1].running_var.copy_((a[1].running_var + b[1].running_var) / 2)
        lm = float(nn.functional.mse_loss(mid(x), y))
    a.train(), b.train()
    assert_unchanged(a, snaps[0])
    assert_unchanged(b, snaps[1])
    np.testing.assert_allclose(r.losses, [la, lm, lb], rtol=1e-12)
    assert r.loss_a == pytest.approx(la) and r.loss_b == pytest.approx(lb)
    line = (la + lb) / 2
    assert r.barrier == pytest.approx(max(0.0, lm - line), abs=1e-12)


def test_train_mode_slices_fix_dropout_and_never_mutate():
    model = bn_net(2)
    model.train()
    x, y = data()
    snap = snapshot(model)
    rng = torch.random.get_rng_state()
    s1 = loss_slice_1d(model, "mse", (x, y), mode="train", alphas=[0.0, 0.3], seed=1)
    s2 = loss_slice_1d(model, "mse", (x, y), mode="train", alphas=[0.0, 0.3], seed=1)
    np.testing.assert_array_equal(s1.losses, s2.losses)
    assert s1.losses[0] == s1.center_loss
    assert_unchanged(model, snap)
    assert torch.equal(torch.random.get_rng_state(), rng)
    e = loss_slice_1d(model, "mse", (x, y), mode="eval", alphas=[0.0])
    assert e.losses[0] != s1.losses[0]


def test_bad_input():
    model = mlp()
    x, y = data()
    cases = [
        (lambda: loss_slice_1d(model, "mse", (x, y), direction="random"), "kind='random'"),
        (lambda: loss_slice_1d(model, "mse", (x, y), alphas=[0, float("nan")]), "alphas"),
        (lambda: loss_slice_1d(model, "mse", (x, y), direction={"0.weight": torch.zeros(8, 4)}), "direction keys"),
        (lambda: loss_slice_2d(model, "mse", (x, y), directions=[random_directions(model)[0]]), "expected 2"),
        (lambda: interpolate(model, nn.Linear(4, 2), "mse", (x, y)), "same architecture"),
        (lambda: random_directions(model, 0), "n=0"),
    ]
    for fn, text in cases:
        with pytest.raises(SphericalCowError) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value)
