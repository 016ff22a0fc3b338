"""The aspect-ratio study at a small size: budgets, per-layer rates, NTK change, honest verdicts."""

from __future__ import annotations

import math

import pytest

from sphericalcow.studies import get_study, make_config
from sphericalcow.studies.aspect_ratio import _n_params, width_for_budget

SMALL = {"budget": 1500, "depths": [1, 2, 4], "n_train": 48, "n_test": 64, "n_probe": 6, "steps": 40, "n_seeds": 2}


@pytest.mark.parametrize("depth", [1, 2, 5, 12])
def test_width_for_budget_is_the_closest(depth):
    n = width_for_budget(depth, 10, 20000)
    best = min(range(1, 3000), key=lambda m: abs(_n_params(depth, 10, m) - 20000))
    assert abs(_n_params(depth, 10, n) - 20000) == abs(_n_params(depth, 10, best) - 20000)


def test_small_run_reports_rows_verdicts_and_figure():
    study = get_study("aspect-ratio")
    res = study.run(make_config(study, SMALL), progress=False)
    rows = res.tables[0].rows
    assert [row["depth"] for row in rows] == [1, 2, 4]
    assert all(abs(row["params"] - 1500) / 1500 < 0.1 for row in rows)
    assert all(row["diverged"] == 0 and math.isfinite(row["test_loss"]) for row in rows)
    assert all(row["ntk_change"] > 0 for row in rows)  # training moves the NTK at every finite width
    # the theory columns: leading-order kurtosis = 15 r for ReLU at criticality
    for row in rows:
        assert row["kurtosis_theory"] == pytest.approx(15 * row["r"], rel=1e-9)
    claims = [v.claim for v in res.verdicts]
    assert any("r_c = 1/nu = 0.0667" in c for c in claims)
    assert res.figures[0].name == "aspect-ratio"
    assert res.data["metrics"]["best_r"] in [row["r"] for row in rows]


def test_bad_config():
    study = get_study("aspect-ratio")
    from sphericalcow import SphericalCowError

    for bad in ({"depths": [2, 2, 3]}, {"activation": "nope"}, {"base_lr": 0}, {"depths": [1, 2]}):
        with pytest.raises(SphericalCowError):
            make_config(study, bad)
