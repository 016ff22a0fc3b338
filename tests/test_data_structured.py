"""Data generators of the first half of issue 5: Gaussian mixtures, the hidden manifold model, the Random Hierarchy
Model and scikit-learn's digits. Statistics are checked against the generating structure with fixed seeds and
tolerances of several standard errors."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from sphericalcow.data.base import Dataset
from sphericalcow.data.hierarchy import one_hot, random_hierarchy_model, rhm_split
from sphericalcow.data.manifold import hidden_manifold
from sphericalcow.data.mixtures import gaussian_mixture
from sphericalcow.data.real import digits
from sphericalcow.errors import SphericalCowError
from sphericalcow.theory.sample_complexity import rhm_p_max

# ---------------------------------------------------------------- Gaussian mixture


def test_mixture_class_means_and_covariances_match_the_structure():
    n, d, k, sigma = 60_000, 5, 3, 0.7
    ds = gaussian_mixture(n=n, d=d, n_classes=k, separation=3.0, sigma=sigma, seed=1)
    assert isinstance(ds, Dataset) and ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    x, y = ds.x.double().numpy(), ds.y.numpy()
    mu = ds.structure["means"]
    assert np.allclose(np.linalg.norm(mu, axis=1), 3.0 / math.sqrt(2))
    counts = np.bincount(y, minlength=k)
    # class frequencies 1/k within 5 binomial standard errors
    assert np.all(np.abs(counts / n - 1 / k) < 5 * math.sqrt((1 / k) * (1 - 1 / k) / n))
    for c in range(k):
        xc = x[y == c]
        se = sigma / math.sqrt(len(xc))
        assert np.all(np.abs(xc.mean(axis=0) - mu[c]) < 5 * se)
        cov = np.cov(xc.T)
        # entries of a sample covariance have sd ~ sigma^2 sqrt(2/n) (diagonal) and sigma^2/sqrt(n) (off-diagonal)
        assert np.all(np.abs(cov - sigma**2 * np.eye(d)) < 6 * sigma**2 * math.sqrt(2 / len(xc)))


def test_mixture_nearest_mean_accuracy_matches_the_bayes_error():
    # two classes at distance Delta with sd sigma: Bayes error Phi(-Delta / (2 sigma))
    mu = np.array([[1.0, 0.0], [-1.0, 0.0]])
    ds = gaussian_mixture(n=40_000, d=2, means=mu, sigma=1.0, seed=3)
    x, y = ds.x.double().numpy(), ds.y.numpy()
    pred = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    err = np.mean(pred != y)
    bayes = 0.5 * (1 + erf(-1.0 / math.sqrt(2)))
    assert abs(err - bayes) < 5 * math.sqrt(bayes * (1 - bayes) / 40_000)


def test_mixture_seeds_reproduce_and_bad_arguments_raise():
    a, b = gaussian_mixture(n=10, d=3, seed=5), gaussian_mixture(n=10, d=3, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, gaussian_mixture(n=10, d=3, seed=6).x)
    for kw in ({"n": 0}, {"d": -1}, {"sigma": 0.0}, {"n_classes": 1}, {"means": np.zeros((3, 3))}):
        with pytest.raises(SphericalCowError):
            gaussian_mixture(**{"n": 10, "d": 3, "seed": 0, **kw})


# ---------------------------------------------------------------- hidden manifold


@pytest.mark.parametrize("f", ["tanh", "sign", "erf"])
def test_hidden_manifold_latent_dimension_shows_in_the_spectrum(f):
    N, D = 120, 8
    ds = hidden_manifold(n=20_000, N=N, D=D, f=f, seed=2)
    x = ds.x.double().numpy()
    assert x.shape == (20_000, N) and ds.structure["F"].shape == (D, N)
    ev = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    # D eigenvalues of order mu_1^2 N / D stand out of a bulk of order mu_*^2 (Gaussian equivalence)
    assert ev[D - 1] / ev[D] > 5.0
    # the same inputs without the latent structure (an unstructured F of rank N) show no such gap
    full = hidden_manifold(n=20_000, N=N, D=N, f=f, seed=2).x.double().numpy()
    ev_full = np.sort(np.linalg.eigvalsh(np.cov(full.T)))[::-1]
    assert ev_full[D - 1] / ev_full[D] < 1.5
    # the teacher sees only the latents: labels are a function of C
    C, w = ds.structure["C"], ds.structure["teacher_w"]
    assert np.array_equal(ds.y.numpy(), np.where(C @ w[0] >= 0, 1.0, -1.0))


def test_hidden_manifold_covariance_matches_the_exact_arcsine_formula():
    """For f(z) = erf(z / sqrt 2) the covariance of x is known in closed form (Williams 1998): with u = c F / sqrt D
    Gaussian of covariance S = F^T F / D, E[f(u_i) f(u_j)] = (2/pi) arcsin(S_ij / sqrt((1 + S_ii)(1 + S_jj)))."""
    n, N, D = 40_000, 12, 4
    ds = hidden_manifold(n=n, N=N, D=D, f="erf", seed=9)
    F = ds.structure["F"]
    S = F.T @ F / D
    dg = np.sqrt(1 + np.diag(S))
    exact = 2 / np.pi * np.arcsin(S / np.outer(dg, dg))
    emp = np.cov(ds.x.double().numpy().T)
    # |f| < 1, so each product has variance < 1 and the entries' standard error is < 1/sqrt(n)
    assert np.all(np.abs(emp - exact) < 5 / math.sqrt(n))
    assert np.max(np.abs(exact - np.diag(np.diag(exact)))) > 20 / math.sqrt(n)  # off-diagonal structure resolved


def test_hidden_manifold_seeds_and_errors():
    a, b = hidden_manifold(n=5, N=10, D=3, seed=1), hidden_manifold(n=5, N=10, D=3, seed=1)
    assert torch.equal(a.x, b.x)
    with pytest.raises(SphericalCowError, match="f="):
        hidden_manifold(n=5, N=10, D=3, f="cubic", seed=1)
    with pytest.raises(SphericalCowError, match="D="):
        hidden_manifold(n=5, N=10, D=0, seed=1)


# ---------------------------------------------------------------- Random Hierarchy Model


def _enumerate_by_brute_force(rhm):
    """All inputs of the grammar by expanding the tree symbol by symbol (independent of the index decoding)."""
    strings = {}
    for c in range(rhm.n_c):
        level = [[c]]
        for depth in range(rhm.L):
            nxt = []
            for seq in level:
                options = [rhm.rules[depth][sym] for sym in seq]  # each (m, s)
                for choice in itertools.product(*options):
                    nxt.append([int(t) for tup in choice for t in tup])
            level = nxt
        for seq in level:
            strings.setdefault(tuple(seq), set()).add(c)
    return strings


@pytest.mark.parametrize(
    ("v", "m", "n_c", "s", "L"), [(4, 2, 2, 2, 2), (3, 3, 3, 2, 2), (3, 2, 2, 3, 2), (2, 2, 2, 2, 3)]
)
def test_rhm_counts_and_unambiguity_by_enumeration(v, m, n_c, s, L):
    rhm = random_hierarchy_model(v=v, m=m, n_c=n_c, s=s, L=L, seed=11)
    assert rhm.p_max == rhm_p_max(n_c=n_c, m=m, s=s, L=L) == n_c * m ** ((s**L - 1) // (s - 1))
    # rules of each level: distinct s-tuples (no tuple produced by two symbols, nor twice by one)
    for level, rules in enumerate(rhm.rules):
        assert rules.shape == ((n_c if level == 0 else v), m, s)
        tuples = {tuple(t) for t in rules.reshape(-1, s)}
        assert len(tuples) == rules.shape[0] * m
    brute = _enumerate_by_brute_force(rhm)
    assert len(brute) == rhm.p_max  # every datum distinct
    assert all(len(labels) == 1 for labels in brute.values())  # unambiguous: one label per input
    # the index decoding enumerates exactly the same set, with the same labels
    d = rhm.digits_of_indices(np.arange(rhm.p_max))
    sym = rhm.symbols(d)
    assert {tuple(r) for r in sym} == set(brute)
    assert all(brute[tuple(r)] == {c} for r, c in zip(sym, d[:, 0], strict=True))
    assert np.array_equal(rhm.labels_of(sym), d[:, 0])
    assert rhm.indices_of_digits(d) == list(range(rhm.p_max))


def test_rhm_labels_decode_through_the_rules_and_foreign_strings_are_rejected():
    rhm = random_hierarchy_model(v=8, m=4, n_c=4, s=2, L=3, seed=0)
    tr, te = rhm.split(3000, 1000, seed=1)
    for ds in (tr, te):
        assert ds.x.shape[1:] == (8, 8) and ds.x.dtype == torch.float32
        assert torch.all(ds.x.sum(dim=1) == 1)  # one-hot over the vocabulary at each position
        sym = ds.x.argmax(dim=1).numpy()
        assert np.array_equal(sym, ds.structure["symbols"])
        assert np.array_equal(rhm.labels_of(sym), ds.y.numpy())
    # with v*m = 32 of the v^s = 64 tuples used per level, most random strings are not in the grammar
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 8, size=(2000, 8))
    labels = rhm.labels_of(rand)
    assert np.mean(labels == -1) > 0.8
    assert set(np.unique(labels)) <= {-1, 0, 1, 2, 3}


def test_rhm_sampling_without_replacement_gives_distinct_data_and_disjoint_splits():
    rhm = random_hierarchy_model(v=4, m=2, n_c=2, s=2, L=3, seed=4)
    assert rhm.p_max == 2 * 2**7
    tr, te = rhm.split(200, 56, seed=0)  # the whole data set
    rows = {tuple(r) for r in np.concatenate([tr.structure["symbols"], te.structure["symbols"]])}
    assert len(rows) == 256
    # class balance: each class has exactly P_max / n_c data
    assert np.bincount(np.concatenate([tr.y.numpy(), te.y.numpy()])).tolist() == [128, 128]
    with pytest.raises(SphericalCowError, match="exceeds"):
        rhm.split(200, 57, seed=0)


def test_rhm_huge_p_max_is_never_materialised_and_codes_are_uniform():
    rhm = random_hierarchy_model(v=32, m=32, n_c=32, s=2, L=4, seed=3)
    assert rhm.p_max == 32 * 32**15 > 2**62
    d = rhm.sample_digits(20_000, seed=1)
    assert len({tuple(r) for r in d}) == 20_000
    # class and rule choices uniform: chi-square of the class column
    counts = np.bincount(d[:, 0], minlength=32)
    chi2 = ((counts - 20_000 / 32) ** 2 / (20_000 / 32)).sum()
    assert chi2 < 70  # 31 dof: P(chi2 > 70) ~ 1e-4
    sym = rhm.symbols(d[:100])
    assert np.array_equal(rhm.labels_of(sym), d[:100, 0])


def test_rhm_seeds_reproduce():
    a = rhm_split(v=6, m=3, n_c=3, s=2, L=2, n_train=50, n_test=20, seed=7)
    b = rhm_split(v=6, m=3, n_c=3, s=2, L=2, n_train=50, n_test=20, seed=7)
    assert torch.equal(a[0].x, b[0].x) and torch.equal(a[1].y, b[1].y)
    c = rhm_split(v=6, m=3, n_c=3, s=2, L=2, n_train=50, n_test=20, seed=8)
    assert not torch.equal(a[0].x, c[0].x)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"m": 5}, "m=5"),  # m <= v^(s-1) = 4
        ({"n_c": 5}, "n_c=5"),  # n_c <= v = 4
        ({"s": 1}, "s=1"),
        ({"L": 0}, "L=0"),
        ({"v": 1}, "v=1"),
        ({"seed": -1}, "seed=-1"),
        ({"m": 2.5}, "m=2.5"),
    ],
)
def test_rhm_bad_arguments_raise_one_line_errors(kw, match):
    args = {"v": 4, "m": 2, "n_c": 2, "s": 2, "L": 2, "seed": 0, **kw}
    with pytest.raises(SphericalCowError, match=match) as e:
        random_hierarchy_model(**args)
    assert "\n" not in str(e.value)


def test_one_hot_layout():
    x = one_hot(np.array([[0, 2, 1]]), 3)
    assert x.shape == (1, 3, 3)
    assert torch.equal(x[0], torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]))


# ---------------------------------------------------------------- digits


def test_digits_split_is_standardised_disjoint_and_seeded():
    tr, te = digits(n_test=300, seed=0)
    assert tr.x.shape == (1497, 64) and te.x.shape == (300, 64)
    assert not set(tr.structure["indices"]) & set(te.structure["indices"])
    xt = tr.x.double()
    used = tr.structure["std"] != 1.0
    assert torch.allclose(xt.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        xt.std(0, unbiased=False)[torch.from_numpy(used)], torch.ones(int(used.sum()), dtype=torch.float64), atol=1e-5
    )
    assert set(tr.y.tolist()) == set(range(10))
    tr2, _ = digits(n_test=300, seed=0)
    assert torch.equal(tr.x, tr2.x)
    sub, _ = digits(n_test=50, classes=[3, 8], seed=1)
    assert set(sub.y.tolist()) == {0, 1}
    with pytest.raises(SphericalCowError, match="classes"):
        digits(classes=[3], seed=0)
    with pytest.raises(SphericalCowError, match="n_test"):
        digits(n_test=5000, seed=0)


STRUCTURED = {
    "gaussian_mixture": lambda seed, dtype: gaussian_mixture(n=8, d=3, seed=seed, dtype=dtype),
    "hidden_manifold": lambda seed, dtype: hidden_manifold(n=8, N=6, D=2, seed=seed, dtype=dtype),
    "rhm_split": lambda seed, dtype: rhm_split(v=3, m=2, n_c=2, s=2, L=2, n_train=4, n_test=2, seed=seed, dtype=dtype)[
        0
    ],
}


@pytest.mark.parametrize("name", sorted(STRUCTURED))
def test_structured_generators_share_the_dtype_forms_and_the_seed_rule(name):
    """The same dtype forms as the teacher, parity and polynomial generators (torch dtypes or "float32"/"float64"),
    and a seed that is an int >= 0, else a one-line SphericalCowError."""
    make = STRUCTURED[name]
    for dtype, want in (("float32", torch.float32), (torch.float64, torch.float64), ("float64", torch.float64)):
        assert make(0, dtype).x.dtype == want
    for bad in (-1, "x", 1.5):
        with pytest.raises(SphericalCowError, match="seed=") as e:
            make(bad, "float32")
        assert "\n" not in str(e.value)
    with pytest.raises(SphericalCowError, match="dtype="):
        make(0, "float16")
