"""The ``parity`` study: steps to learn a sparse parity vs n, and hidden progress."""

import pytest

from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import get_study, make_config, run_study
from sphericalcow.studies.parity import train_parity


def test_train_parity_learns_and_records_the_probe():
    out = train_parity(12, 2, seed=0, record=True, max_steps=5000)
    assert out["steps"] is not None and out["steps"] <= 5000
    tr = out["trace"]
    assert tr["accuracy"][-1] >= 0.99
    assert tr["fourier"][-1] > 0.5 > abs(tr["fourier"][0])  # the network's correlation with chi_S: ~0 -> large


def test_fast_config_runs_and_writes_a_report(tmp_path):
    cfg = {"k": 2, "ns": [8, 12, 16], "n_seeds": 2, "width": 64}
    result, _ = run_study("parity", cfg, out=tmp_path / "run", progress=False)
    learned = result.verdicts[0]
    assert learned.passed, learned.detail
    assert any("fitted exponent" in v.claim for v in result.verdicts)
    assert result.data["exponent"] > 0
    assert (tmp_path / "run" / "hidden_progress.png").exists()


def test_config_validation():
    study = get_study("parity")
    with pytest.raises(SphericalCowError, match="ns"):
        make_config(study, {"k": 5, "ns": [4, 8]})
    with pytest.raises(SphericalCowError, match="lr"):
        make_config(study, {"lr": -0.1})


@pytest.mark.slow
def test_default_config_all_checks_agree():
    study = get_study("parity")
    result = study.run(make_config(study), progress=False)
    graded = [v for v in result.verdicts if v.passed is not None]
    assert len(graded) == 3
    assert all(v.passed for v in graded), [(v.claim, v.detail) for v in graded if not v.passed]
