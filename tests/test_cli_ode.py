"""`cow ode` through the real console-script entry point (a subprocess), and the same ``main`` in-process for the
remaining cases (every subprocess pays the package import)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sphericalcow.cli import main
from sphericalcow.cli_ode import ode_summary
from sphericalcow.theory.teacher_student import integrate_ode, ode_rhs, random_order_parameters, symmetric_plateau

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"


def cow(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def cow_inprocess(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_ode_json_matches_the_library_and_the_plateau():
    r = cow(
        "ode", "--K", "2", "--M", "2", "--lr", "0.5", "--steps", "20000", "--N", "500", "--train", "first", "--json"
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["t_max"] == 40.0 and d["train"] == "first"
    Q0, R0, T = random_order_parameters(2, 2, seed=0, init_std=0.3)
    c = integrate_ode(Q0, R0, T, np.ones(2), np.ones(2), lr=0.5, t_max=40.0, train="first", n_points=201)
    assert d["curve"]["eps_g"] == pytest.approx(list(c.eps_g), rel=1e-9)
    assert d["curve"]["steps"][-1] == 20000
    p = symmetric_plateau(2, 0.5)
    assert d["plateau"]["eps_g"] == pytest.approx(p.eps_g, rel=1e-12)
    assert d["plateau"]["length_t"] > 0


def test_ode_table_csv_and_noise_asymptote(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "curve.csv"
    code, stdout, _ = cow_inprocess(
        capsys,
        "ode",
        "--lr",
        "0.5",
        "--steps",
        "5000",
        "--N",
        "100",
        "--noise",
        "0.3",
        "--train",
        "first",
        "--out",
        str(out),
    )
    assert code == 0
    assert "eps_g" in stdout and "symmetric plateau" in stdout and "asymptotic" in stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 201 and {"t", "steps", "eps_g", "Q00", "R01", "v1"} <= set(rows[0])
    code, _, err = cow_inprocess(capsys, "ode", "--steps", "5000", "--out", str(out))
    assert code == 2 and "already exists" in err


def test_ode_error_through_the_console_script():
    r = cow("ode", "--lr", "-1")
    assert r.returncode == 2 and "--lr=-1.0" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--K", "0"], "--K=0"),
        (["--train", "second"], "--train='second'"),
        (["--steps", "0"], "--steps=0"),
        (["--noise", "nan"], "--noise=nan"),
        (["--out", "x.txt"], "must end in .csv"),
        (["--seed", "-1"], "--seed=-1"),
        (["--steps", "100000000000", "--N", "1"], "at most 1e+10"),
        (["--steps", "100000000", "--N", "1"], "t_max = steps / N <= 10000"),
    ],
)
def test_ode_errors_are_one_line(args, needle, capsys):
    code, _, err = cow_inprocess(capsys, "ode", *args)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ode_seed_is_validated_through_the_console_script():
    r = cow("ode", "--seed", "-1")
    assert r.returncode == 2 and "--seed=-1" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_ode_plateau_uses_the_second_layer_rate():
    """--lr-v 0 with --train both never moves v: the plateau is the first-layer one, not the eta_v = eta one."""
    common = dict(K=2, M=2, lr=1.0, steps=2000, N=100, train="both")
    p0 = ode_summary(lr_v=0.0, **common)["plateau"]
    assert p0["eps_g"] == pytest.approx(symmetric_plateau(2, 1.0, train="first").eps_g, rel=1e-12)
    assert p0["v"] == 1.0
    p1 = ode_summary(lr_v=None, **common)["plateau"]
    assert p1["eps_g"] == pytest.approx(symmetric_plateau(2, 1.0, train="both").eps_g, rel=1e-12)
    assert abs(p0["eps_g"] - p1["eps_g"]) > 1e-3
    # eta_v != eta, eta_v > 0: same fixed point (dv/dt is eta_v times a function of Q, R, v), and it is one of the
    # full ODE at eta_v
    p3 = ode_summary(lr_v=0.3, **common)["plateau"]
    assert p3["eps_g"] == pytest.approx(p1["eps_g"], rel=1e-12)
    Q, R, T, v, vs = symmetric_plateau(2, 1.0, train="both").order_parameters()
    dQ, dR, dv = ode_rhs(Q, R, T, v, vs, lr=1.0, lr_v=0.3, train="both")
    assert max(np.abs(dQ).max(), np.abs(dR).max(), np.abs(dv).max()) < 1e-10


def test_ode_is_listed_in_help(capsys):
    code, stdout, _ = cow_inprocess(capsys, "--help")
    assert code == 0 and "ode" in stdout
