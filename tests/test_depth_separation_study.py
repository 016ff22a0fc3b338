"""The ``depth-separation`` study: the explicit constructions and trained deep vs shallow networks."""

import pytest

from sphericalcow.errors import SphericalCowError
from sphericalcow.studies import get_study, make_config, run_study
from sphericalcow.studies.depth_separation import train_product


def test_trained_one_hidden_layer_multiplies_two_inputs():
    # 2^2 = 4 neurons suffice in the construction; training finds a good fit with 8
    assert train_product(2, 8, 1, seed=0, iters=150) < 0.05
    # one neuron cannot represent x y (an odd-even mismatch): the relative error stays large
    assert train_product(2, 1, 1, seed=0, iters=150) > 0.5


def test_fast_config_constructions_agree(tmp_path):
    cfg = {"ns": [2], "widths": [2, 4, 8], "n_seeds": 1, "construction_ns": [2, 3, 4, 6], "iters": 100}
    result, _ = run_study("depth-separation", cfg, out=tmp_path / "run", progress=False)
    graded = [v for v in result.verdicts if v.passed is not None]
    assert len(graded) == 2 and all(v.passed for v in graded), [v.detail for v in graded]
    assert result.data["gate_exponent"] == pytest.approx(2.0, abs=0.1)
    assert (tmp_path / "run" / "gate_error.png").exists()


def test_config_validation():
    study = get_study("depth-separation")
    with pytest.raises(SphericalCowError, match="sigma''"):
        make_config(study, {"activation": "tanh"})
    with pytest.raises(SphericalCowError, match="ns"):
        make_config(study, {"ns": [0]})
    # gate_error_coefficient knows exp, the network registry does not: rejected before any training
    with pytest.raises(SphericalCowError, match="unknown activation 'exp'"):
        make_config(study, {"activation": "exp"})
    with pytest.raises(SphericalCowError, match="distinct"):
        make_config(study, {"lambdas": [0.4, 0.2, 0.2]})
    assert make_config(study, {"activation": "softplus", "lambdas": [0.4, 0.2, 0.1]}).lambdas == [0.4, 0.2, 0.1]


@pytest.mark.slow
def test_default_config_runs():
    study = get_study("depth-separation")
    result = study.run(make_config(study), progress=False)
    graded = [v for v in result.verdicts if v.passed is not None]
    assert all(v.passed for v in graded), [(v.claim, v.detail) for v in graded if not v.passed]
    assert len(result.tables[0].rows) == 2 * len(make_config(study).ns)
