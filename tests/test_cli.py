"""The ``cow`` CLI through its real console-script entry point (a subprocess), including the error cases."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sphericalcow as sc

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"


def cow(*args, cwd=None, timeout=300):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_help_lists_commands():
    for args in (["--help"], []):
        r = cow(*args)
        assert r.returncode == 0
        for cmd in (
            "demo",
            "run",
            "criticality",
            "phase-diagram",
            "kernel",
            "activations",
            "sweep",
            "results",
            "finite-width",
            "ode",
            "hessian",
            "spectra",
        ):
            assert cmd in r.stdout


def test_criticality_json_for_tanh_is_critical_at_cw_one():
    r = cow("criticality", "--activation", "tanh", "--cw", "1.0", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["phase"] == "critical" and d["universality"] == "K*=0"
    assert d["chi_perp"] == pytest.approx(1.0, abs=1e-9)


def test_criticality_without_cw_prints_the_critical_initialisation():
    r = cow("criticality", "--activation", "tanh", "--cb", "0.05", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["critical_init"] is True
    assert d["cw"] == pytest.approx(sc.critical_init("tanh", 0.05)[0], rel=1e-12)
    assert d["chi_perp"] == pytest.approx(1.0, abs=1e-9)
    r = cow("criticality", "--activation", "relu", "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["cw"] == 2.0 and d["cb"] == 0.0 and d["phase"] == "critical" and d["universality"] == "scale-invariant"
    r = cow("criticality", "--activation", "relu")
    assert r.returncode == 0 and "scale-invariant" in r.stdout


def test_phase_diagram_writes_a_png(tmp_path):
    out = tmp_path / "pd.png"
    r = cow("phase-diagram", "--activation", "tanh", "--out", str(out), "--n", "12")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["criticality", "--activation", "nope"], "unknown activation 'nope'"),
        (["criticality", "--activation", "tanh", "--cw", "0"], "--cw=0.0"),
        (["criticality", "--activation", "tanh", "--cw", "-1"], "--cw=-1.0"),
        (["criticality", "--activation", "tanh", "--cw", "nan"], "--cw=nan"),
        (["criticality", "--activation", "softplus"], "no critical initialisation"),
        (["run", "criticality", "--set", "depth=0"], "depth=0"),
        (["run", "criticality", "--set", "width=-5"], "width=-5"),
        (["run", "criticality", "--set", "depth"], "malformed"),
        (["run", "criticality", "--set", "dpeth=3"], "unknown config key 'dpeth'"),
        (["run", "criticality", "--set", 'cases=[{"label": "x", "activation": "bogus"}]'], "bogus"),
        (["run", "nosuchstudy"], "unknown study 'nosuchstudy'"),
        (["phase-diagram", "--activation", "tanh", "--out", "x.txt"], "must end in .png"),
        (["phase-diagram", "--activation", "tanh", "--out", "x.png", "--n", "100000"], "--n=100000"),
        (["phase-diagram", "--activation", "tanh", "--out", "a_dir.png"], "is a folder"),
        (["criticality"], "Missing option '--activation'"),
        (["criticality", "--activation", "tanh", "--cw", "abc"], "Invalid value for '--cw'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["run", "criticality", "--set"], "requires an argument"),
        (["run", "criticality", "--set", "depth=true"], "depth=True"),
        (["run", "criticality", "--set", "depth=2.5"], "depth=2.5"),
        (["run", "criticality", "--set", "cases=5"], "cases=5"),
        (["run", "criticality", "--set", "d_in=1000000000000"], "d_in=1000000000000"),
        (["run", "criticality", "--set", 'cases=[{"activation": "tanh"}]'], "cases.0.label is required"),
        (["run", "criticality", "--set", 'cases=[{"label": "a", "activation": "softplus"}]'], "softplus"),
        (
            ["run", "criticality", "--set", 'cases=[{"label": "a", "activation": "tanh", "cw": 1.0, "cb": null}]'],
            "give cb",
        ),
        (["run", "criticality", "--out", "a_file"], "is a file"),
        (["run", "criticality", "--out", "old_run"], "already holds a run"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args, needle, tmp_path):
    (tmp_path / "a_dir.png").mkdir()
    (tmp_path / "a_file").write_text("keep me")
    (tmp_path / "old_run").mkdir()
    (tmp_path / "old_run" / "report.md").write_text("an earlier run")
    r = cow(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing half-written
    assert (tmp_path / "a_file").read_text() == "keep me"  # nothing stored is lost
    assert (tmp_path / "old_run" / "report.md").read_text() == "an earlier run"
    assert not list(tmp_path.glob("*.tmp.png"))


def test_run_small_study_writes_run_folder(tmp_path):
    out = tmp_path / "run1"
    r = cow(
        "run",
        "criticality",
        "--set",
        "depth=4",
        "--set",
        "width=32",
        "--set",
        "n_seeds=4",
        "--set",
        "phase_grid=6",
        "--out",
        str(out),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    for f in ("config.json", "results.json", "report.md", "report.html", "kernel_vs_depth.png"):
        assert (out / f).exists(), f
    assert json.loads((out / "config.json").read_text())["config"]["depth"] == 4
