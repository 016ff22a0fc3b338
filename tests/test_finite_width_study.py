"""The finite-width study end to end at a small size, and its power against a wrong vertex."""

from __future__ import annotations

import json

import pytest

from sphericalcow.cli import main
from sphericalcow.studies import get_study, make_config

SMALL = {"widths": [16, 32], "depth": 3, "n_nets": 600, "cases": [{"activation": "relu"}, {"activation": "tanh"}]}


def test_small_study_agrees_and_reports(tmp_path):
    study = get_study("finite-width")
    res = study.run(make_config(study, SMALL), progress=False)
    graded = [v for v in res.verdicts if v.passed is not None]
    assert len(graded) == 3 and all(v.passed for v in graded), [(v.claim, v.detail) for v in graded]
    assert {f.name for f in res.figures} == {"kurtosis-vs-r", "ntk-variance-vs-r"}
    assert len(res.tables[0].rows) == 2 * 2 * 4


def test_a_wrong_vertex_is_caught(monkeypatch):
    # A 40% error in V (and so in kurtosis and the four-point function) must fail the Richardson verdict.
    import dataclasses

    import sphericalcow.studies.finite_width as mod

    real = mod.finite_width

    def wrong(arch, x=None):
        fw = real(arch, x)
        return dataclasses.replace(fw, kurtosis=fw.kurtosis * 1.4, four_point_cross=fw.four_point_cross * 1.4)

    monkeypatch.setattr(mod, "finite_width", wrong)
    study = get_study("finite-width")
    cfg = make_config(study, {**SMALL, "n_nets": 2000, "cases": [{"activation": "relu"}]})
    res = study.run(cfg, progress=False)
    assert res.verdicts[0].passed is False


def test_cli_run_and_bad_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "finite-width", "--set", "widths=[16]", "--out", str(tmp_path / "a"), "--no-progress"])
    assert e.value.code == 2
    assert "widths" in capsys.readouterr().err
    overrides = [
        "--set",
        "widths=[16,32]",
        "--set",
        "depth=2",
        "--set",
        "n_nets=200",
        "--set",
        'cases=[{"activation":"tanh"}]',
    ]
    with pytest.raises(SystemExit) as e:
        main(["run", "finite-width", *overrides, "--out", str(tmp_path / "b"), "--no-progress"])
    assert e.value.code == 0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["config"]["widths"] == [16, 32]


def test_cow_finite_width_json(capsys):
    with pytest.raises(SystemExit) as e:
        main(["finite-width", "--activation", "relu", "--depth", "3", "--width", "20", "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["universal_kurtosis_slope"] == 15.0
    assert out["layers"][-1]["kurtosis"] == pytest.approx(15 * 3 / 20, rel=1e-12)
    assert out["layers"][-1]["kurtosis_exact"] == pytest.approx(3 * ((1 + 5 / 20) ** 3 - 1), rel=1e-12)
    # ReLU at C_W = 2: n E[dTheta/dt] = -(16/3) L (L+1) (L+2) (tests/test_finite_width.py)
    assert out["ntk_velocity"]["rate"] == pytest.approx(-16 / 3 * 3 * 4 * 5 / 20, rel=1e-12)
    with pytest.raises(SystemExit) as e:
        main(["finite-width", "--activation", "relu", "--depth", "3", "--width", "0"])
    assert e.value.code == 2
    assert "--width=0" in capsys.readouterr().err
