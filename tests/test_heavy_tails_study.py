"""Study `heavy-tails` at a reduced size: it runs end to end, its design is paired, and its verdicts follow the data."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import get_study, make_config, run_study
from sphericalcow.studies.heavy_tails import build_mlp, load_digits_tensors, mp_baseline

SMALL = {
    "width": 64,
    "epochs": 4,
    "record_every": 2,
    "batch_sizes": [32, 256],
    "lrs": [0.02, 0.3],
    "n_seeds": 3,
    "n_baseline": 12,
}


def test_small_heavy_tails_study(tmp_path):
    result, paths = run_study("heavy-tails", SMALL, out=tmp_path / "run", progress=False)
    assert {"report.md", "report.html", "results.json", "alpha-over-training.png", "esd.png"} <= set(paths)
    data = result.data
    assert data["record_epochs"] == [0, 2, 4]
    conds = data["conditions"]
    assert len(conds) == 4
    # paired design: every condition of a seed starts from the same weights, so the spectra at epoch 0 coincide
    for name in ("0", "2"):
        first = conds[0]["alpha"][name][:, 0]
        for c in conds[1:]:
            np.testing.assert_array_equal(c["alpha"][name][:, 0], first)
        # He initialisation: sigma^2 = 2 / fan_in within a few standard errors
        fan_in = 64
        n = m = 64
        se = 2 / fan_in * np.sqrt(2 / (n * m))
        assert np.all(np.abs(data["sigma2_init"][name] - 2 / fan_in) < 5 * se)
    for c in conds:
        assert np.all(c["test_accuracy"] > 0.25)  # ten classes: chance is 0.1 (24 steps at B=256, lr=0.02: ~0.4)
        assert np.all(c["spikes"]["2"][:, 0] == 0)
    verdicts = {v.claim: v for v in result.verdicts}
    assert len(verdicts) == 7
    init = next(v for c, v in verdicts.items() if c.startswith("At initialisation"))
    assert init.passed is True
    # verdicts are decided by the recorded numbers
    hot = next(c for c in conds if (c["batch"], c["lr"]) == (32, 0.3))
    cold = next(c for c in conds if (c["batch"], c["lr"]) == (256, 0.02))
    spikes_v = next(v for c, v in verdicts.items() if "out of the MP bulk" in c)
    assert spikes_v.passed == bool(np.all(hot["spikes"]["2"][:, -1] > 0))
    base = data["baseline_alpha"]["2"]
    below_v = next(v for c, v in verdicts.items() if "falls below the random-init MP baseline" in c)
    assert below_v.passed == bool(np.all(hot["alpha"]["2"][:, -1] < np.quantile(base, 0.025)))
    trend_v = next(v for c, v in verdicts.items() if c.startswith("Larger lr/B"))
    p = mannwhitneyu(hot["alpha"]["2"][:, -1], cold["alpha"]["2"][:, -1], alternative="less", method="exact").pvalue
    assert trend_v.passed == bool(p <= 0.05)
    # each factor separately: paired over seeds and the other factor's levels, exact Wilcoxon signed-rank
    from scipy.stats import wilcoxon

    by = {(c["batch"], c["lr"]): c["alpha"]["2"][:, -1] for c in conds}
    d_lr = np.concatenate([by[(b, 0.3)] - by[(b, 0.02)] for b in (32, 256)])
    d_b = np.concatenate([by[(32, lr)] - by[(256, lr)] for lr in (0.02, 0.3)])
    for key, d in (("larger learning rate", d_lr), ("smaller batch", d_b)):
        v = next(v for c, v in verdicts.items() if key in c)
        assert v.passed == bool(wilcoxon(d, alternative="less", method="exact").pvalue <= 0.05)
    assert any(v.passed is None for v in result.verdicts)  # the scale check is informational
    rows = result.tables[0].rows
    assert len(rows) == 8 and {r["layer"] for r in rows} == {"0", "2"}


def test_mp_baseline_is_the_alpha_of_gaussian_matrices():
    a = mp_baseline(128, 64, 0.5, 10, seed=3)
    assert a.shape == (10,) and np.all(a > 1)
    b = mp_baseline(128, 64, 5.0, 10, seed=3)  # alpha does not depend on the scale of the matrix
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_building_blocks():
    x_tr, y_tr, x_te, _ = load_digits_tensors(0.8, seed=0)
    assert x_tr.shape == (1438, 64) and x_te.shape == (359, 64) and set(y_tr.tolist()) == set(range(10))
    net = build_mlp(64, 50, 2, 10, seed=1)
    assert [tuple(p.shape) for p in net.parameters()] == [(50, 64), (50,), (50, 50), (50,), (10, 50), (10,)]
    again = build_mlp(64, 50, 2, 10, seed=1)
    assert all(
        np.array_equal(p.detach(), q.detach()) for p, q in zip(net.parameters(), again.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"lrs": [0.1, 0.1]}, "must not repeat"),
        ({"batch_sizes": [0]}, "batch size 0"),
        ({"lrs": [-1.0]}, "learning rate -1.0"),
        ({"n_seeds": 1}, "n_seeds=1"),
        ({"widht": 3}, "unknown config key 'widht'"),
    ],
)
def test_bad_config(overrides, needle):
    with pytest.raises(SphericalCowError, match=needle):
        make_config(get_study("heavy-tails"), overrides)


@pytest.mark.slow
def test_default_heavy_tails_study(tmp_path):
    """The default run: initialisation is MP and the largest lr/B creates outliers (the claims that must hold at any
    scale); the others are reported as measured."""
    result, _ = run_study("heavy-tails", None, out=tmp_path / "run", progress=False)
    graded = [v for v in result.verdicts if v.passed is not None]
    assert graded[0].passed and graded[1].passed
