"""Study `infinite-width` at a reduced size: it runs end to end, and its verdicts are decided by the measurements."""

import numpy as np

from sphericalcow.studies import run_study


def test_small_infinite_width_study(tmp_path):
    overrides = {
        "activations": ["relu"], "widths": [32, 64, 128, 256], "n_seeds": 4, "n_inputs": 6,
        "train_widths": [32, 128, 512], "n_ensemble": 4, "times": [0, 10, 40],
    }
    result, paths = run_study("infinite-width", overrides, out=tmp_path / "run", progress=False)
    assert {"report.md", "report.html", "results.json", "kernel-errors.png"} <= set(paths)
    claims = {v.claim: v for v in result.verdicts}
    assert len(claims) == 4
    rows = {(r["kernel"]): r for r in result.tables[0].rows}
    # the exponents are measured, not asserted: the verdict follows the CI
    for kernel in ("NTK", "NNGP"):
        r = rows[kernel]
        verdict = claims[f"relu: empirical {kernel} -> analytic {kernel} as width^(-1/2)"]
        assert verdict.passed == (r["ci_lo"] <= -0.5 <= r["ci_hi"] and (r["ci_hi"] - r["ci_lo"]) / 2 <= 0.25)
        assert -1.0 < r["exponent"] < 0.0  # kernels of wider networks are closer to the analytic ones
    # at t = 0 every network's output equals its own linearised prediction (no training yet)
    dev = result.data["training"]["relu"]["512"]["deviation"]
    assert np.all(dev[:, 0] == 0)
    assert np.all(dev[:, -1] > 0)
