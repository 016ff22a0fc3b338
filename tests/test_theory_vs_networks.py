"""Statistical tests: the infinite-width theory against Monte Carlo over real random networks.

Rule (as in the criticality study): the 1/width extrapolation 2 m(n) - m(n/2) of each layer's K and rho must lie
within the Bonferroni-corrected Student-t threshold of the theory at every layer (familywise 95%), with fixed seeds.
The last test shows the same rule rejects a theory that is wrong by 15% in C_W, so passing is not automatic.
"""

import numpy as np
import pytest
import torch

import sphericalcow as sc
from sphericalcow.studies import criticality as study
from sphericalcow.studies.base import get_study, make_config


def _small(**kw):
    base = {"depth": 8, "width": 256, "n_seeds": 64, "phase_grid": 5}
    return make_config(get_study("criticality"), base | kw)


def test_every_default_case_agrees_with_theory_at_small_size():
    result = study.run(_small(), progress=False)
    failed = [v.claim + " | " + v.detail for v in result.verdicts if not v.passed]
    assert not failed, failed
    assert len(result.verdicts) == len(study.DEFAULT_CASES)


def test_a_wrong_theory_is_rejected(monkeypatch):
    """Same networks, theory computed with C_W 15% too large: every case must be flagged."""
    real = study.kernel_profile

    def wrong(arch, x):
        return real(sc.MLP.from_dict(arch.to_dict() | {"cw": arch.cw * 1.15}), x)

    monkeypatch.setattr(study, "kernel_profile", wrong)
    cases = [
        c for c in study.DEFAULT_CASES if c.label in ("ReLU critical", "tanh chaotic", "GELU critical (quadrature)")
    ]
    result = study.run(_small(cases=[c.model_dump() for c in cases]), progress=False)
    assert [v.passed for v in result.verdicts] == [False] * len(cases)


@pytest.mark.parametrize(
    ("kw", "n_seeds"),
    [
        ({"activation": "relu", "cw": 0.4, "cb": 0.05, "residual": True}, 64),
        ({"activation": "tanh", "cw": 0.3, "cb": 0.02, "residual": True}, 64),
        ({"activation": "tanh", "cw": 1.5, "cb": 0.1, "parametrization": "standard"}, 64),
        ({"activation": "silu", "cw": 1.9, "cb": 0.1}, 64),
    ],
)
def test_residual_standard_and_quadrature_networks_follow_their_recursions(kw, n_seeds):
    torch.manual_seed(0)
    L = 6
    x = study.make_inputs(32, 1.0, 0.3, seed=1)
    theory = sc.kernel_profile(sc.MLP(32, 256, L, **kw), x.numpy())
    K_th, rho_th = theory.variance(0)[:L], theory.correlation()[:L]
    meas = []
    for wi, width in enumerate((256, 128)):
        arch = sc.MLP(32, width, L, **kw)
        names = arch.layer_names()[:-1]
        seeds = [10_000 * (wi + 1) + s for s in range(n_seeds)]
        probe = sc.probe_forward(lambda s, a=arch: a.build(seed=s), x.float(), names, seeds)
        meas.append(study.Measured.from_probe(width, probe, names))
    z_max = study.familywise_z(2 * L, 0.95, n_seeds - 1)
    K_ext, K_se = study.richardson(*meas, "K")
    R_ext, R_se = study.richardson(*meas, "rho")
    zK = np.abs(K_ext - K_th) / K_se
    zR = np.abs(R_ext - rho_th) / R_se
    assert zK.max() <= z_max and zR.max() <= z_max, (zK.round(2), zR.round(2), z_max)


@pytest.mark.slow
def test_demo_defaults_and_a_larger_network_agree():
    for kw in ({}, {"depth": 60, "width": 512, "n_seeds": 96}):
        result = study.run(make_config(get_study("criticality"), kw), progress=False)
        failed = [v.claim + " | " + v.detail for v in result.verdicts if not v.passed]
        assert not failed, failed


def test_richardson_removes_an_exact_one_over_width_term_for_any_pair_of_widths():
    """m(n) = m_inf + c/n exactly -> the extrapolation returns m_inf (also for odd widths, e.g. 5 and 2)."""

    def fake(n):
        v = 3.0 + 7.0 / n
        one = np.array([v])
        return study.Measured(n, one, one * 0 + 0.1, one, one * 0 + 0.1, one, one, one, {})

    for na, nb in ((256, 128), (5, 2), (300, 7)):
        m, se = study.richardson(fake(na), fake(nb), "K")
        assert m[0] == pytest.approx(3.0, rel=1e-12)
        assert se[0] == pytest.approx(0.1 * np.hypot(na, nb) / (na - nb), rel=1e-12)
