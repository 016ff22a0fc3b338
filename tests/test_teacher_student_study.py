"""The ``teacher-student`` study: ODE vs online SGD, a fast config in the default run, the default config (slow)."""

import json

import numpy as np
import pytest

from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import get_study, make_config, run_study
from sphericalcow.studies.teacher_student import exact_initial_weights

FAST = {"Ns": [60, 120], "n_seeds": 4, "t_max": 12.0, "n_points": 13, "trains": ["first", "both"]}


def test_exact_initial_weights_have_the_requested_overlaps():
    R0 = np.array([[0.3, 0.1], [0.0, 0.2], [0.1, 0.1]])
    Q0 = R0 @ R0.T + 0.05 * np.eye(3)
    W, Wt = exact_initial_weights(Q0, R0, 50, np.random.default_rng(0))
    assert np.allclose(W @ W.T / 50, Q0, atol=1e-12)
    assert np.allclose(W @ Wt.T / 50, R0, atol=1e-12)
    assert np.allclose(Wt @ Wt.T / 50, np.eye(2), atol=1e-12)


def test_fast_config_runs_and_the_ode_predicts_sgd(tmp_path):
    result, paths = run_study("teacher-student", FAST, out=tmp_path / "run", progress=False)
    agree = [v for v in result.verdicts if "the ODE predicts the mean SGD curve" in v.claim]
    assert len(agree) == 2 and all(v.passed for v in agree), [v.detail for v in agree]
    assert {"report.md", "report.html"} <= set(paths)
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["study"] == "teacher-student"
    assert (tmp_path / "run" / "eps_g_vs_time.png").exists()


PLANT = {"Ns": [100, 200], "n_seeds": 16, "t_max": 8.0, "n_points": 17, "trains": ["first"]}


def _ode_verdict(result):
    (v,) = [v for v in result.verdicts if "the ODE predicts the mean SGD curve" in v.claim]
    return v


@pytest.mark.parametrize("lr_factor", [1.3, 0.8])
def test_the_ode_vs_sgd_verdict_fails_when_the_ode_has_the_wrong_learning_rate(monkeypatch, lr_factor):
    """Plant an error: the study integrates the ODE at lr x1.3 or x0.8 while SGD runs at lr; the verdict must fail
    (it passes with the right lr on the same runs)."""
    import sphericalcow.studies.teacher_student as mod

    study = get_study("teacher-student")
    cfg = make_config(study, PLANT)
    right = _ode_verdict(study.run(cfg, progress=False))
    assert right.passed, right.detail
    real = mod.integrate_ode

    def wrong(*args, lr, **kw):
        return real(*args, lr=lr * lr_factor, **kw)

    monkeypatch.setattr(mod, "integrate_ode", wrong)
    bad = _ode_verdict(study.run(cfg, progress=False))
    assert bad.passed is False, bad.detail


def test_the_deviation_verdict_needs_a_significant_decrease_and_reports_the_rate(tmp_path):
    result, _ = run_study("teacher-student", FAST, out=tmp_path / "run", progress=False)
    for mode in ("first", "both"):
        (v,) = [v for v in result.verdicts if v.claim.startswith(f"{mode}: finite-N deviations")]
        lo, hi = result.data["modes"][mode]["deviation_exponent_ci"]
        assert v.passed == (hi < 0)
        assert ("It contains -1/2." in v.detail) == (lo <= -0.5 <= hi)


def test_config_validation():
    study = get_study("teacher-student")
    with pytest.raises(SphericalCowError, match="R0"):
        make_config(study, {"R0": [[0.1, 0.0]]})
    with pytest.raises(SphericalCowError, match="Ns"):
        make_config(study, {"Ns": [2, 100]})
    with pytest.raises(SphericalCowError, match="unknown config key"):
        make_config(study, {"N": 3})


@pytest.mark.slow
def test_default_config_all_checks_agree():
    study = get_study("teacher-student")
    result = study.run(make_config(study), progress=False)
    graded = [v for v in result.verdicts if v.passed is not None]
    assert len(graded) >= 6
    assert all(v.passed for v in graded), [(v.claim, v.detail) for v in graded if not v.passed]
