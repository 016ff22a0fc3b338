"""``cow advise`` through the real console-script entry point (a subprocess), including the error cases."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import sphericalcow as sc
from sphericalcow.advise import n_params

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"


def cow(*args, cwd=None, timeout=300):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_advise_task_json():
    r = cow("advise", "--task", "teacher", "--budget", "4000", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["task"] == "teacher" and d["activation"] == "tanh" and d["verification"] is None
    assert d["n_params"] == n_params(d["d_in"], d["width"], d["depth"], d["d_out"]) <= 4000
    assert d["nu"] * d["depth"] / d["width"] <= d["nu_r_max"]
    assert sc.criticality(d["activation"], d["cw"], d["cb"]).phase == "critical"
    assert d["base_lr"] < d["lr_max"] == 2 / d["lambda_max"]
    assert {i["field"] for i in d["items"]} >= {"activation", "initialisation", "depth x width", "learning rate"}


def test_advise_data_file_with_verify_writes_a_report(tmp_path):
    g = np.random.default_rng(0)
    x = g.normal(size=(120, 5))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "run"
    r = cow(
        "advise",
        "--data",
        str(tmp_path / "d.npz"),
        "--budget",
        "1500",
        "--verify",
        "--seeds",
        "2",
        "--steps",
        "25",
        "--out",
        str(out),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    for word in ("initialisation", "depth x width", "learning rate", "Roberts & Yaida", "weight_std", "verify: "):
        assert word in r.stdout
    d = json.loads((out / "results.json").read_text())["data"]
    assert d["task"] == "data" and d["loss"] == "mse" and d["d_in"] == 5 and d["n_train"] == 96
    v = d["verification"]
    assert v["outcome"] in ("best", "tied", "beaten") and v["rows"][0]["variant"] == "recommended"
    assert v["n_seeds"] == 2 and v["steps"] == 25
    for f in ("report.md", "report.html", "results.json", "config.json", "verify.png"):
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "the recommendation" in md and "depth x width" in md and "weight_lr_standard" in md
    print(f"\n[cow advise --verify on a small data file] {v['outcome']}: {v['message']}")


def test_advise_pt_labels_use_cross_entropy(tmp_path):
    x = torch.randn(80, 4, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x, "y": (x[:, 0] > 0).long()}, tmp_path / "d.pt")
    r = cow("advise", "--data", str(tmp_path / "d.pt"), "--budget", "800", "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["loss"] == "cross_entropy" and d["d_out"] == 2 and d["n_params"] <= 800


def test_advise_errors_are_one_line(tmp_path):
    np.savez(tmp_path / "xonly.npz", x=np.zeros((20, 3)))
    cases = [
        (["--task", "nope", "--budget", "1000"], "task='nope' is not known"),
        (["--task", "teacher", "--budget", "20"], "too small"),
        (["--data", str(tmp_path / "missing.npz"), "--budget", "1000"], "does not exist"),
        (["--data", str(tmp_path / "xonly.npz"), "--budget", "1000"], "no targets"),
    ]
    for args, msg in cases:
        r = cow("advise", *args, "--no-progress")
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stdout == ""
