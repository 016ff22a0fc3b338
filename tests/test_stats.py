"""Tests of the confidence-interval estimators (coverage on synthetic data, exact values, errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure import Estimate, bootstrap_ci, bootstrap_means_ci, mean_ci


def binomial_bounds(n_trials: int, p: float, alpha: float = 1e-3) -> tuple[float, float]:
    """Two-sided acceptance region (as fractions) for a Bin(n_trials, p) count at false-alarm rate alpha."""
    lo, hi = sps.binom.interval(1.0 - alpha, n_trials, p)
    return lo / n_trials, hi / n_trials


# ------------------------------------------------------------------------------------------------ mean_ci


def test_mean_ci_matches_student_t_formula() -> None:
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    est = mean_ci(x, level=0.9)
    lo, hi = sps.t.interval(0.9, df=4, loc=x.mean(), scale=sps.sem(x))
    assert isinstance(est.mean, float)
    assert est.mean == pytest.approx(x.mean())
    assert est.lo == pytest.approx(lo)
    assert est.hi == pytest.approx(hi)
    assert est.sem == pytest.approx(sps.sem(x))
    assert est.n == 5 and est.level == 0.9


def test_mean_ci_coverage_is_nominal() -> None:
    # 2000 independent normal data sets of 10 samples each: the 95% t-interval covers ~95% of the time.
    rng = np.random.default_rng(20240601)
    mu = 1.7
    data = rng.normal(mu, 3.0, size=(10, 2000))
    est = mean_ci(data, axis=0)
    assert est.shape == (2000,)
    coverage = float(np.mean(est.contains(mu)))
    assert 0.93 <= coverage <= 0.97, coverage
    # A deliberately wrong (too narrow, normal-quantile with n instead of n - 1) interval would not pass:
    z_half = sps.norm.ppf(0.975) * data.std(axis=0, ddof=0) / math.sqrt(10)
    wrong = np.mean(np.abs(data.mean(axis=0) - mu) <= z_half)
    assert wrong < 0.93


def test_mean_ci_axis_and_shapes() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 50, 4))
    est = mean_ci(data, axis=1)
    assert est.shape == (3, 4)
    for f in (est.mean, est.lo, est.hi, est.sem):
        assert isinstance(f, np.ndarray) and f.shape == (3, 4) and f.dtype == np.float64
    np.testing.assert_allclose(est.mean, data.mean(axis=1))
    assert np.all(est.lo < est.mean) and np.all(est.mean < est.hi)
    est_neg = mean_ci(data, axis=-2)
    np.testing.assert_allclose(est_neg.hi, est.hi)
    # Higher level -> wider interval.
    wide = mean_ci(data, axis=1, level=0.99)
    assert np.all(wide.hi - wide.lo > est.hi - est.lo)


def test_mean_ci_nan_propagates_elementwise() -> None:
    data = np.array([[1.0, np.nan], [2.0, 3.0], [3.0, 4.0]])
    est = mean_ci(data)
    assert np.isfinite(est.mean[0]) and np.isnan(est.mean[1])
    assert est.contains([2.0, 3.5]).tolist() == [True, False]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": np.array([1.0])}, "n=1"),
        ({"samples": np.ones((5, 1)), "axis": 1}, "n=1"),
        ({"samples": np.ones(5), "level": 1.0}, "level=1.0"),
        ({"samples": np.ones(5), "level": 0}, "level=0"),
        ({"samples": np.ones(5), "level": "high"}, "level='high'"),
        ({"samples": np.ones(5), "axis": 2}, "axis=2"),
        ({"samples": 3.0}, "scalar"),
        ({"samples": ["a", "b"]}, "not numeric"),
    ],
)
def test_mean_ci_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(SphericalCowError, match=match) as info:
        mean_ci(**kwargs)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ Estimate


def test_estimate_contains_and_to_dict() -> None:
    est = Estimate(
        mean=np.array([0.0, 1.0, np.nan]),
        lo=np.array([-1.0, 0.5, np.nan]),
        hi=np.array([1.0, 0.9, np.nan]),
        sem=np.array([0.5, 0.1, np.nan]),
        n=7,
        level=0.95,
    )
    assert est.contains(np.array([0.0, 1.0, 0.0])).tolist() == [True, False, False]
    assert est.contains(-1.0).tolist() == [True, False, False]  # bounds are inclusive
    d = est.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN became null
    assert json.loads(text) == {
        "mean": [0.0, 1.0, None],
        "lo": [-1.0, 0.5, None],
        "hi": [1.0, 0.9, None],
        "sem": [0.5, 0.1, None],
        "n": 7,
        "level": 0.95,
    }
    scalar = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert scalar.contains(2.0) is True and scalar.contains(100.0) is False
    assert isinstance(scalar.to_dict()["mean"], float)


def test_estimate_is_frozen() -> None:
    est = mean_ci(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(AttributeError):
        est.mean = 0.0  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- bootstrap_ci


def test_bootstrap_mean_coverage_within_binomial_tolerance() -> None:
    # Percentile bootstrap of the mean of n = 100 normal samples, 1000 independent data sets.
    rng = np.random.default_rng(7)
    n_rep, n = 1000, 100
    covered = 0
    for r in range(n_rep):
        x = rng.normal(2.0, 1.5, size=n)
        est = bootstrap_ci(x, lambda y: y.mean(axis=-1), n_boot=1000, seed=r, vectorized=True)
        covered += est.contains(2.0)
    lo, hi = binomial_bounds(n_rep, 0.95)
    # The percentile interval's O(1/n) undercoverage at n = 100 is ~0.3%, well inside the tolerance.
    assert lo <= covered / n_rep <= hi, (covered / n_rep, lo, hi)


def test_bootstrap_means_kurtosis_coverage() -> None:
    # The pooled-kurtosis statistic used by the probes: units = seeds, each with (m2, m4) of 16 Gaussian
    # neurons; the truth is 0 excess kurtosis. Kurtosis intervals converge slowly (their error involves the
    # 8th moment): with 200 units the percentile interval's true coverage is ~0.935 (measured on 3000 other
    # data sets; BCa does no better), so the lower tolerance is the binomial bound for p = 0.93. Gross errors
    # (e.g. resampling neurons instead of seeds, or a wrong statistic) land far outside.
    rng = np.random.default_rng(11)
    n_rep, n_units = 600, 200
    z = rng.normal(size=(n_rep, n_units, 16))
    moments = np.stack([(z**2).mean(-1), (z**4).mean(-1)], axis=-1)  # (rep, units, 2)
    covered = 0
    for r in range(n_rep):
        est = bootstrap_means_ci(moments[r], lambda m: m[..., 1] / m[..., 0] ** 2 - 3.0, n_boot=1000, seed=r)
        covered += est.contains(0.0)
    lo, _ = binomial_bounds(n_rep, 0.93)
    _, hi = binomial_bounds(n_rep, 0.95)
    assert lo <= covered / n_rep <= hi, (covered / n_rep, lo, hi)


def test_bootstrap_vectorized_and_loop_agree() -> None:
    rng = np.random.default_rng(3)
    x = rng.exponential(size=(40, 3))
    loop = bootstrap_ci(x, lambda y: np.median(y, axis=0), n_boot=300, seed=5)
    vec = bootstrap_ci(x, lambda y: np.median(y, axis=-2), n_boot=300, seed=5, vectorized=True)
    for a, b in zip((loop.mean, loop.lo, loop.hi, loop.sem), (vec.mean, vec.lo, vec.hi, vec.sem), strict=True):
        np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(loop.mean, np.median(x, axis=0))
    assert loop.shape == (3,) and loop.n == 40
    # bootstrap_means_ci is the same bootstrap for a function of means.
    means = bootstrap_means_ci(x, lambda m: m[..., 0] / m[..., 1], n_boot=300, seed=5)
    ratio = bootstrap_ci(x, lambda y: y[:, 0].mean() / y[:, 1].mean(), n_boot=300, seed=5)
    np.testing.assert_allclose([means.mean, means.lo, means.hi], [ratio.mean, ratio.lo, ratio.hi], rtol=1e-12)


def test_bootstrap_is_deterministic_and_seed_dependent() -> None:
    x = np.random.default_rng(1).normal(size=30)
    a = bootstrap_ci(x, np.mean, n_boot=200, seed=4)
    b = bootstrap_ci(x, np.mean, n_boot=200, seed=4)
    c = bootstrap_ci(x, np.mean, n_boot=200, seed=5)
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert (a.lo, a.hi) != (c.lo, c.hi)
    assert a.lo < a.mean < a.hi
    # The bootstrap standard error of the mean is close to s / sqrt(n).
    assert a.sem == pytest.approx(x.std(ddof=1) / math.sqrt(30), rel=0.2)


def test_bootstrap_errors() -> None:
    x = np.arange(10.0)
    with pytest.raises(SphericalCowError, match="n=1"):
        bootstrap_ci(np.array([1.0]), np.mean)
    with pytest.raises(SphericalCowError, match="not callable"):
        bootstrap_ci(x, "mean")  # type: ignore[arg-type]
    with pytest.raises(SphericalCowError, match="n_boot=5"):
        bootstrap_ci(x, np.mean, n_boot=5)
    with pytest.raises(SphericalCowError, match=r"level=1\.5"):
        bootstrap_ci(x, np.mean, level=1.5)
    with pytest.raises(SphericalCowError, match="seed=-1"):
        bootstrap_ci(x, np.mean, seed=-1)
    with pytest.raises(SphericalCowError, match="same shape"):
        bootstrap_ci(x, lambda y: np.unique(y), n_boot=20)
    with pytest.raises(SphericalCowError, match="n=1"):
        bootstrap_means_ci(np.ones((1, 2)), lambda m: m)
    with pytest.raises(SphericalCowError, match="not callable"):
        bootstrap_means_ci(x, None)  # type: ignore[arg-type]
