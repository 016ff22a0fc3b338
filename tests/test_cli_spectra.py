"""``cow spectra`` through the real console-script entry point: factories, checkpoints (weights_only), outputs and
one-line errors."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sphericalcow.loading import load_factory
from sphericalcow.measure.weight_spectra import weight_spectra

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"

NET = """
import torch

def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(32 * 6 * 6, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )

def other():
    return torch.nn.Linear(5, 5)
"""


def cow(*args, cwd=None):
    env = dict(os.environ, COLUMNS="250")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


def cow_main(*args):
    """``cli.main`` in-process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from sphericalcow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def netfile(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(NET)
    return f


class RunsCode:
    """Unpickling this runs code: it writes the file named by ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_factory_json_matches_the_library(netfile):
    r = cow("spectra", f"{netfile}:make", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [x["layer"] for x in d["layers"]] == ["0", "3", "5"]
    ref = weight_spectra(load_factory(f"{netfile}:make")).records()
    for got, want in zip(d["layers"], ref, strict=True):
        for key in ("alpha", "xmin", "mp_sigma2", "stable_rank", "spectral_norm"):
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
        assert got["n_spikes"] == want["n_spikes"]
    assert d["conv"] == "slices" and d["layers"][0]["n_matrices"] == 9


def test_bootstrap_alpha_se_matches_the_library(netfile):
    code, stdout, err = cow_main("spectra", f"{netfile}:make", "--json", "--alpha-se", "bootstrap", "--n-boot", "30")
    assert code == 0, err
    got = json.loads(stdout)["layers"]
    ref = weight_spectra(load_factory(f"{netfile}:make"), alpha_se="bootstrap", n_boot=30, seed=0).records()
    for g, w in zip(got, ref, strict=True):
        assert g["alpha_se_method"] == "bootstrap"
        assert g["alpha_se"] == pytest.approx(w["alpha_se"], rel=1e-12)


def test_checkpoint_writes_csv_and_png_and_never_overwrites(netfile, tmp_path):
    model = load_factory(f"{netfile}:make")
    ckpt = tmp_path / "ckpt.pt"
    # non-tensor payload next to the weights: fine for weights_only
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, ckpt)
    out = tmp_path / "out"
    r = cow("spectra", str(ckpt), "--out", str(out), "--conv", "reshape", "--layers", "3,5")
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout
    rows = list(csv.DictReader((out / "spectra.csv").open()))
    assert [row["layer"] for row in rows] == ["3", "5"]
    ref = weight_spectra(model, ["3", "5"], conv="reshape").records()
    assert float(rows[0]["alpha"]) == pytest.approx(ref[0]["alpha"], rel=1e-9)
    assert (out / "spectra.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "spectra.csv").read_bytes()
    # the rest in-process through cli.main (the console script's function): each subprocess costs seconds of imports
    code, stdout, err = cow_main("spectra", str(ckpt), "--out", str(out))
    assert code == 2 and "already holds spectra.csv" in err
    assert (out / "spectra.csv").read_bytes() == before
    # the same checkpoint inside its architecture: layers recognised by module type, same numbers
    code, stdout, err = cow_main("spectra", str(ckpt), "--factory", f"{netfile}:make", "--json", "--conv", "reshape")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["layers"][1]["alpha"] == pytest.approx(ref[0]["alpha"], rel=1e-12)
    code, _, err = cow_main("spectra", str(ckpt), "--factory", f"{netfile}:other")
    assert code == 2 and "does not fit the model" in err and "Traceback" not in err


def test_a_checkpoint_whose_unpickling_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.randn(20, 20), "payload": RunsCode(str(marker))}, evil)
    r = cow("spectra", str(evil))
    assert r.returncode == 2
    assert "weights_only=True" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    # the file really is malicious: an unsafe load would have run its code
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["spectra", "NET:make", "--layers", "nope"], "unknown layer 'nope'"),
        (["spectra", "NET:make", "--conv", "fft"], "--conv='fft'"),
        (["spectra", "NET:make", "--level", "1.5"], "--level=1.5"),
        (["spectra", "NET:nosuch"], "no callable 'nosuch'"),
        (["spectra", "missing.pt"], "neither an existing checkpoint"),
        (["spectra", "NET:make", "--factory", "NET:make"], "--factory is for checkpoints"),
        (["spectra", "torch.nn:ReLU"], "no dense or convolutional"),
        (["spectra", "NET:make", "--alpha-se", "jackknife"], "--alpha-se='jackknife'"),
        (["spectra", "NET:make", "--alpha-se", "bootstrap", "--n-boot", "3"], "n_boot"),
    ],
)
def test_errors_are_one_line(args, needle, netfile, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cow_main(*(a.replace("NET", str(netfile)) for a in args))
    assert code == 2
    assert needle in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_help_lists_spectra():
    code, stdout, _ = cow_main("--help")
    assert code == 0 and "spectra" in stdout
    code, stdout, _ = cow_main("spectra", "--help")
    assert code == 0 and "--factory" in stdout and "--layers" in stdout
