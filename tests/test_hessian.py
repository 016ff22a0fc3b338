"""Hessian operator, Lanczos, traces and SLQ against exact Hessians (torch.func.hessian on the flat parameter vector of
a deep copy of the model), closed forms, Monte Carlo coverage, and invariants (no mutation, weighting, symmetry)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure.hessian import (
    HessianOperator,
    MatrixOperator,
    hutchinson,
    hutchpp,
    lanczos,
    spectral_density,
)

# ------------------------------------------------------------------------------------------------- helpers


def mlp(seed=0, d_in=4, width=6, d_out=2, act=nn.Tanh):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width), act(), nn.Linear(width, width), act(), nn.Linear(width, d_out))


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)
    )


def bn_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(dropout), nn.Linear(5, 2), nn.BatchNorm1d(2)
    )
    # non-trivial running statistics, as after training
    with torch.no_grad():
        m[1].running_mean.copy_(torch.randn(5) * 0.3)
        m[1].running_var.copy_(torch.rand(5) + 0.5)
        m[5].running_mean.copy_(torch.randn(2) * 0.3)
        m[5].running_var.copy_(torch.rand(2) + 0.5)
    return m


def batch(n=10, d_in=4, d_out=2, seed=1, classes=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.randint(0, classes, (n,), generator=g) if classes else torch.randn(n, d_out, generator=g)
    return x, y


def exact_hessian(model, loss, batches, *, mode="eval", names=None):
    """Reference: d^2/dtheta^2 of sum_b n_b L_b / N by torch.func.hessian of a float64 deep copy in the given mode."""
    ref = copy.deepcopy(model).double()
    ref.train(mode == "train")
    params = {n: p.detach() for n, p in ref.named_parameters()}
    names = names or list(params)
    sizes = [params[n].numel() for n in names]
    bufs = {n: b.detach().clone() for n, b in ref.named_buffers()}
    N = sum(int(x.shape[0]) for x, _ in batches)

    def L(flat):
        parts = dict(
            zip(
                names,
                [p.reshape(params[n].shape) for n, p in zip(names, torch.split(flat, sizes), strict=True)],
                strict=True,
            )
        )
        total = 0.0
        for x, y in batches:
            b = {n: t.clone() for n, t in bufs.items()}
            out = functional_call(ref, {**params, **parts, **b}, (x.double(),))
            yy = y.double() if y.is_floating_point() else y
            total = total + x.shape[0] * loss(out, yy)
        return total / N

    flat = torch.cat([params[n].reshape(-1) for n in names])
    if mode == "train":
        # torch.func.hessian / jacrev(jacrev) are wrong for BatchNorm in training mode under vmap (asymmetric, off by
        # O(1) here; finite differences agree with the loop route): one double-backward per row instead
        return torch.autograd.functional.hessian(L, flat)
    return torch.func.hessian(L)(flat)


mse = nn.functional.mse_loss
ce = nn.functional.cross_entropy


def snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: b.detach().clone() for n, b in model.named_buffers()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    )


def assert_unchanged(model, snap):
    params, bufs, flags, rg = snapshot(model)
    for n in snap[0]:
        assert torch.equal(params[n], snap[0][n]), n
    for n in snap[1]:
        assert torch.equal(bufs[n], snap[1][n]), n
    assert flags == snap[2]
    assert rg == snap[3]
    for p in model.parameters():
        assert p.grad is None


# ------------------------------------------------------------------------------------- exact Hessian checks


def test_mlp_tanh_dense_and_eigenvalues_match_exact_hessian():
    model = mlp().double()
    x, y = batch()
    H = exact_hessian(model, mse, [(x, y)])
    op = HessianOperator(model, "mse", (x, y))
    assert op.size == H.shape[0] == 4 * 6 + 6 + 6 * 6 + 6 + 6 * 2 + 2
    assert torch.allclose(op.dense(), H, atol=1e-12, rtol=1e-10)
    ev = torch.linalg.eigvalsh(H).numpy()
    res = lanczos(op, k=5, which="both", seed=3)
    assert res.converged
    scale = np.abs(ev).max()
    np.testing.assert_allclose(res.top, ev[::-1][:5], atol=1e-8 * scale)
    np.testing.assert_allclose(res.bottom, ev[:5], atol=1e-8 * scale)
    # the tanh MLP at a random point is a saddle: the bottom of the spectrum is negative
    assert ev[0] < 0 and res.saddle_lower_bound >= 1


def test_lanczos_converges_on_top_before_exhausting_the_space_and_residuals_bound_the_error():
    model = mlp(seed=2, width=16).double()
    x, y = batch(n=40, seed=5)
    op = HessianOperator(model, "mse", (x, y))
    ev = torch.linalg.eigvalsh(exact_hessian(model, mse, [(x, y)])).numpy()[::-1]
    res = lanczos(op, k=3, which="top", seed=0, tol=1e-10)
    assert res.iterations < op.size  # converged early (size = 402)
    assert res.converged
    np.testing.assert_allclose(res.top, ev[:3], atol=1e-8 * ev[0])
    # Ritz residual bound: an eigenvalue within the residual of each Ritz value
    for t, r in zip(res.top, res.top_residuals, strict=True):
        assert np.min(np.abs(ev - t)) <= r + 1e-12 * ev[0]
    # Ritz vectors are unit eigenvectors: |H y - theta y| equals the reported residual
    res = lanczos(op, k=2, which="top", seed=0, return_vectors=True)
    for t, v, r in zip(res.top, res.top_vectors, res.top_residuals, strict=True):
        assert abs(float(v.norm()) - 1) < 1e-10
        assert float((op.matvec(v) - t * v).norm()) <= r * 1.01 + 1e-10


def test_tiny_cnn_cross_entropy_matches_exact_hessian():
    model = cnn().double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 7, 7, generator=g), torch.randint(0, 3, (6,), generator=g)
    H = exact_hessian(model, ce, [(x, y)])
    op = HessianOperator(model, "cross_entropy", (x, y))
    assert torch.allclose(op.dense(), H, atol=1e-12, rtol=1e-9)
    ev = torch.linalg.eigvalsh(H).numpy()
    res = lanczos(op, k=3, which="both", seed=1, max_iter=op.size)
    np.testing.assert_allclose(res.top, ev[::-1][:3], atol=1e-8 * np.abs(ev).max())
    np.testing.assert_allclose(res.bottom, ev[:3], atol=1e-8 * np.abs(ev).max())


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("model_mode", ["eval", "train"])
def test_batchnorm_in_both_modes_matches_exact_and_never_mutates(mode, model_mode):
    model = bn_model().double()
    model.train(model_mode == "train")
    model[1].training = True  # a mixed state must come back exactly too
    x, y = batch(n=12, d_in=3)
    snap = snapshot(model)
    rng_before = torch.random.get_rng_state()
    H = exact_hessian(model, mse, [(x, y)], mode=mode)
    op = HessianOperator(model, "mse", (x, y), mode=mode)
    D = op.dense()
    assert torch.allclose(D, H, atol=1e-11, rtol=1e-9)
    ev = torch.linalg.eigvalsh(H).numpy()
    res = lanczos(op, k=2, which="both", seed=0, max_iter=op.size)
    np.testing.assert_allclose(res.top, ev[::-1][:2], atol=1e-8 * np.abs(ev).max())
    hutchinson(op, 4)
    spectral_density(op, n_probes=2, n_iter=5)
    op.loss(), op.gradient()
    assert_unchanged(model, snap)
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    # third route: central differences of the gradient of a train/eval copy, O(eps^2) ~ 1e-8
    ref = copy.deepcopy(model).train(mode == "train")
    ps = list(ref.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in ps])

    def grad_at(f):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(f, ps)
        loss = mse(ref(x.double()), y.double())
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, ps)])

    eye = torch.eye(len(flat), dtype=torch.float64)
    fd = torch.stack([(grad_at(flat + 1e-5 * e) - grad_at(flat - 1e-5 * e)) / 2e-5 for e in eye], 1)
    assert torch.allclose(D, fd, atol=1e-6)
    if mode == "train":  # batch statistics differ from running statistics: the two Hessians differ
        assert not torch.allclose(H, exact_hessian(model, mse, [(x, y)], mode="eval"), atol=1e-6)


def test_dropout_in_train_mode_is_one_fixed_symmetric_matrix():
    model = bn_model(dropout=0.5).double()
    x, y = batch(n=16, d_in=3)
    snap = snapshot(model)
    op = HessianOperator(model, "mse", (x, y), mode="train", seed=7)
    g = torch.Generator().manual_seed(0)
    u, v = (
        torch.randn(op.size, generator=g, dtype=torch.float64),
        torch.randn(op.size, generator=g, dtype=torch.float64),
    )
    hu, hv = op.matvec(u), op.matvec(v)
    assert torch.equal(op.matvec(u), hu)  # the same masks on every product
    assert abs(float(v @ hu - u @ hv)) < 1e-10 * float(hu.norm() * v.norm())
    other = HessianOperator(model, "mse", (x, y), mode="train", seed=8).matvec(u)
    assert not torch.allclose(other, hu)  # another seed, other masks
    evald = HessianOperator(model, "mse", (x, y), mode="eval").matvec(u)
    assert not torch.allclose(evald, hu)
    assert_unchanged(model, snap)


def test_float32_model_in_float64_and_model_frozen_at_construction():
    model = mlp(seed=4)  # float32
    x, y = batch()
    H = exact_hessian(model, mse, [(x, y)])
    op = HessianOperator(model, "mse", (x, y), dtype=torch.float64)
    assert op.dtype == torch.float64
    assert torch.allclose(op.dense(), H, atol=1e-12, rtol=1e-10)
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the operator took copies at construction
    assert torch.allclose(op.dense(), H, atol=1e-12, rtol=1e-10)
    op32 = HessianOperator(mlp(seed=4), "mse", (x, y))
    assert op32.dtype == torch.float32
    assert torch.allclose(op32.dense().double(), H, atol=1e-4)


# ------------------------------------------------------------------------------------- data and parameters


def test_batches_are_weighted_by_size_and_loaders_accumulate():
    model = mlp(seed=1).double()
    x, y = batch(n=23, seed=9)
    full = HessianOperator(model, "mse", (x, y)).dense()
    sizes = [10, 3, 7, 3]
    chunks = list(zip(torch.split(x, sizes), torch.split(y, sizes), strict=True))
    assert torch.allclose(HessianOperator(model, "mse", chunks).dense(), full, atol=1e-13, rtol=1e-11)
    gen = ((a, b) for a, b in chunks)  # one-shot iterator: materialised
    assert torch.allclose(HessianOperator(model, "mse", gen).dense(), full, atol=1e-13, rtol=1e-11)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    op = HessianOperator(model, "mse", loader)
    assert torch.allclose(op.dense(), full, atol=1e-13, rtol=1e-11)
    # an unweighted average of batch means would differ
    naive = sum(HessianOperator(model, "mse", c).dense() for c in chunks) / len(chunks)
    assert not torch.allclose(naive, full, atol=1e-6)
    with torch.no_grad():
        assert op.loss() == pytest.approx(float(mse(model(x.double()), y.double())), rel=1e-12)


def test_parameter_subsets_are_blocks_of_the_full_hessian():
    model = mlp(seed=3).double()
    x, y = batch()
    H = exact_hessian(model, mse, [(x, y)])
    names = [n for n, _ in model.named_parameters()]
    offsets = np.cumsum([0] + [p.numel() for p in model.parameters()])
    pick = ["2.weight", "4.bias"]
    idx = np.concatenate([np.arange(offsets[names.index(n)], offsets[names.index(n) + 1]) for n in pick])
    op = HessianOperator(model, "mse", (x, y), params=pick)
    assert op.param_names == pick
    assert torch.allclose(op.dense(), H[np.ix_(idx, idx)], atol=1e-12, rtol=1e-10)
    op = HessianOperator(model, "mse", (x, y), params=r"weight$")
    idx = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i, n in enumerate(names) if n.endswith("weight")])
    assert op.param_names == ["0.weight", "2.weight", "4.weight"]
    assert torch.allclose(op.dense(), H[np.ix_(idx, idx)], atol=1e-12, rtol=1e-10)
    assert torch.allclose(exact_hessian(model, mse, [(x, y)], names=op.param_names), H[np.ix_(idx, idx)], atol=1e-13)


def test_gauss_newton_equals_explicit_jt_hout_j():
    for loss_name, loss, classes in (("mse", mse, None), ("cross_entropy", ce, 3)):
        model = mlp(seed=5, d_out=3).double()
        x, y = batch(n=9, d_out=3, classes=classes)
        x, y = x.double(), (y.double() if classes is None else y)
        params = {n: p.detach() for n, p in model.named_parameters()}
        names = list(params)
        sizes = [params[n].numel() for n in names]
        flat = torch.cat([params[n].reshape(-1) for n in names])

        def f(flat, model=model, params=params, names=names, sizes=sizes, x=x):
            parts = {n: p.reshape(params[n].shape) for n, p in zip(names, torch.split(flat, sizes), strict=True)}
            return functional_call(model, parts, (x,))

        out = f(flat)
        J = jacrev(f)(flat).reshape(out.numel(), -1)  # (N*O, P)
        Hout = torch.func.hessian(lambda o, loss=loss, y=y: loss(o, y))(out).reshape(out.numel(), out.numel())
        G = J.T @ Hout @ J
        op = HessianOperator(model, loss_name, (x, y), gauss_newton=True)
        assert torch.allclose(op.dense(), G, atol=1e-13, rtol=1e-10), loss_name
        # convex losses: G is positive semi-definite; it differs from the Hessian of this nonlinear net
        assert torch.linalg.eigvalsh(op.dense()).min() > -1e-12
        assert not torch.allclose(G, exact_hessian(model, loss, [(x, y)]), atol=1e-6)


def test_gauss_newton_equals_hessian_for_a_linear_model_with_mse():
    torch.manual_seed(0)
    model = nn.Linear(5, 2).double()
    x, y = batch(n=8, d_in=5)
    G = HessianOperator(model, "mse", (x, y), gauss_newton=True).dense()
    H = HessianOperator(model, "mse", (x, y)).dense()
    # closed form: L = mean (Wx + b - y)^2 over N*2 entries -> H = (2/(2N)) kron(I_2, [x 1]^T [x 1]) per output
    X1 = torch.cat([x, torch.ones(8, 1, dtype=x.dtype)], 1).double()
    A = X1.T @ X1 * 2 / 16
    ref = torch.zeros(12, 12, dtype=torch.float64)
    for o in range(2):  # parameter order: weight (2x5 row-major) then bias (2)
        w = [o * 5 + i for i in range(5)] + [10 + o]
        ref[np.ix_(w, w)] = A
    assert torch.allclose(H, ref, atol=1e-13) and torch.allclose(G, ref, atol=1e-13)


# ---------------------------------------------------------------------------------------------------- Lanczos


def test_lanczos_multiple_and_zero_eigenvalues_with_restarts():
    g = torch.Generator().manual_seed(0)
    Qm, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    lam = torch.tensor([5.0, 5.0, 5.0, 2.0] + [0.0] * 24 + [-1.0, -3.0], dtype=torch.float64)
    A = Qm @ torch.diag(lam) @ Qm.T
    res = lanczos(A, k=4, which="both", max_iter=30)
    np.testing.assert_allclose(res.top, [5, 5, 5, 2], atol=1e-10)
    np.testing.assert_allclose(res.bottom, [-3, -1, 0, 0], atol=1e-10)
    assert res.saddle_lower_bound == 2


def test_verification_blocks_find_every_copy_of_a_multiple_eigenvalue():
    g = torch.Generator().manual_seed(3)
    n = 300
    Qm, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 10.0, 10.0, 8.0, 7.0], dtype=torch.float64), torch.rand(n - 5, generator=g)])
    A = Qm @ torch.diag(lam) @ Qm.T
    res = lanczos(A, k=5, which="top", seed=0)
    assert res.converged and res.iterations < n
    np.testing.assert_allclose(res.top, [10, 10, 10, 8, 7], atol=1e-8)


def test_hessian_of_a_quadratic_is_its_matrix():
    """L(theta) = 1/2 theta^T A theta through a module: H = A (closed form)."""
    g = torch.Generator().manual_seed(1)
    B = torch.randn(12, 12, generator=g, dtype=torch.float64)
    A = B @ B.T / 12 - 0.3 * torch.eye(12, dtype=torch.float64)

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.randn(12, generator=g, dtype=torch.float64))

        def forward(self, x):
            return (0.5 * self.theta @ A @ self.theta).expand(x.shape[0])

    op = HessianOperator(Quad(), lambda out, y: out.mean(), (torch.zeros(3, 1), torch.zeros(3)))
    assert torch.allclose(op.dense(), A, atol=1e-13)
    ev = torch.linalg.eigvalsh(A).numpy()
    res = lanczos(op, k=2, which="both")
    np.testing.assert_allclose(res.top, ev[::-1][:2], atol=1e-10)
    np.testing.assert_allclose(res.bottom, ev[:2], atol=1e-10)


# ----------------------------------------------------------------------------------------------------- traces


def _low_rank_dominated(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    Qm, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = 100.0 * 0.6 ** torch.arange(n, dtype=torch.float64) + 0.01
    return Qm @ torch.diag(lam) @ Qm.T


def test_hutchinson_variance_matches_closed_form():
    """Rademacher probes: Var(z^T A z) = 2 sum_{i != j} A_ij^2 (Hutchinson 1989)."""
    A = _low_rank_dominated(60, seed=3)
    est = hutchinson(MatrixOperator(A), 4000, seed=1)
    off = A - torch.diag(torch.diag(A))
    var = 2 * float((off**2).sum())
    assert np.var(est.samples, ddof=1) == pytest.approx(var, rel=0.15)
    assert est.lo <= float(torch.trace(A)) <= est.hi


def test_hutchinson_ci_covers_the_exact_trace_of_a_model_hessian():
    model = mlp(seed=6).double()
    x, y = batch(n=12)
    op = HessianOperator(model, "mse", (x, y))
    tr = float(torch.trace(exact_hessian(model, mse, [(x, y)])))
    D = MatrixOperator(op.dense())  # same matrix, cheap products for many repetitions
    covered = sum(hutchinson(D, 25, seed=s, level=0.95).lo <= tr <= hutchinson(D, 25, seed=s).hi for s in range(60))
    assert covered >= 50  # binomial(60, ~0.95): P(< 50) < 1e-3
    est = hutchinson(op, 30, seed=0, level=0.99)
    assert est.lo <= tr <= est.hi
    pp = hutchpp(op, 30, seed=0, level=0.99)
    assert pp.lo <= tr <= pp.hi


def test_hutchpp_has_lower_variance_than_hutchinson_on_a_low_rank_dominated_matrix():
    A = _low_rank_dominated()
    tr = float(torch.trace(A))
    op = MatrixOperator(A)
    h = np.array([hutchinson(op, 30, seed=s).estimate for s in range(150)])
    p = np.array([hutchpp(op, 30, seed=s).estimate for s in range(150)])
    # both unbiased (means within 4 standard errors), Hutch++ at least 100x lower variance at the same budget
    assert abs(h.mean() - tr) < 4 * h.std(ddof=1) / np.sqrt(len(h))
    assert abs(p.mean() - tr) < 4 * p.std(ddof=1) / np.sqrt(len(p)) + 1e-9
    assert p.var(ddof=1) < h.var(ddof=1) / 100


def test_hutchpp_is_exact_when_the_sketch_spans_the_range():
    g = torch.Generator().manual_seed(2)
    B = torch.randn(80, 4, generator=g, dtype=torch.float64)
    A = B @ B.T  # rank 4 < 30 // 3 sketch vectors
    est = hutchpp(A, 30)
    assert est.estimate == pytest.approx(float(torch.trace(A)), rel=1e-10)


# --------------------------------------------------------------------------------------------------------- SLQ


def test_slq_density_integrates_to_one_and_moments_match_traces():
    model = mlp(seed=7, width=10).double()
    x, y = batch(n=20)
    op = HessianOperator(model, "mse", (x, y))
    H = exact_hessian(model, mse, [(x, y)])
    n = H.shape[0]
    sd = spectral_density(op, n_probes=30, n_iter=30, seed=0)
    assert np.trapezoid(sd.density, sd.grid) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, atol=1e-12)
    for p in (1, 2, 3):
        m = sd.moment(p)
        exact = float(torch.trace(torch.linalg.matrix_power(H, p))) / n
        assert m.lo - 1e-12 <= exact <= m.hi + 1e-12, (p, m, exact)
    # sigma as documented: 1% of the spread of the Ritz values
    assert sd.sigma == pytest.approx(0.01 * (sd.nodes.max() - sd.nodes.min()))
    assert spectral_density(op, n_probes=2, n_iter=10, sigma=0.5).sigma == 0.5


def test_slq_saddle_index_covers_the_exact_negative_count():
    g = torch.Generator().manual_seed(4)
    n = 120
    Qm, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([-torch.rand(25, generator=g, dtype=torch.float64) - 0.1, torch.rand(95, generator=g) + 0.1])
    A = Qm @ torch.diag(lam.double()) @ Qm.T
    sd = spectral_density(A, n_probes=40, n_iter=60, seed=1)
    idx = sd.saddle_index(level=0.99)
    assert idx.lo <= 25 <= idx.hi
    assert abs(idx.mean - 25) < 8
    # a model Hessian at a random point: the count below zero (beyond rounding) is covered
    model = mlp(seed=8).double()
    x, y = batch(n=10)
    op = HessianOperator(model, "mse", (x, y))
    ev = torch.linalg.eigvalsh(exact_hessian(model, mse, [(x, y)])).numpy()
    thr = 1e-6 * np.abs(ev).max()
    sd = spectral_density(op, n_probes=40, n_iter=op.size, seed=2)
    idx = sd.saddle_index(threshold=thr, level=0.99)
    assert idx.lo <= int(np.sum(ev < -thr)) <= idx.hi


# ------------------------------------------------------------------------------------------------------ errors


def test_bad_input_raises_one_line_errors():
    model = mlp()
    x, y = batch()
    cases = [
        (lambda: HessianOperator(model, "mse", (x, y), mode="test"), "mode='test'"),
        (lambda: HessianOperator(model, "hinge", (x, y)), "loss='hinge'"),
        (lambda: HessianOperator(model, "mse", (x, y), params=["nope"]), "'nope'"),
        (lambda: HessianOperator(model, "mse", (x, y), params="^zzz"), "matches no parameter"),
        (lambda: HessianOperator(model, "mse", (x, y), params="(["), "regular expression"),
        (lambda: HessianOperator(model, "mse", []), "no batches"),
        (lambda: HessianOperator(model, "mse", 3), "data of type int"),
        (lambda: HessianOperator("model", "mse", (x, y)), "torch.nn.Module"),
        (lambda: HessianOperator(model, "mse", (x, y)).matvec(torch.zeros(3)), "shape (3,)"),
        (lambda: lanczos(HessianOperator(model, "mse", (x, y)), k=10**6), "k=1000000"),
        (lambda: lanczos(torch.eye(3), which="middle"), "which='middle'"),
        (lambda: hutchinson(torch.eye(3), 1), "n_probes=1"),
        (lambda: hutchpp(torch.eye(3), 3), "n_matvec=3"),
        (lambda: spectral_density(torch.eye(3), sigma=-1.0), "sigma=-1.0"),
        (lambda: MatrixOperator(torch.zeros(2, 3)), "square"),
    ]
    for fn, text in cases:
        with pytest.raises(SphericalCowError) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ batched products


def _column_by_column(op, V):
    return torch.stack([op.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)


def _cnn_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 1, 7, 7, generator=g), torch.randint(0, 3, (6,), generator=g)


@pytest.mark.parametrize(
    "case",
    ["mlp", "mlp two batches", "cnn", "batchnorm eval", "batchnorm train", "dropout train", "subset", "gauss-newton"],
)
def test_matmat_equals_column_by_column_matvec(case):
    x, y = batch(n=12, d_in=3)
    model, loss, data, kw = bn_model().double(), "mse", (x, y), {}
    if case in ("mlp", "subset", "gauss-newton"):
        model, data = mlp().double(), batch()
        kw = {"params": "^2\\."} if case == "subset" else {"gauss_newton": True} if case == "gauss-newton" else {}
    elif case == "mlp two batches":
        model, data = mlp().double(), [batch(seed=2), batch(n=5, seed=3)]
    elif case == "cnn":
        model, loss, data = cnn().double(), "cross_entropy", _cnn_batch()
    elif case == "batchnorm train":
        kw = {"mode": "train"}
    elif case == "dropout train":
        model, kw = bn_model(dropout=0.5).double(), {"mode": "train", "seed": 7}
    snap = snapshot(model)
    op = HessianOperator(model, loss, data, **kw)
    V = torch.randn(op.size, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _column_by_column(op, V)
    for chunk in (None, 3, 1):
        before = op.n_matvec
        M = op.matmat(V, chunk_size=chunk)
        assert M.shape == (op.size, 7)
        assert op.n_matvec - before == 7
        assert float((M - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    assert torch.allclose(op @ V, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert op.matmat(V[:, :0]).shape == (op.size, 0)
    op.matmat_memory = 1  # the smallest budget: one column per chunk
    assert float((op.matmat(V) - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    assert_unchanged(model, snap)


def test_matrix_operator_matmat_and_shape_errors():
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op = MatrixOperator(A)
    V = torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(op.matmat(V), _column_by_column(op, V), atol=1e-14)
    assert op.n_matvec == 8
    hop = HessianOperator(mlp().double(), "mse", batch())
    for bad in (op.matmat, hop.matmat):
        with pytest.raises(SphericalCowError, match="expected shape"):
            bad(torch.zeros(5, 2))
        with pytest.raises(SphericalCowError, match="expected shape"):
            bad(torch.zeros(6))


class _MatvecOnly:
    """An operator with size, dtype and matvec only: the batched routes fall back to column-by-column products."""

    def __init__(self, A):
        self.size, self.dtype, self.A = A.shape[0], A.dtype, A

    def matvec(self, v):
        return self.A @ v


@pytest.mark.parametrize("operator", ["hessian", "matvec only"])
def test_batched_traces_and_slq_equal_the_unbatched_results_for_the_same_seed(operator):
    model = mlp(seed=7, width=10).double()
    x, y = batch(n=20)
    op = HessianOperator(model, "mse", (x, y))
    if operator == "matvec only":
        op = _MatvecOnly(op.dense())
    for est in (
        lambda b: hutchinson(op, 70, seed=3, batched=b),  # 70 > 32 probes per block: three blocks
        lambda b: hutchinson(op, 9, seed=1, distribution="gaussian", batched=b),
        lambda b: hutchpp(op, 200, seed=3, batched=b),
        lambda b: hutchpp(op, 12, seed=0, batched=b),
    ):
        a, u = est(True), est(False)
        assert a.n_matvec == u.n_matvec
        np.testing.assert_allclose(a.samples, u.samples, rtol=0, atol=1e-12 * np.abs(u.samples).max())
        assert a.estimate == pytest.approx(u.estimate, rel=1e-12)
        assert (a.lo, a.hi) == pytest.approx((u.lo, u.hi), rel=1e-12)
    for nv, m in ((70, 30), (3, 12)):
        a, u = (spectral_density(op, n_probes=nv, n_iter=m, seed=1, batched=b) for b in (True, False))
        scale = np.abs(u.nodes).max()
        np.testing.assert_allclose(a.nodes, u.nodes, rtol=0, atol=1e-11 * scale)
        np.testing.assert_allclose(a.weights, u.weights, rtol=0, atol=1e-11)
        np.testing.assert_allclose(a.density, u.density, rtol=0, atol=1e-9 * u.density.max())
        assert a.sigma == pytest.approx(u.sigma, rel=1e-11)


def test_batched_slq_that_meets_an_invariant_subspace_is_redone_chain_by_chain():
    A = torch.diag(torch.tensor([1.0, 1, 1, 2, 2, 3, 5], dtype=torch.float64))  # 4 distinct eigenvalues < 7 steps
    a, u = (spectral_density(A, n_probes=3, n_iter=7, seed=1, batched=b) for b in (True, False))
    np.testing.assert_array_equal(a.nodes, u.nodes)
    np.testing.assert_array_equal(a.weights, u.weights)


class _OldStyleTanh(torch.autograd.Function):
    """An autograd.Function without setup_context: torch.func cannot transform it (matmat falls back)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class _OddModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 2)
        self.unused = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.b(_OldStyleTanh.apply(self.a(x)))


def test_matmat_falls_back_for_ops_torch_func_cannot_transform_and_handles_unused_parameters():
    op = HessianOperator(_OddModel().double(), "mse", batch())
    V = torch.randn(op.size, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _column_by_column(op, V)
    assert torch.allclose(op.matmat(V), ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert not op._batchable
    assert torch.all(ref[:3] == 0)  # the unused parameter (registered on the module itself: listed first)
    plain = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    plain.register_parameter("unused", nn.Parameter(torch.randn(3, dtype=torch.float64)))
    op = HessianOperator(plain, "mse", batch())
    V = torch.randn(op.size, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _column_by_column(op, V)
    assert torch.allclose(op.matmat(V), ref, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert op._batchable


def test_a_shuffling_loader_gives_one_fixed_matrix_and_non_finite_products_are_errors():
    # Review finding: a DataLoader with shuffle=True and drop_last=True was re-iterated for every product, so the
    # "matrix" changed between products. The operator now reads the data once.
    from torch.utils.data import DataLoader, TensorDataset

    from sphericalcow.errors import SphericalCowError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True, drop_last=True)
    op = HessianOperator(model, "mse", loader)
    v = torch.randn(op.size, dtype=torch.float64)
    assert torch.equal(op.matvec(v), op.matvec(v))
    assert op.loss() == op.loss()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(SphericalCowError, match="NaN or inf"):
        HessianOperator(model, "mse", (x, y)).matvec(v)


def test_half_precision_models_are_analysed_in_float32():
    import copy

    torch.manual_seed(0)
    half = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(torch.bfloat16)
    x, y = torch.randn(20, 4).bfloat16(), torch.randn(20, 1).bfloat16()
    # reference: the same (bf16-rounded) weights and data analysed in float64
    ref_model = copy.deepcopy(half).double()
    ref = lanczos(HessianOperator(ref_model, "mse", (x.double(), y.double())), k=2, seed=0).top
    op = HessianOperator(half, "mse", (x, y))
    assert op.dtype == torch.float32
    assert next(half.parameters()).dtype == torch.bfloat16  # the model itself is untouched
    res = lanczos(op, k=2, seed=0)
    assert res.converged
    np.testing.assert_allclose(res.top, ref, rtol=1e-4)  # float32 arithmetic on identical weights
