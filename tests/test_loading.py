"""Loading user models, checkpoints (weights_only) and data files for the CLI."""

import numpy as np
import pytest
import torch

from sphericalcow.errors import SphericalCowError
from sphericalcow.loading import load_checkpoint, load_data, load_factory


def test_all(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch\ndef make():\n    return torch.nn.Linear(3,2)\ndef bad():\n    return 3\n")
    m = load_factory(f"{f}:make")
    assert isinstance(m, torch.nn.Linear)
    for spec, msg in [
        (f"{f}:bad", "expected a torch.nn.Module"),
        (f"{f}:nope", "no callable"),
        ("nocolon", "malformed"),
        ("no_such_mod_xyz:f", "cannot import"),
        (str(tmp_path / "x.py") + ":f", "does not exist"),
    ]:
        with pytest.raises(SphericalCowError, match=msg):
            load_factory(spec)
    assert isinstance(load_factory("torch.nn:Identity"), torch.nn.Identity)
    torch.save(m.state_dict(), tmp_path / "c.pt")
    sd = load_checkpoint(tmp_path / "c.pt")
    assert set(sd) == {"weight", "bias"}
    torch.save({"state_dict": m.state_dict(), "epoch": 3}, tmp_path / "c2.pt")
    assert set(load_checkpoint(tmp_path / "c2.pt")) == {"weight", "bias"}
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3)), y=np.arange(4))
    x, y = load_data(tmp_path / "d.npz")
    assert x.dtype == torch.float64 and y.dtype == torch.long
    np.savez(tmp_path / "e.npz", x=np.array([[np.nan]]))
    with pytest.raises(SphericalCowError, match="NaN"):
        load_data(tmp_path / "e.npz")
    with pytest.raises(SphericalCowError, match="allowed"):
        load_data(f)


def test_non_finite_checkpoints_and_unsafe_data_files_are_one_line(tmp_path):
    sd = {"w": torch.tensor([1.0, float("nan")]), "step": torch.tensor(3)}
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(SphericalCowError, match="'w' holds NaN or inf"):
        load_checkpoint(tmp_path / "nan.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(SphericalCowError) as e:
        load_data(tmp_path / "evil.pt")
    msg = str(e.value).replace(str(tmp_path / "evil.pt"), "PATH")
    assert "weights_only=True" in msg and "\n" not in msg and len(msg) < 160, msg
