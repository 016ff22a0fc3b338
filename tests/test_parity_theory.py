"""Sparse-parity complexity laws: the SQ query count against brute-force enumeration, the orthogonality of parities
behind it (exhaustively on the cube), and the online-SGD scaling law's exponents."""

import itertools
import math

import pytest
import torch

from sphericalcow.data.parity import fourier_coefficient
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.parity import online_sgd_exponent, online_sgd_steps, sq_lower_bound


@pytest.mark.parametrize(("n", "k"), [(5, 1), (8, 3), (10, 4), (12, 6)])
def test_sq_bound_counts_the_candidate_parities(n, k):
    assert sq_lower_bound(n, k) == sum(1 for _ in itertools.combinations(range(n), k))
    assert sq_lower_bound(n, k, tolerance=0.1) == pytest.approx(math.comb(n, k) * 0.01)


def test_distinct_parities_are_orthogonal_on_the_cube():
    """E[chi_S chi_T] = [S == T] exactly over all 2^n points: no query correlated with one parity informs about
    another (the SQ argument)."""
    n = 6
    x = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=torch.float64)
    subsets = [s for k in (2, 3) for s in itertools.combinations(range(n), k)]
    for S in subsets[::3]:
        f = x[:, list(S)].prod(1)
        for T in subsets:
            assert fourier_coefficient(f, x, T).item() == pytest.approx(1.0 if S == T else 0.0, abs=1e-15)


def test_online_sgd_law():
    assert [online_sgd_exponent(k) for k in (1, 2, 3, 4, 5)] == [1.0, 1.0, 2.0, 3.0, 4.0]
    for k in (3, 4):
        assert online_sgd_steps(40, k) / online_sgd_steps(20, k) == pytest.approx(2.0 ** (k - 1))
    # k = 2: n log n
    assert online_sgd_steps(64, 2) / online_sgd_steps(8, 2) == pytest.approx(8 * math.log(64) / math.log(8))
    # the SQ sample bound grows faster than the online steps (n^k vs n^(k-1))
    assert sq_lower_bound(200, 3) / sq_lower_bound(100, 3) > online_sgd_steps(200, 3) / online_sgd_steps(100, 3)


def test_validation():
    with pytest.raises(SphericalCowError, match="k=4"):
        sq_lower_bound(3, 4)
    with pytest.raises(SphericalCowError, match="tolerance"):
        sq_lower_bound(5, 2, tolerance=2.0)
    with pytest.raises(SphericalCowError, match="k=0"):
        online_sgd_exponent(0)


def test_sq_bound_with_batch_tolerance_counts_steps_not_samples():
    """tau = 1/sqrt(B): C(n, k) tau^2 = C(n, k) / B is the number of batch-B SGD steps; steps x B is C(n, k)."""
    n, k, B = 30, 3, 32
    steps = sq_lower_bound(n, k, tolerance=1 / math.sqrt(B))
    assert steps == pytest.approx(math.comb(n, k) / B)
    assert steps * B == pytest.approx(sq_lower_bound(n, k))
    doc = " ".join(sq_lower_bound.__doc__.split())
    assert "number of steps" in doc and "samples are steps x B" in doc
