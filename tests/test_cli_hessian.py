"""``cow hessian`` through the console script (subprocess) and ``cli.main`` (in-process, for the error cases):
eigenvalues against the exact Hessian, checkpoints loaded without code execution, output files, one-line errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sphericalcow.cli import main

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"

MODEL_PY = """
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
"""


def cow(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    return subprocess.run([COW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hess")
    (d / "mymodel.py").write_text(MODEL_PY)
    r = np.random.default_rng(0)
    x = r.normal(size=(40, 5))
    np.savez(d / "cls.npz", x=x, y=r.integers(0, 3, 40))
    np.savez(d / "reg.npz", x=x, y=r.normal(size=(40, 3)))
    np.save(d / "xonly.npy", x)
    torch.manual_seed(1)
    other = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
    torch.save(other.state_dict(), d / "ckpt.pt")
    return d


def exact_eigs(state, x, y, loss):
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    params = {n: p.detach() for n, p in model.named_parameters()}
    names, sizes = list(params), [p.numel() for p in params.values()]

    def L(flat):
        parts = {n: t.reshape(params[n].shape) for n, t in zip(names, torch.split(flat, sizes), strict=True)}
        return loss(torch.func.functional_call(model, parts, (x,)), y)

    H = torch.func.hessian(L)(torch.cat([p.reshape(-1) for p in params.values()]))
    return torch.linalg.eigvalsh(H).numpy()


def test_json_eigenvalues_trace_and_density_match_the_exact_hessian(files):
    r = cow(
        "hessian", f"{files / 'mymodel.py'}:net", "--data", str(files / "cls.npz"), "--top", "4", "--bottom", "2",
        "--trace", "--density", "--dtype", "float64", "--json", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    z = np.load(files / "cls.npz")
    torch.manual_seed(0)
    state = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).state_dict()
    ev = exact_eigs(state, torch.tensor(z["x"]), torch.tensor(z["y"]), nn.functional.cross_entropy)
    assert d["loss_fn"] == "cross_entropy" and d["n_params"] == 5 * 12 + 12 + 12 * 3 + 3 == len(ev)
    scale = np.abs(ev).max()
    np.testing.assert_allclose(d["eigen"]["top"], ev[::-1][:4], atol=1e-8 * scale)
    np.testing.assert_allclose(d["eigen"]["bottom"], ev[:2], atol=1e-8 * scale)
    assert d["eigen"]["converged"]
    assert d["trace"]["lo"] <= ev.sum() <= d["trace"]["hi"]
    si = d["density"]["saddle_index"]
    thr = 1e-3 * scale  # the documented default: 0.1% of the spectral radius counts as flat
    n_neg = int(np.sum(ev < -thr))
    assert si["lo"] - 3 <= n_neg <= si["hi"] + 3  # SLQ with 80 < n steps blurs eigenvalues near the threshold
    assert np.trapezoid(d["density"]["density"], d["density"]["grid"]) == pytest.approx(1.0, abs=1e-6)


def test_checkpoint_params_batches_and_out_folder(files, tmp_path, capsys):
    out = tmp_path / "res"
    args = [
        "hessian", f"{files / 'mymodel.py'}:net", "--data", str(files / "reg.npz"), "--checkpoint",
        str(files / "ckpt.pt"), "--params", "^2\\.", "--top", "3", "--dtype", "float64", "--batch-size", "7",
        "--density", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    d = json.loads((out / "hessian.json").read_text())
    assert (out / "density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["params"] == ["2.weight", "2.bias"] and d["n_params"] == 39 and d["loss_fn"] == "mse"
    # last-layer Hessian of MSE with the checkpoint's weights: (2/(N*3)) kron(I_3, [h 1]^T [h 1]) (closed form)
    state = torch.load(files / "ckpt.pt", weights_only=True)
    z = np.load(files / "reg.npz")
    x = torch.tensor(z["x"])
    h = torch.tanh(x @ state["0.weight"].double().T + state["0.bias"].double())
    h1 = torch.cat([h, torch.ones(40, 1, dtype=torch.float64)], 1)
    ev = np.sort(np.linalg.eigvalsh((h1.T @ h1 * 2 / (40 * 3)).numpy()))[::-1]
    np.testing.assert_allclose(d["eigen"]["top"], [ev[0]] * 3, rtol=1e-9)  # each eigenvalue thrice (3 outputs)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    model.load_state_dict({k: v.double() for k, v in state.items()})
    with torch.no_grad():
        assert d["loss"] == pytest.approx(float(nn.functional.mse_loss(model(x), torch.tensor(z["y"]))), rel=1e-12)
    # the folder is not overwritten
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "already holds hessian.json" in capsys.readouterr().err


class Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_checkpoints_never_execute_code(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as e:
        main(["hessian", f"{files / 'mymodel.py'}:net", "--data", str(files / "cls.npz"), "--checkpoint", "evil.pt"])
    assert e.value.code == 2
    assert not (tmp_path / "PWNED").exists()
    err = capsys.readouterr().err
    assert "weights_only=True" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "hinge"], "--loss='hinge'"),
        (["--mode", "test"], "--mode='test'"),
        (["--top", "0"], "nothing to compute"),
        (["--top", "500"], "more than the 111 selected parameters"),
        (["--params", "nope"], "--params 'nope' matches no parameter"),
        (["--loss", "cross_entropy", "--data", "REG"], "integer class labels"),
        (["--data", "XONLY"], "has no targets 'y'"),
        (["--data", "missing.npz"], "does not exist"),
        (["--checkpoint", "CLS"], "cannot be read with weights_only=True"),
        (["--dtype", "float16"], "--dtype='float16'"),
    ],
)
def test_bad_input_is_one_line_exit_2(files, capsys, extra, message):
    subs = {"REG": str(files / "reg.npz"), "XONLY": str(files / "xonly.npy"), "CLS": str(files / "cls.npz")}
    extra = [subs.get(a, a) for a in extra]
    base = ["hessian", f"{files / 'mymodel.py'}:net", "--no-progress"]
    if "--data" not in extra:
        base += ["--data", str(files / "cls.npz")]
    with pytest.raises(SystemExit) as e:
        main(base + extra)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_model_spec_and_help(files, capsys):
    with pytest.raises(SystemExit) as e:
        main(["hessian", "no_such_module_xyz:net", "--data", str(files / "cls.npz")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "no_such_module_xyz" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["hessian", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for opt in ("--data", "--checkpoint", "--params", "--top", "--bottom", "--trace", "--density", "--json"):
        assert opt in out


def test_non_finite_model_is_a_one_line_error(files, tmp_path, capsys):
    # weights x 1e25 overflow the float32 MSE loss to inf; a NaN weight is refused when the checkpoint loads
    torch.manual_seed(0)
    big = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
    with torch.no_grad():
        for p in big.parameters():
            p.mul_(1e25)
    torch.save(big.state_dict(), tmp_path / "big.pt")
    nan = {k: v.clone() for k, v in big.state_dict().items()}
    nan["0.weight"][0, 0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    for ckpt, msg in (("big.pt", "not finite"), ("nan.pt", "NaN or inf")):
        with pytest.raises(SystemExit) as e:
            main(
                [
                    "hessian",
                    f"{files / 'mymodel.py'}:net",
                    "--data",
                    str(files / "reg.npz"),
                    "--checkpoint",
                    str(tmp_path / ckpt),
                    "--top",
                    "2",
                    "--no-progress",
                ]
            )
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and err.count("\n") == 1, err
