"""The MLP description and the modules it builds."""

import math

import pytest
import torch

import sphericalcow as sc
from sphericalcow.errors import SphericalCowError


def test_cw_none_is_the_critical_value():
    assert sc.MLP(4, 8, 3, activation="relu").cw == 2.0
    assert sc.MLP(4, 8, 3, activation="tanh").cw == 1.0
    assert sc.MLP(4, 8, 3, activation="erf").cw == pytest.approx(math.pi / 4)
    assert sc.MLP(4, 8, 3, activation="tanh", cb=0.05).cw == pytest.approx(sc.critical_init("tanh", 0.05)[0])


def test_build_shapes_names_and_seeds():
    arch = sc.MLP(5, [7, 9, 11], 3, d_out=2, activation="tanh")
    m = arch.build(seed=1)
    assert m(torch.randn(4, 5)).shape == (4, 2)
    names = dict(m.named_modules())
    assert all(n in names for n in arch.layer_names())
    m2 = arch.build(seed=1)
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    m3 = arch.build(seed=2)
    assert not torch.equal(next(m.parameters()), next(m3.parameters()))


@pytest.mark.parametrize("param", ["ntk", "standard"])
def test_effective_weight_variance_is_cw_over_fan_in(param):
    """Var of the effective weights, over one large layer: C_W / fan_in within 4 standard errors."""
    arch = sc.MLP(400, 300, 1, d_out=1, activation="relu", cw=1.7, cb=0.3, parametrization=param)
    m = arch.build(seed=0, dtype=torch.float64)
    x = torch.eye(400, dtype=torch.float64)
    z = m.layers[0](x) - m.layers[0](torch.zeros(1, 400, dtype=torch.float64))  # = W^T columns
    var = z.var().item()
    target = 1.7 / 400
    assert var == pytest.approx(target, rel=4 * math.sqrt(2 / z.numel()))
    b = m.layers[0](torch.zeros(1, 400, dtype=torch.float64))
    assert b.var().item() == pytest.approx(0.3, rel=4 * math.sqrt(2 / 300))


def test_standard_and_ntk_give_identical_functions_for_matched_weights():
    a = sc.MLP(6, 10, 2, activation="tanh", cw=1.3, cb=0.2, parametrization="ntk")
    b = sc.MLP(6, 10, 2, activation="tanh", cw=1.3, cb=0.2, parametrization="standard")
    ma, mb = a.build(seed=0, dtype=torch.float64), b.build(seed=0, dtype=torch.float64)
    with torch.no_grad():
        for la, lb in zip(
            [*(blk.dense for blk in ma.layers), ma.readout],
            [*(blk.dense for blk in mb.layers), mb.readout],
            strict=True,
        ):
            lb.weight.copy_(la.weight * la.w_scale)
            lb.bias.copy_(la.bias * la.b_scale)
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(ma(x), mb(x))


def test_residual_forward_is_z_plus_branch():
    arch = sc.MLP(3, 4, 3, activation="relu", cw=1.0, residual=True)
    m = arch.build(seed=0, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64)
    z1 = m.layers[0](x)
    z2 = m.layers[1](z1)
    torch.testing.assert_close(z2, z1 + m.layers[1].dense(torch.relu(z1)))


def test_round_trip():
    arch = sc.MLP(3, [4, 5], 2, d_out=3, activation="leaky_relu:slope=0.2", cw=1.1, cb=0.1)
    assert sc.MLP.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(width=-3), "width=-3"),
        (dict(depth=0), "depth=0"),
        (dict(cw=0.0), "cw=0.0"),
        (dict(cw=float("nan")), "cw=nan"),
        (dict(activation="relu2"), "unknown activation 'relu2'"),
        (dict(parametrization="mup"), "parametrization='mup'"),
        (dict(width=[4, 5]), "one per hidden layer"),
        (dict(width=[4, 5, 6], residual=True), "equal hidden widths"),
    ],
)
def test_bad_descriptions(kw, match):
    args = dict(d_in=3, width=4, depth=3) | kw
    with pytest.raises(SphericalCowError, match=match):
        sc.MLP(**args)
