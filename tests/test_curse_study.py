"""Study `curse-of-dimensionality`: kernel-regression learning-curve exponents vs input dimension."""

import math

import numpy as np
import pytest
from scipy.special import kv

from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import run_study
from sphericalcow.studies.base import get_study, make_config
from sphericalcow.studies.curse_of_dimensionality import fourier_1d, matern, matern_field, sphere
from sphericalcow.theory.sample_complexity import kernel_regression_exponent


def test_matern_closed_forms():
    r = np.linspace(0, 3, 31)
    assert np.allclose(matern(r, 0.5, 0.7), np.exp(-r / 0.7), rtol=1e-12, atol=1e-15)
    z = math.sqrt(3) * r / 1.3
    assert np.allclose(matern(r, 1.5, 1.3), (1 + z) * np.exp(-z), rtol=1e-12, atol=1e-15)
    z1 = math.sqrt(2) * r[1:]
    assert np.allclose(matern(r[1:], 1.0, 1.0), z1 * kv(1, z1), rtol=1e-12)
    assert matern(np.array([0.0]), 1.0, 1.0)[0] == 1.0


def test_teacher_fields_have_the_prescribed_covariance():
    rng = np.random.default_rng(0)
    x = sphere(3, 4, rng)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0)
    # Monte Carlo over 4000 draws of the field at 3 fixed points: empirical covariance vs the Matern matrix
    ys = np.array([matern_field(x, 1.0, 1.0, rng) for _ in range(4000)])
    target = matern(np.linalg.norm(x[:, None] - x[None], axis=-1), 1.0, 1.0)
    assert np.all(np.abs(np.cov(ys.T) - target) < 5 * math.sqrt(2 / 4000))
    # the 1-d Fourier series: unit variance and a stationary covariance, by Monte Carlo
    t = np.array([-0.5, 0.0, 0.01])
    g = np.array([fourier_1d(t, 1.0, 1.0, 512, rng) for _ in range(4000)])
    assert np.all(np.abs(g.var(0) - 1) < 5 * math.sqrt(2 / 4000))
    c = np.corrcoef(g.T)
    assert c[1, 2] > 0.95 > c[0, 1]  # close points correlated, far points much less


def test_small_curse_study_runs_and_measures_the_predicted_ordering(tmp_path):
    overrides = {"dims": [3, 6], "train_sizes": [64, 128, 256, 512], "n_seeds": 3, "n_test": 200, "n_modes": 1024}
    result, paths = run_study("curse-of-dimensionality", overrides, out=tmp_path / "run", progress=False)
    assert {"report.md", "report.html", "results.json", "learning-curves.png"} <= set(paths)
    rows = {(r["target"], r["d"]): r for r in result.tables[0].rows}
    assert len(rows) == 6
    for (target, d), r in rows.items():
        expected = (
            2.0
            if target.endswith("oracle")
            else kernel_regression_exponent(d - 1, teacher_smoothness=1.0, student_alpha=d)
        )
        assert r["beta predicted"] == pytest.approx(expected)
        v = next(v for v in result.verdicts if v.claim.startswith(f"{target} target, d={d}:"))
        assert v.passed == (r["ci_lo"] <= expected <= r["ci_hi"])
    # the curse is visible even at this size: the isotropic exponent at d=3 exceeds the one at d=6
    assert rows[("isotropic", 3)]["beta measured"] > rows[("isotropic", 6)]["beta measured"]
    # test error decreases with P for every target (learning happens)
    for case, arr in result.data["mse"].items():
        assert np.all(np.exp(np.log(arr).mean(axis=1))[:, -1] < np.exp(np.log(arr).mean(axis=1))[:, 0]), case


def test_curse_config_validation():
    study = get_study("curse-of-dimensionality")
    with pytest.raises(SphericalCowError, match="dims"):
        make_config(study, {"dims": [1, 3]})
    with pytest.raises(SphericalCowError, match="nu"):
        make_config(study, {"nu": 0.0})


@pytest.mark.slow
def test_default_curse_study_agrees_with_the_theory(tmp_path):
    result, _ = run_study(
        "curse-of-dimensionality",
        {"n_seeds": 8, "train_sizes": [128, 256, 512, 1024, 2048]},
        out=tmp_path / "r",
        progress=False,
    )
    failed = [v.claim + ": " + v.detail for v in result.verdicts if v.passed is False]
    assert not failed, failed
