"""``cow doctor`` through the console script (subprocess) and ``cli.main`` (in-process, for the error cases):
the planted defect is found and the --fix copy passes its re-check, the report files, --json, one-line errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sphericalcow.cli import main

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"
MODELS = Path(__file__).with_name("doctor_models.py").resolve()

BAD_PY = """
import torch
from torch import nn


def nan_net():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        m[0].weight.fill_(float("nan"))
    return m


def not_a_module():
    return 3


def broken():
    raise RuntimeError("boom")
"""


def cow(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def test_fix_and_json_through_the_console_script(tmp_path):
    out = tmp_path / "run"
    r = cow(
        "doctor", f"{MODELS}:too_small_init", "--input-shape", "16", "--out", str(out), "--fix", "--json",
        "--no-progress", "--n-init", "6",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["failed"] == ["criticality"] and d["ensemble"] == "factory" and d["input_shape"] == [16, 16]
    assert d["fix"]["recheck"]["failed"] == [] and d["fix"]["recheck"]["passed"] is True
    for f in ("report.md", "report.html", "doctor.json", "signal.png", "kurtosis.png", "fixed.pt"):
        assert (out / f).is_file(), f
    for f in ("report.md", "report.html", "doctor.json"):
        assert (out / "fixed" / f).is_file(), f
    assert json.loads((out / "doctor.json").read_text())["failed"] == ["criticality"]
    state = torch.load(out / "fixed.pt", weights_only=True)
    sys.path.insert(0, str(MODELS.parent))
    try:
        import doctor_models as dm
    finally:
        sys.path.remove(str(MODELS.parent))
    fresh = dm.too_small_init()
    fresh.load_state_dict(state, strict=True)
    # the fixed hidden layers are at tanh's critical C_W = 1 (std 1/sqrt(64))
    w = state["2.weight"].double()
    assert float(w.pow(2).mean() * 64) == pytest.approx(1.0, rel=0.1)


def _main(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    got = capsys.readouterr()
    assert e.value.code == 0, got.err
    return got.out


def test_table_output_for_a_cnn_and_data_file(tmp_path, capsys):
    """In-process ``cli.main`` (the console script's entry point; one subprocess run above is enough)."""
    out = _main(capsys, "doctor", f"{MODELS}:small_cnn", "--input-shape", "3,16,16", "--out", str(tmp_path / "a"),
                "--no-progress", "--n-init", "6")  # fmt: skip
    assert "PASS" in out and "FAIL" not in out and "report.html" in out, out
    assert (tmp_path / "a" / "report.html").is_file() and not (tmp_path / "a" / "fixed.pt").exists()
    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=g.normal(size=(40, 16)), y=g.normal(size=(40, 1)))
    out = _main(
        capsys, "doctor", f"{MODELS}:critical_relu", "--data", str(tmp_path / "d.npz"), "--lr", "1000", "--json",
        "--out", str(tmp_path / "b"), "--no-progress", "--n-init", "4",
    )  # fmt: skip
    d = json.loads(out)
    keys = {v["key"]: v for v in d["verdicts"]}
    assert keys["sharpness"]["passed"] is False  # lr = 1000 is far above 2 / lambda_max
    assert "ntk" in keys and "learning_rates" in keys and d["data"]["ntk_condition"] > 1


def test_functional_relu_defect_is_fixed_in_process(tmp_path, capsys):
    """The reviewer's reproduction (issue 8 review): 20 F.relu layers at C_W = 0.5 were treated as linear, so --fix
    left them at C_W = 1 and the re-check still failed (L/xi = -14.3). Now: ReLU's C_W = 2, re-check passes, the
    readout is not re-initialised."""
    out = _main(
        capsys, "doctor", f"{MODELS}:func_relu_bad", "--input-shape", "16", "--out", str(tmp_path / "r"), "--fix",
        "--json", "--no-progress", "--n-init", "6",
    )  # fmt: skip
    d = json.loads(out)
    assert d["failed"] == ["criticality"] and d["fix"]["recheck"]["failed"] == []
    state = torch.load(tmp_path / "r" / "fixed.pt", weights_only=True)
    assert float(state["ls.5.weight"].double().pow(2).mean() * 128) == pytest.approx(2.0, rel=0.1)
    sys.path.insert(0, str(MODELS.parent))
    try:
        import doctor_models as dm
    finally:
        sys.path.remove(str(MODELS.parent))
    rows = {r["layer"]: r for r in d["layers"]}  # the readout keeps its own weights: same C_W as in the report
    assert float(state["out.weight"].double().pow(2).mean() * 128) == pytest.approx(rows["out"]["cw"], rel=1e-9)
    assert rows["out"]["readout"] and all(r["activation"] == "relu" for r in d["layers"])
    dm.func_relu_bad().load_state_dict(state, strict=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_colon_spec", "--input-shape", "16"], "malformed"),
        (["{bad}:nan_net", "--input-shape", "4"], "NaN or inf"),
        (["{bad}:not_a_module", "--input-shape", "4"], "expected a torch.nn.Module"),
        (["{bad}:broken", "--input-shape", "4"], "RuntimeError: boom"),
        (["{models}:critical_relu", "--input-shape", "3,x"], "comma-separated positive integers"),
        (["{models}:critical_relu", "--input-shape", "0"], "comma-separated positive integers"),
        (["{models}:critical_relu", "--input-shape", "5"], "rejects an input of shape (16, 5)"),
        (["{models}:critical_relu"], "exactly one of --input-shape"),
        (["{models}:critical_relu", "--input-shape", "16", "--n-init", "1"], "--n-init=1"),
        (["{models}:critical_relu", "--input-shape", "16", "--lr", "-2"], "--lr=-2"),
        (["{models}:critical_relu", "--data", "missing.npz"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "bad.py").write_text(BAD_PY)
    args = [a.format(bad=tmp_path / "bad.py", models=MODELS) for a in args]
    with pytest.raises(SystemExit) as e:
        main(["doctor", *args, "--no-progress", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_existing_report_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "doctor.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["doctor", f"{MODELS}:critical_relu", "--input-shape", "16", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "already holds doctor.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--help"])
    assert e.value.code == 0
    assert "--input-shape" in capsys.readouterr().out
