"""`cow kernel` through the real console script: the saved kernels equal the library's, and bad input is one line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sphericalcow as sc

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"


def cow(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


@pytest.fixture
def arrays(tmp_path):
    g = np.random.default_rng(3)
    x, x2 = g.standard_normal((12, 5)), g.standard_normal((7, 5))
    paths = {}
    for name, arr in {"x": x, "x2": x2, "nan": np.where(np.eye(12, 5) > 0, np.nan, x), "three": np.zeros((2, 3, 4)),
                      "feat": g.standard_normal((4, 6)), "text": np.array(["a", "b"])}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    paths["empty"] = tmp_path / "empty.npy"
    paths["empty"].write_bytes(b"")
    paths["badtoml"] = tmp_path / "bad.toml"
    paths["badtoml"].write_text("mlp = 3\n")
    paths["latin"] = tmp_path / "latin.toml"
    paths["latin"].write_bytes(b"depth = 2\nactivation = '\xe9'\n")
    return x, x2, paths


def test_kernel_npz_matches_the_library(arrays, tmp_path):
    x, x2, p = arrays
    out = tmp_path / "k.npz"
    r = cow("kernel", "--x", str(p["x"]), "--x2", str(p["x2"]), "--depth", "3", "--activation", "tanh",
            "--cb", "0.1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    saved = np.load(out)
    arch = sc.MLP(d_in=5, width=1, depth=3, activation="tanh", cb=0.1)
    k = sc.kernels(arch, x, x2)
    np.testing.assert_array_equal(saved["nngp"], k.nngp.numpy())
    np.testing.assert_array_equal(saved["ntk"], k.ntk.numpy())
    # not overwritten a second time: one-line error, file untouched
    before = out.read_bytes()
    r = cow("kernel", "--x", str(p["x"]), "--depth", "3", "--activation", "tanh", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == before


def test_kernel_from_toml_json_summary_and_float32(arrays, tmp_path):
    x, _, p = arrays
    toml = tmp_path / "arch.toml"
    toml.write_text('depth = 2\nwidth = 32\nactivation = "relu"\ncw = 2.0\nparametrization = "standard"\n')
    out = tmp_path / "k32.npz"
    r = cow("kernel", "--x", str(p["x"]), "--arch", str(toml), "--get", "ntk", "--dtype", "float32",
            "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["shape"] == [12, 12] and set(d["kernels"]) == {"ntk"}
    saved = np.load(out)
    assert saved["ntk"].dtype == np.float32 and "nngp" not in saved.files
    ref = sc.ntk(sc.MLP(d_in=5, width=32, depth=2, activation="relu", cw=2.0, parametrization="standard"), x)
    np.testing.assert_array_equal(saved["ntk"], ref.to(torch.float32).numpy())
    assert d["kernels"]["ntk"]["mean_diagonal"] == pytest.approx(float(np.diagonal(ref.numpy()).mean()), rel=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "{nan}", "--depth", "2", "--activation", "relu", "--json"], "NaN"),
        (["--x", "{three}", "--depth", "2", "--activation", "relu", "--json"], "(2, 3, 4)"),
        (["--x", "{text}", "--depth", "2", "--activation", "relu", "--json"], "numeric"),
        (["--x", "{x}", "--x2", "{feat}", "--depth", "2", "--activation", "relu", "--json"], "6 features"),
        (["--x", "{missing}", "--depth", "2", "--activation", "relu", "--json"], "does not exist"),
        (["--x", "{x}", "--depth", "2", "--activation", "relu", "--get", "nngp,kernel", "--json"], "'kernel'"),
        (["--x", "{x}", "--depth", "0", "--activation", "relu", "--json"], "depth"),
        (["--x", "{x}", "--depth", "2", "--activation", "nope", "--json"], "nope"),
        (["--x", "{x}", "--depth", "2", "--activation", "relu", "--dtype", "int8", "--json"], "int8"),
        (["--x", "{x}", "--depth", "2", "--activation", "tanh", "--method", "closed", "--json"], "closed"),
        (["--x", "{x}", "--depth", "2", "--activation", "relu"], "--out"),
        (["--x", "{x}", "--depth", "2", "--activation", "relu", "--out", "k.txt"], ".npz"),
        (["--x", "{x}", "--depth", "2", "--activation", "relu", "--parametrization", "standard", "--json"], "--width"),
        (["--x", "{x}", "--depth", "2000", "--activation", "relu", "--cw", "3.0", "--json"], "overflows"),
        (["--x", "{empty}", "--depth", "2", "--activation", "relu", "--json"], "not a readable"),
        (["--x", "{x}", "--arch", "{badtoml}", "--json"], "must be a table"),
        (["--x", "{x}", "--arch", "{latin}", "--json"], "not valid TOML"),
        (["--x", "{x}", "--depth", "5", "--activation", "relu", "--cw", "1e10", "--dtype", "float32", "--json"],
         "beyond float32"),
    ],
)
def test_kernel_bad_input_is_one_line(arrays, tmp_path, args, message):
    _, _, p = arrays
    p = {**p, "missing": tmp_path / "missing.npy"}
    r = cow("kernel", *[a.format(**p) for a in args], cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.npz")) == []
