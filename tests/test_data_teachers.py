"""Data generators of the second half of issue 5: soft committee and MLP teachers, sparse parity, polynomials."""

import math

import numpy as np
import pytest
import torch

from sphericalcow.data.base import Dataset
from sphericalcow.data.parity import fourier_coefficient, parity_batch, relevant_bits, sparse_parity
from sphericalcow.data.polynomials import (
    hermite,
    multi_indices,
    polynomial_features,
    product_of_inputs,
    random_polynomial,
)
from sphericalcow.data.teachers import committee_teacher, mlp_teacher, soft_committee
from sphericalcow.description import MLP
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.teacher_student import i2


def test_soft_committee_statistics_match_the_erf_integrals():
    """E[y] = 0 and E[y^2] = sum_nm v_n v_m I2(T_nm) + sigma^2 (closed form) for an erf teacher."""
    P, N, M, s = 200_000, 50, 3, 0.3
    d = soft_committee(N=N, M=M, P=P, seed=0, noise=s, v=[1.0, -0.5, 2.0], dtype="float64")
    assert isinstance(d, Dataset) and d.x.shape == (P, N) and d.y.shape == (P,) and d.y.dtype == torch.float64
    T = d.structure["T"].numpy()
    v = d.structure["v"].numpy()
    C = np.empty((M, M, 2, 2))
    C[..., 0, 0] = np.diag(T)[:, None]
    C[..., 1, 1] = np.diag(T)[None, :]
    C[..., 0, 1] = C[..., 1, 0] = T
    second = float(v @ i2(C) @ v) + s**2
    y = d.y.numpy()
    assert abs(y.mean()) < 5 * y.std() / math.sqrt(P)
    se = (y**2).std() / math.sqrt(P)
    assert abs((y**2).mean() - second) < 5 * se
    # x ~ N(0, I): per-coordinate variance 1
    assert d.x.var(dim=0).mean().item() == pytest.approx(1.0, abs=0.01)


def test_committee_teacher_structure_orthogonal_and_relu():
    t = committee_teacher(N=40, M=4, seed=1, orthogonal=True, activation="relu")
    assert torch.allclose(t.T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    d = t.sample(100_000, seed=2)
    assert d.x.dtype == torch.float32
    # relu teacher with T = I and v = 1: E[y] = M E[relu(u)] = M / sqrt(2 pi)
    assert d.y.double().mean().item() == pytest.approx(
        4 / math.sqrt(2 * math.pi), abs=5 * d.y.double().std().item() / math.sqrt(1e5)
    )
    # the noise-free output recomputed from the stored weights
    x = torch.randn(5, 40, dtype=torch.float64)
    manual = torch.relu(x @ d.structure["w"].T / math.sqrt(40)).sum(1)
    assert torch.allclose(t.output(x), manual)


def test_online_sampler_gives_fresh_reproducible_batches():
    t = committee_teacher(N=10, M=2, seed=0)
    a = t.online(seed=3, batch=4)
    b = t.online(seed=3, batch=4)
    x1, y1 = next(a)
    x2, _ = next(a)
    x1b, y1b = next(b)
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)
    assert not torch.equal(x1, x2)
    assert torch.allclose(y1, t.output(x1))


def test_mlp_teacher_uses_the_description():
    arch = MLP(d_in=6, width=32, depth=2, activation="tanh", cw=1.0)
    d = mlp_teacher(arch, P=64, seed=5)
    model = arch.build(seed=5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(d.y.double(), model(d.x.double()).reshape(-1), atol=1e-5)
    assert d.structure["arch"] is arch
    with pytest.raises(SphericalCowError, match="MLP"):
        mlp_teacher("not an arch", P=3, seed=0)


def test_sparse_parity_structure_and_fourier_spectrum():
    d = sparse_parity(n=12, k=3, P=50_000, seed=4)
    rel = d.structure["relevant"]
    assert len(rel) == 3 and rel == relevant_bits(12, 3, seed=4)
    assert set(torch.unique(d.x).tolist()) == {-1.0, 1.0}
    assert torch.equal(d.y, d.x[:, list(rel)].prod(1))
    # the labels are balanced and uncorrelated with every single bit and every pair (no low-degree signal)
    se = 1 / math.sqrt(50_000)
    assert abs(fourier_coefficient(d.y, d.x, []).item()) < 5 * se
    for i in range(12):
        assert abs(fourier_coefficient(d.y, d.x, [i]).item()) < 5 * se
    assert abs(fourier_coefficient(d.y, d.x, list(rel[:2])).item()) < 5 * se
    assert fourier_coefficient(d.y, d.x, list(rel)).item() == 1.0
    g = torch.Generator().manual_seed(0)
    x, y = parity_batch(12, rel, 8, g)
    assert torch.equal(y, x[:, list(rel)].prod(1))


def test_parity_validation():
    with pytest.raises(SphericalCowError, match="k=5"):
        sparse_parity(n=4, k=5, P=10, seed=0)
    with pytest.raises(SphericalCowError, match="relevant"):
        sparse_parity(n=4, k=2, P=10, seed=0, relevant=[0, 0])
    with pytest.raises(SphericalCowError, match="P=0"):
        sparse_parity(n=4, k=2, P=0, seed=0)


def test_hermite_orthonormality_by_quadrature():
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = torch.tensor(w / w.sum())
    x = torch.tensor(x)
    G = torch.stack([hermite(j, x) for j in range(7)])
    assert torch.allclose((G * w) @ G.T, torch.eye(7, dtype=torch.float64), atol=1e-10)


def test_random_polynomial_known_coefficients_are_recovered():
    d = random_polynomial(n=4, degree=3, P=200_000, seed=1, dtype="float64")
    terms, c = d.structure["terms"], d.structure["coefficients"]
    assert len(terms) == len(multi_indices(4, 3)) == 4 + 10 + 20
    # orthonormal basis: E[y^2] = sum c^2 and the projections E[y H_a] = c_a (within Monte Carlo error)
    y = d.y
    se2 = (y**2).std().item() / math.sqrt(len(y))
    assert abs((y**2).mean().item() - float((c**2).sum())) < 5 * se2
    F = polynomial_features(d.x, terms)
    proj = (F * y[:, None]).mean(0)
    se = (F * y[:, None]).std(0) / math.sqrt(len(y))
    assert torch.all((proj - c).abs() < 5 * se)
    # monomial basis: exact values at a point
    m = random_polynomial(n=2, degree=2, P=3, seed=2, basis="monomial", dtype="float64")
    x = m.x
    expected = sum(
        cf * x[:, 0] ** a[0] * x[:, 1] ** a[1]
        for a, cf in zip(m.structure["terms"], m.structure["coefficients"], strict=True)
    )
    assert torch.allclose(m.y, expected)
    with pytest.raises(SphericalCowError, match="basis"):
        random_polynomial(n=2, degree=2, P=3, seed=0, basis="fourier")


def test_product_of_inputs_moments():
    for n in (2, 4):
        d = product_of_inputs(n=n, P=200_000, seed=0, dtype="float64")
        assert torch.allclose(d.y, d.x.prod(1))
        y2 = d.y**2
        assert abs(y2.mean().item() - 3.0**-n) < 5 * y2.std().item() / math.sqrt(len(y2))
    with pytest.raises(SphericalCowError, match="distribution"):
        product_of_inputs(n=2, P=2, seed=0, distribution="cauchy")


GENERATORS = {
    "soft_committee": lambda seed, dtype: soft_committee(N=8, M=2, P=4, seed=seed, dtype=dtype),
    "mlp_teacher": lambda seed, dtype: mlp_teacher(
        MLP(d_in=3, width=4, depth=1, activation="tanh", cw=1.0), P=4, seed=seed, dtype=dtype
    ),
    "sparse_parity": lambda seed, dtype: sparse_parity(n=6, k=2, P=4, seed=seed, dtype=dtype),
    "random_polynomial": lambda seed, dtype: random_polynomial(n=3, degree=2, P=4, seed=seed, dtype=dtype),
    "product_of_inputs": lambda seed, dtype: product_of_inputs(n=3, P=4, seed=seed, dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_share_the_dtype_forms_and_the_seed_rule(name):
    """Every generator takes torch.float32/float64 or "float32"/"float64", and a seed that is an int >= 0; anything
    else is a one-line SphericalCowError (not a raw numpy/torch error, not silently accepted)."""
    make = GENERATORS[name]
    for dtype, want in (("float32", torch.float32), (torch.float64, torch.float64), ("float64", torch.float64)):
        assert make(0, dtype).x.dtype == want
    for bad in (-1, "x", 1.5):
        with pytest.raises(SphericalCowError, match="seed=") as e:
            make(bad, "float32")
        assert "\n" not in str(e.value)
    with pytest.raises(SphericalCowError, match="dtype="):
        make(0, "float16")
