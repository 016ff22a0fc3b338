"""Block and single-vector Lanczos: answers against exact dense spectra, honest convergence flags (rank-deficient and
exactly degenerate spectra converge; too few iterations do not), residual bounds, and the batched Gauss-Newton
product against J^T H_out J."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure.hessian import HessianOperator, MatrixOperator, lanczos
from test_hessian import batch, bn_model, exact_hessian, mlp

METHODS = ("block", "single")


def spectrum_matrix(lam, seed=0):
    """Q diag(lam) Q^T with a random orthogonal Q: a symmetric matrix with exactly the eigenvalues lam."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    Qm, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=g, dtype=torch.float64))
    return Qm @ torch.diag(lam) @ Qm.T


def assert_residuals_bound_errors(res, ev):
    """Every reported Ritz value has an eigenvalue of H within its reported residual (the Ritz residual bound)."""
    for vals, rs in ((res.top, res.top_residuals), (res.bottom, res.bottom_residuals)):
        for t, r in zip(vals, rs, strict=True):
            assert np.min(np.abs(ev - t)) <= r * (1 + 1e-9) + 1e-13 * np.abs(ev).max()


@pytest.mark.parametrize("method", METHODS)
def test_rank_deficient_matrix_is_exact_and_reported_converged(method):
    lam = np.concatenate([[3.0, 2.0, 1.0, -1.5], np.zeros(116)])  # rank 4, a 116-dimensional null space
    A = spectrum_matrix(lam, seed=1)
    res = lanczos(A, k=6, which="both", method=method, seed=0)
    assert res.converged
    assert res.iterations < 120
    np.testing.assert_allclose(res.top, [3, 2, 1, 0, 0, 0], atol=1e-10)
    np.testing.assert_allclose(res.bottom, [-1.5, 0, 0, 0, 0, 0], atol=1e-10)
    assert res.saddle_lower_bound == 1  # zero modes are not counted as negative
    assert_residuals_bound_errors(res, lam)


@pytest.mark.parametrize("method", METHODS)
def test_model_hessian_with_a_large_null_space_converges(method):
    """A linear model with MSE on fewer examples than inputs: H = (2/(N O)) kron(I_O, X1^T X1), rank O * N of 22."""
    torch.manual_seed(0)
    model = nn.Linear(10, 2).double()
    x, y = batch(n=3, d_in=10)
    H = exact_hessian(model, nn.functional.mse_loss, [(x, y)])
    ev = torch.linalg.eigvalsh(H).numpy()
    assert np.sum(np.abs(ev) > 1e-12 * np.abs(ev).max()) == 6  # the closed form's rank
    op = HessianOperator(model, "mse", (x, y))
    res = lanczos(op, k=7, which="both", method=method, seed=2)
    assert res.converged
    np.testing.assert_allclose(res.top, ev[::-1][:7], atol=1e-10 * ev.max())
    np.testing.assert_allclose(res.bottom, ev[:7], atol=1e-10 * ev.max())
    assert_residuals_bound_errors(res, ev)


@pytest.mark.parametrize("method", METHODS)
def test_exactly_degenerate_spectrum_finds_every_copy_and_converges(method):
    g = torch.Generator().manual_seed(4)
    lam = np.concatenate([[4.0] * 4, [2.5, 2.5], torch.rand(194, generator=g, dtype=torch.float64).numpy()])
    A = spectrum_matrix(lam, seed=2)
    # single: each verification block reveals one more copy and must itself converge before the next (134 products)
    res = lanczos(A, k=6, which="top", method=method, seed=1, max_iter=160)
    assert res.converged and res.iterations < 200
    np.testing.assert_allclose(res.top, [4, 4, 4, 4, 2.5, 2.5], atol=1e-9)
    assert_residuals_bound_errors(res, lam)


@pytest.mark.parametrize("method", METHODS)
def test_readout_block_of_an_mse_hessian_repeats_each_eigenvalue_once_per_output(method):
    """The last layer's weight block of an MSE Hessian is (2/(N O)) kron(I_O, Phi^T Phi): multiplicity O = 3."""
    model = mlp(seed=1, width=8, d_out=3).double()
    x, y = batch(n=20, d_out=3, seed=6)
    op = HessianOperator(model, "mse", (x, y), params="^4\\.weight$")
    ev = torch.linalg.eigvalsh(exact_hessian(model, nn.functional.mse_loss, [(x, y)], names=op.param_names)).numpy()
    top = ev[::-1][:4]
    assert abs(top[0] - top[2]) < 1e-12 * top[0] and top[2] - top[3] > 1e-3 * top[0]  # a triple, then a gap
    res = lanczos(op, k=4, which="top", method=method, seed=0)
    assert res.converged
    np.testing.assert_allclose(res.top, top, atol=1e-10 * top[0])


@pytest.mark.parametrize("method", METHODS)
def test_too_few_iterations_must_report_not_converged(method):
    g = torch.Generator().manual_seed(5)
    lam = np.concatenate([[2, 1.8, 1.6, 1.5, 1.4], torch.rand(295, generator=g, dtype=torch.float64).numpy()])
    A = spectrum_matrix(lam, seed=3)
    res = lanczos(A, k=5, which="top", method=method, max_iter=10, seed=0, return_vectors=True)
    assert not res.converged
    scale = np.abs(res.ritz_values).max()
    assert np.any(res.top_residuals > res.tol * scale)
    # the reported residuals are honest: no smaller than the true |A y - theta y| of the returned Ritz vectors
    true = torch.linalg.vector_norm(res.top_vectors @ A - torch.as_tensor(res.top)[:, None] * res.top_vectors, dim=1)
    assert np.all(true.numpy() <= res.top_residuals * (1 + 1e-8) + 1e-14)
    assert_residuals_bound_errors(res, lam)
    # the same run with enough iterations converges, to the exact values
    full = lanczos(A, k=5, which="top", method=method, seed=0)
    assert full.converged
    np.testing.assert_allclose(full.top, np.sort(lam)[::-1][:5], atol=1e-6)


def test_block_and_single_agree_with_the_exact_hessian_and_block_residuals_are_true_residuals():
    model = mlp(seed=2, width=16).double()
    x, y = batch(n=40, seed=5)
    op = HessianOperator(model, "mse", (x, y))
    ev = torch.linalg.eigvalsh(exact_hessian(model, nn.functional.mse_loss, [(x, y)])).numpy()
    block = lanczos(op, k=4, which="both", method="block", seed=0, tol=1e-10, return_vectors=True)
    single = lanczos(op, k=4, which="both", method="single", seed=0, tol=1e-10)
    assert block.converged and single.converged and block.iterations < op.size
    for res in (block, single):
        np.testing.assert_allclose(res.top, ev[::-1][:4], atol=1e-8 * ev.max())
        np.testing.assert_allclose(res.bottom, ev[:4], atol=1e-8 * ev.max())
        assert_residuals_bound_errors(res, ev)
    for vals, vecs, rs in ((block.top, block.top_vectors, block.top_residuals),
                           (block.bottom, block.bottom_vectors, block.bottom_residuals)):  # fmt: skip
        for t, v, r in zip(vals, vecs, rs, strict=True):
            assert abs(float(v.norm()) - 1) < 1e-10
            assert float((op.matvec(v) - t * v).norm()) <= r * 1.01 + 1e-12 * ev.max()


def test_block_lanczos_uses_batched_products_and_a_larger_block_is_still_exact():
    A = spectrum_matrix(np.linspace(-1, 1, 80) ** 3 * 5, seed=6)

    class Counting(MatrixOperator):
        calls: list[int]

        def matmat(self, V):
            self.calls.append(int(V.shape[1]))
            return super().matmat(V)

    op = Counting(A)
    op.calls = []
    res = lanczos(op, k=3, which="both", block_size=5, seed=0, method="block")
    ev = np.linalg.eigvalsh(A.numpy())
    assert res.converged
    assert set(op.calls) == {5} and sum(op.calls) == res.iterations == op.n_matvec
    np.testing.assert_allclose(res.top, ev[::-1][:3], atol=1e-9)
    np.testing.assert_allclose(res.bottom, ev[:3], atol=1e-9)


def test_whole_space_in_a_partial_last_block_is_exact():
    lam = np.array([3.0, 3.0, 1.0, 0.5, 0.0, -2.0, -2.0])
    res = lanczos(
        spectrum_matrix(lam), k=3, which="both", max_iter=7, tol=1e-15, seed=0, method="block"
    )  # blocks of 3, 3, 1
    assert res.iterations == 7 and res.converged
    np.testing.assert_allclose(res.top, [3, 3, 1], atol=1e-12)
    np.testing.assert_allclose(res.bottom, [-2, -2, 0], atol=1e-12)


def test_float32_block_lanczos_matches_a_float64_reference_within_its_residuals():
    model = mlp(seed=3, width=24, d_out=3)
    x, y = batch(n=64, d_out=3, classes=3, seed=7)
    ev = torch.linalg.eigvalsh(exact_hessian(model, nn.functional.cross_entropy, [(x, y)])).numpy()[::-1]
    res = lanczos(HessianOperator(model, "cross_entropy", (x, y)), k=5, which="top", seed=0)
    assert res.converged and res.tol == 1e-4
    # a float32 Ritz value lies within its residual of a float64 eigenvalue, up to the float32 operator's rounding
    err = np.abs(res.top - ev[:5])
    assert np.all(err <= res.top_residuals + 1e-5 * ev[0])


def test_lanczos_option_errors():
    A = torch.eye(6, dtype=torch.float64)
    for call, match in (
        (lambda: lanczos(A, k=2, method="power"), "method='power'"),
        (lambda: lanczos(A, k=3, method="block", block_size=2), "block_size=2"),
        (lambda: lanczos(A, k=2, method="block", block_size=5, max_iter=4), "block_size=5"),
    ):
        with pytest.raises(SphericalCowError, match=match):
            call()


# ------------------------------------------------------------------------------------- batched Gauss-Newton


def _explicit_ggn(model, loss, x, y):
    params = {n: p.detach() for n, p in model.named_parameters()}
    names = list(params)
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def f(flat):
        parts = {n: p.reshape(params[n].shape) for n, p in zip(names, torch.split(flat, sizes), strict=True)}
        return functional_call(model, parts, (x,))

    out = f(flat)
    J = jacrev(f)(flat).reshape(out.numel(), -1)
    Hout = torch.func.hessian(lambda o: loss(o, y))(out).reshape(out.numel(), out.numel())
    return J.T @ Hout @ J


@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_batched_gauss_newton_matmat_equals_jt_hout_j_and_the_unbatched_route(loss_name):
    loss = nn.functional.mse_loss if loss_name == "mse" else nn.functional.cross_entropy
    classes = None if loss_name == "mse" else 3
    model = mlp(seed=5, d_out=3).double()
    x, y = batch(n=9, d_out=3, classes=classes)
    x, y = x.double(), (y.double() if classes is None else y)
    G = _explicit_ggn(model, loss, x, y)
    op = HessianOperator(model, loss_name, (x, y), gauss_newton=True)
    eye = torch.eye(op.size, dtype=torch.float64)
    before = op.n_matvec
    M = op.matmat(eye)
    assert op._batchable and op.n_matvec - before == op.size
    assert float((M - G).abs().max()) <= 1e-12 * float(G.abs().max())
    V = torch.randn(op.size, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.stack([op.matvec(V[:, j]) for j in range(6)], dim=1)  # the unbatched jvp/vjp route
    assert float((op.matmat(V) - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    # Lanczos on the Gauss-Newton operator (batched block products) equals the dense spectrum
    ev = torch.linalg.eigvalsh(G).numpy()
    res = lanczos(op, k=3, which="top", seed=0, method="block")
    assert res.converged
    np.testing.assert_allclose(res.top, ev[::-1][:3], atol=1e-9 * ev.max())


def test_batched_gauss_newton_with_several_batches_and_train_mode_dropout_equals_the_unbatched_route():
    x1, y1 = batch(n=12, d_in=3, seed=2)
    x2, y2 = batch(n=5, d_in=3, seed=3)
    model = bn_model(dropout=0.5).double()
    op = HessianOperator(model, "mse", [(x1, y1), (x2, y2)], gauss_newton=True, mode="train", seed=7)
    V = torch.randn(op.size, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = torch.stack([op.matvec(V[:, j]) for j in range(5)], dim=1)
    M = op.matmat(V, chunk_size=2)
    assert op._batchable
    assert float((M - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
    D = op.matmat(torch.eye(op.size, dtype=torch.float64))
    assert torch.allclose(D, D.T, atol=1e-12 * float(D.abs().max()))  # one fixed symmetric matrix
    assert torch.linalg.eigvalsh((D + D.T) / 2).min() > -1e-10 * float(D.abs().max())  # PSD for a convex loss
