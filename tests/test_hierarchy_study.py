"""Study `hierarchy`: deep CNN vs shallow network on the Random Hierarchy Model, against P* ~ n_c m^L."""

import math

import numpy as np
import pytest
import torch

from sphericalcow.data.hierarchy import random_hierarchy_model
from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import run_study
from sphericalcow.studies.base import get_study, make_config
from sphericalcow.studies.hierarchy import _PatchNet, crossing


def test_crossing_interpolates_in_log_p():
    sizes = np.array([100.0, 400.0, 1600.0])
    # halfway in error between 100 and 400 -> geometric midpoint 200
    assert crossing(sizes, np.array([0.5, 0.1, 0.0]), 0.3) == pytest.approx(200.0)
    assert crossing(sizes, np.array([0.05, 0.0, 0.0]), 0.1) == 100.0
    assert math.isnan(crossing(sizes, np.array([0.5, 0.4, 0.3]), 0.1))


def test_patch_net_is_a_conv_with_filter_equal_stride():
    torch.manual_seed(0)
    net = _PatchNet(v=3, s=2, L=2, width=5, n_c=2)
    x = torch.randn(4, 3, 4)
    ref = x
    for lay in net.layers:  # the same weights as Conv1d(kernel=stride=s): weight (out, in, s) from (out, s*in)
        w = lay.weight.reshape(lay.out_features, 2, -1).permute(0, 2, 1)
        ref = torch.relu(torch.nn.functional.conv1d(ref, w, lay.bias, stride=2))
    assert torch.allclose(net(x), net.readout(ref[:, :, 0]), atol=1e-6)


def test_patch_net_can_represent_the_rhm_rules():
    """Sanity of the architecture: it fits all P_max data of a tiny grammar (the hierarchy is representable)."""
    rhm = random_hierarchy_model(v=3, m=3, n_c=3, s=2, L=2, seed=0)
    tr, _ = rhm.split(rhm.p_max, 0, seed=0)
    torch.manual_seed(0)
    net = _PatchNet(3, 2, 2, 32, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(net(tr.x), tr.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(tr.x).argmax(1) == tr.y).all()


def test_small_hierarchy_study_runs_and_verdicts_follow_the_measurements(tmp_path):
    overrides = {"train_sizes": [256, 1024], "n_seeds": 2, "steps": 200, "n_test": 500}
    result, paths = run_study("hierarchy", overrides, out=tmp_path / "run", progress=False)
    assert {"report.md", "report.html", "results.json", "rhm-learning-curves.png"} <= set(paths)
    deep, shallow, info = result.verdicts
    assert info.passed is None
    err = result.data["test_error"]
    assert err["deep CNN"].shape == (2, 2)
    eps_star = 0.1 * (1 - 1 / 4)
    # the shallow verdict is decided by the shallow network's error at the largest P
    sh = err["shallow FCN"][:, -1]
    lo = sh.mean() - 12.706 * sh.std(ddof=1) / math.sqrt(2)  # t_{0.975, 1 dof}
    assert shallow.passed == bool(lo > eps_star)
    pstar = result.data["p_star_per_seed"]["deep CNN"]
    if np.all(np.isfinite(pstar)):
        assert np.all((pstar >= 256) & (pstar <= 1024))
    else:
        assert deep.passed is False
    # more data never hurts the matched CNN on average here
    assert err["deep CNN"][:, 1].mean() <= err["deep CNN"][:, 0].mean()


def test_hierarchy_config_rejects_ambiguous_or_too_small_grammars():
    study = get_study("hierarchy")
    with pytest.raises(SphericalCowError, match="m=5"):
        make_config(study, {"m": 5})
    with pytest.raises(SphericalCowError, match="P_max"):
        make_config(study, {"L": 2})  # P_max = 4 * 4^3 = 256 < 2048 + 1000
    with pytest.raises(SphericalCowError, match="train_sizes"):
        make_config(study, {"train_sizes": [256, 256]})


def test_default_p_star_check_is_tight_and_its_range_is_measured():
    """The allowed band for P* / (n_c m^L) is a factor <= 4 (it fails a P* off by a power of m = 4), and the default
    training sizes reach beyond both ends of [n_c m^L / f, f n_c m^L], so an accepted P* is interpolated."""
    cfg = make_config(get_study("hierarchy"))
    f, p_th = cfg.tolerance_factor, cfg.n_c * cfg.m**cfg.L
    assert f <= 4
    assert min(cfg.train_sizes) < p_th / f and max(cfg.train_sizes) > f * p_th


@pytest.mark.slow
def test_default_hierarchy_study_agrees_with_n_c_m_to_the_l(tmp_path):
    result, _ = run_study("hierarchy", {}, out=tmp_path / "run", progress=False)
    deep, shallow, _ = result.verdicts
    assert deep.passed, deep.detail
    assert "within a factor 4" in deep.claim
    assert shallow.passed, shallow.detail


def test_cli_run_rejects_an_ambiguous_grammar_in_one_line():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    cow = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"
    r = subprocess.run([cow, "run", "hierarchy", "--set", "m=9"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "m=9" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_p_star_scales_as_n_c_m_to_the_l_across_grammars(tmp_path):
    """P* / (n_c m^L) is the same O(1) constant for v = m = n_c = 4 and 6 (n_c m^L grows 5.1x, P_max 25.6x): a band
    of a factor 2, fixed in advance, separates the n_c m^L law from P* ~ P_max."""
    ratios = []
    for v, sizes in ((4, [256, 512, 1024, 2048]), (6, [1024, 2048, 4096, 8192, 16384])):
        over = {"v": v, "m": v, "n_c": v, "train_sizes": sizes, "n_seeds": 2, "n_test": 2000}
        result, _ = run_study("hierarchy", over, out=tmp_path / f"v{v}", progress=False)
        pstar = result.data["p_star_per_seed"]["deep CNN"]
        assert np.all(np.isfinite(pstar))
        ratios.append(float(np.exp(np.mean(np.log(pstar)))) / (v * v**3))
    assert 0.5 < ratios[1] / ratios[0] < 2.0, ratios
