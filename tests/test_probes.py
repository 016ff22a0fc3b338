"""Forward probes: known-init truths, finite-width kurtosis, CI calibration, never-mutates, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

from sphericalcow.errors import SphericalCowError
from sphericalcow.measure import (
    ForwardProbe,
    ModelProbe,
    probe_forward,
    probe_model,
    record,
    resolve_layers,
)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """These networks are tiny: intra-op threads only add overhead (and collapse under CPU contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def init_gaussian_(model: nn.Module, seed: int, cw: float, cb: float) -> nn.Module:
    """Weights N(0, cw / fan_in), biases N(0, cb) for every Linear, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, math.sqrt(cw / m.in_features), generator=g)
                if m.bias is not None:
                    m.bias.normal_(0.0, math.sqrt(cb), generator=g) if cb > 0 else m.bias.zero_()
    return model


def mlp(d_in: int, width: int, depth: int, act: Callable[[], nn.Module] | None) -> nn.Sequential:
    """Linear (act Linear)* with ``depth`` Linear layers; Linear layers are at even indices if act is set."""
    mods: list[nn.Module] = []
    for i in range(depth):
        if i and act is not None:
            mods.append(act())
        mods.append(nn.Linear(d_in if i == 0 else width, width))
    return nn.Sequential(*mods)


def inputs(n: int, d: int, seed: int = 123) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- known infinite-width truths


def test_single_linear_layer_matches_exact_kernel() -> None:
    d, width, cw, cb = 10, 256, 1.5, 0.2
    x = inputs(3, d)

    def factory(seed: int) -> nn.Module:
        return init_gaussian_(nn.Sequential(nn.Linear(d, width)), seed, cw, cb)

    pairs = [(0, 1), (0, 2), (1, 2)]
    p = probe_forward(factory, x, ["0"], 400, pairs=pairs, level=0.999)
    xd = x.double()
    K = cb + cw * (xd @ xd.T).numpy() / d
    k_aa = np.diag(K)
    rho = np.array([K[a, b] / math.sqrt(K[a, a] * K[b, b]) for a, b in pairs])

    var, corr, mean, kurt = p.variance["0"], p.correlation["0"], p.mean["0"], p.kurtosis["0"]
    assert var.shape == (3,) and corr.shape == (3,) and mean.shape == (3,) and kurt.shape == (3,)
    assert var.contains(k_aa).all(), (var.mean, k_aa)
    assert corr.contains(rho).all(), (corr.mean, rho)
    assert mean.contains(0.0).all()
    assert kurt.contains(0.0).all(), (kurt.lo, kurt.hi)
    # The intervals are tight (relative SE of K_aa is sqrt(2 / (width * seeds)) = 0.4%), so a wrong formula,
    # e.g. one without the bias variance, is caught.
    assert np.all((var.hi - var.lo) / k_aa < 0.04)
    assert np.all(corr.hi - corr.lo < 0.03)
    assert np.all(kurt.hi - kurt.lo < 0.2)
    assert not var.contains((cw * (xd * xd).sum(1) / d).numpy()).any()  # K without the bias term
    assert p.width == {"0": width} and p.n_seeds == 400 and p.pairs == pairs


def test_variance_is_second_moment_unbiased_at_small_width() -> None:
    # z has mean 0 at init, so the mean over neurons of z^2 is unbiased for K_aa at ANY width; subtracting
    # the mean over neurons (a centred variance) would be biased low by a factor (1 - 1/width) = 0.75 here.
    d, width, cw, cb = 10, 4, 1.0, 0.5
    x = inputs(2, d)

    def factory(seed: int) -> nn.Module:
        return init_gaussian_(nn.Sequential(nn.Linear(d, width)), seed, cw, cb)

    p = probe_forward(factory, x, ["0"], 1000, pairs=(), level=0.999)
    k_aa = cb + cw * (x.double() ** 2).sum(1).numpy() / d
    assert p.variance["0"].contains(k_aa).all(), (p.variance["0"].lo, p.variance["0"].hi, k_aa)
    assert not p.variance["0"].contains(k_aa * (1 - 1 / width)).any()


def test_deep_relu_chain_has_positive_finite_width_kurtosis() -> None:
    d, width, depth = 6, 8, 10
    x = inputs(2, d, seed=5)
    names = [str(2 * i) for i in range(depth)]  # the Linear layers (preactivations)

    def factory(seed: int) -> nn.Module:
        return init_gaussian_(mlp(d, width, depth, nn.ReLU), seed, cw=2.0, cb=0.0)

    p = probe_forward(factory, x, names, 300, pairs=())
    first, last = p.kurtosis[names[0]], p.kurtosis[names[-1]]
    # The first layer's preactivation is exactly Gaussian; deep in a narrow ReLU net it is not.
    assert first.contains(0.0).all(), (first.lo, first.hi)
    assert np.all(last.lo > 0.0), (last.lo, last.hi)
    assert np.all(last.mean > first.hi)
    assert p.correlation[names[-1]].shape == (0,)


# ------------------------------------------------------------------------------------------ CI calibration


def test_confidence_intervals_are_calibrated_on_deep_linear_nets() -> None:
    # For a deep LINEAR network, E[z^2] follows K <- cb + cw K exactly at any width, and E[z] = 0. Each of
    # n_trials independent blocks of seeds checks ONE (layer, input) for the mean and one for the variance,
    # so each coverage count is a sum of independent Bernoulli(0.95) draws if the intervals are calibrated.
    d, width, depth, n_inputs, seeds_per_trial, n_trials = 5, 64, 3, 2, 20, 200
    cw, cb = 1.0, 0.1
    x = inputs(n_inputs, d, seed=9)
    net = mlp(d, width, depth, None)

    def factory(seed: int) -> nn.Module:  # re-initialises one module in place: cheaper than building one
        return init_gaussian_(net, seed, cw, cb)

    k = cb + cw * (x.double() ** 2).sum(1).numpy() / d
    truth = []
    for _ in range(depth):
        truth.append(k.copy())
        k = cb + cw * k
    names = [str(i) for i in range(depth)]
    cover_var = cover_mean = 0
    for t in range(n_trials):
        p = probe_forward(factory, x, names, range(t * seeds_per_trial, (t + 1) * seeds_per_trial), pairs=())
        layer, a = t % depth, (t // depth) % n_inputs
        cover_var += bool(p.variance[names[layer]].contains(truth[layer])[a])
        layer, a = (t + 1) % depth, (t // depth + 1) % n_inputs
        cover_mean += bool(p.mean[names[layer]].contains(0.0)[a])
    lo, hi = sps.binom.interval(0.999, n_trials, 0.95)  # acceptance region, 1e-3 false-alarm rate
    assert lo <= cover_var <= hi, (cover_var, lo, hi)
    assert lo <= cover_mean <= hi, (cover_mean, lo, hi)


# --------------------------------------------------------------------------------------------- never mutates


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def bn_dropout_model(fail: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        Boom() if fail else nn.Identity(),
        nn.Linear(8, 3),
    )
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model[1](model[0](torch.randn(16, 5)))
    model[3].eval()  # mixed training flags
    model[5].weight.requires_grad_(False)
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "ids": [id(t) for t in [*model.parameters(), *model.buffers()]],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["ids"] == before["ids"]
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.mark.parametrize("mode", ["eval", "train", "keep"])
def test_record_never_mutates_batchnorm_dropout_model(mode: str) -> None:
    model = bn_dropout_model()
    before = snapshot(model)
    x = inputs(6, 5)
    out = record(model, x, ["1", "3", model[5]], mode=mode)
    assert_unchanged(model, before)
    assert set(out) == {"1", "3", "5"}
    assert all(v.dtype == torch.float64 and v.shape[0] == 6 and not v.requires_grad for v in out.values())
    bn = out["1"]
    if mode == "eval":  # running statistics: batch mean is not ~0
        assert bn.mean(0).abs().max() > 1e-3
        assert torch.equal(out["3"], torch.relu(bn))  # dropout inactive
    else:  # batch statistics: normalised batch has mean 0 per feature
        assert bn.mean(0).abs().max() < 1e-5
    if mode == "train":  # dropout active: some entries zeroed, the rest scaled by 2
        relu = torch.relu(bn)
        assert ((out["3"] == 0) & (relu > 0)).any()


def test_probe_model_and_probe_forward_never_mutate() -> None:
    model = bn_dropout_model()
    before = snapshot(model)
    x = inputs(6, 5)
    for mode in ("eval", "train"):
        probe_model(model, x, ["0", "5"], mode=mode)
        probe_forward(lambda s: model, x, ["0", "5"], 3, mode=mode)
    assert_unchanged(model, before)


def test_hooks_removed_and_state_restored_when_forward_raises() -> None:
    model = bn_dropout_model(fail=True)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        record(model, inputs(6, 5), ["0", "1"], mode="train")  # BatchNorm updated its stats before Boom
    assert_unchanged(model, before)


class Sneaky(nn.Module):
    """Mutates itself in forward: in-place on a parameter, replaces a buffer, changes requires_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.w.add_(1.0)
        self.count = self.count + 1
        self.w.requires_grad_(False)
        self.training = not self.training
        return x * self.w


def test_record_restores_in_forward_self_mutation() -> None:
    model = nn.Sequential(Sneaky())
    before = snapshot(model)
    out = record(model, torch.ones(2, 3), ["0"], mode="keep")
    assert torch.equal(out["0"], torch.full((2, 3), 2.0, dtype=torch.float64))
    assert_unchanged(model, before)
    assert model[0].w.requires_grad


def test_record_leaves_version_counters_so_pending_backward_works() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    versions = [p._version for p in model.parameters()]
    loss = model(torch.randn(8, 3)).sum()
    record(model, inputs(5, 3), ["0", "1"], mode="train")
    probe_model(model, inputs(5, 3), ["2"], mode="eval")
    assert [p._version for p in model.parameters()] == versions
    loss.backward()  # would raise if a parameter had been written in place
    assert all(p.grad is not None for p in model.parameters())


class Resizer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.arange(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.table.resize_(2)
        return x


def test_record_restores_a_buffer_resized_in_place() -> None:
    model = nn.Sequential(Resizer())
    record(model, inputs(2, 3), ["0"])
    assert torch.equal(model[0].table, torch.arange(4.0))


def test_record_copies_output_before_inplace_ops() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(inplace=True))
    x = inputs(5, 4)
    out = record(model, x, ["0", "1"])
    with torch.no_grad():
        pre = model[0](x).double()
    torch.testing.assert_close(out["0"], pre)
    assert (out["0"] < 0).any()  # not overwritten by the in-place ReLU
    torch.testing.assert_close(out["1"], pre.clamp(min=0))


def test_record_flattens_features_and_accepts_multidim_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(3 * 25, 4))
    x = torch.randn(7, 2, 5, 5)
    out = record(model, x, ["0", "2", ""])
    assert out["0"].shape == (7, 75) and out["2"].shape == (7, 4) and out[""].shape == (7, 4)

    def factory(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(75, 4))

    p = probe_forward(factory, x, ["0"], 3)
    assert p.width == {"0": 75} and p.variance["0"].shape == (7,)


# ---------------------------------------------------------------------------------------- layer resolution


def test_resolve_layers_by_name_and_module() -> None:
    inner = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    model = nn.Sequential(nn.Linear(2, 3), inner)
    assert resolve_layers(model, ["0", "1.1"]) == [("0", model[0]), ("1.1", inner[1])]
    assert resolve_layers(model, [inner[0], "1"]) == [("1.0", inner[0]), ("1", inner)]
    assert resolve_layers(model, "1.0") == [("1.0", inner[0])]
    assert resolve_layers(model, model) == [("", model)]


def test_resolve_layers_errors() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])
    with pytest.raises(SphericalCowError, match=r"layer 'fc1' is not a submodule name.*'0', '1'.*more") as info:
        resolve_layers(model, ["fc1"])
    assert "\n" not in str(info.value)
    with pytest.raises(SphericalCowError, match="is not a submodule of Sequential"):
        resolve_layers(model, [nn.Linear(2, 2)])
    with pytest.raises(SphericalCowError, match="more than once"):
        resolve_layers(model, ["0", model[0]])
    with pytest.raises(SphericalCowError, match="empty"):
        resolve_layers(model, [])
    with pytest.raises(SphericalCowError, match="layer 3 of type int"):
        resolve_layers(model, [3])  # type: ignore[list-item]
    with pytest.raises(SphericalCowError, match=r"not a torch\.nn\.Module"):
        resolve_layers("model", ["0"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- validation


def small_factory(seed: int) -> nn.Module:
    return init_gaussian_(mlp(4, 8, 2, nn.Tanh), seed, 1.0, 0.0)


def test_input_validation_messages() -> None:
    x = inputs(3, 4)
    bad = x.clone()
    bad[1, 2] = float("nan")
    cases = [
        (bad, "NaN.*input 1"),
        (torch.full((2, 4), float("inf")), "inf"),
        (torch.ones(4), "at least 2 dims"),
        (torch.ones(3, 4, dtype=torch.long), "floating-point"),
        (np.ones((3, 4)), "not a torch.Tensor"),
        (torch.ones(0, 4), "at least one"),
    ]
    for value, match in cases:
        for call in (
            lambda v: record(small_factory(0), v, ["0"]),
            lambda v: probe_forward(small_factory, v, ["0"], 2, pairs=()),
            lambda v: probe_model(small_factory(0), v, ["0"], pairs=()),
        ):
            with pytest.raises(SphericalCowError, match=match) as info:
                call(value)
            assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pairs": [(0, 3)]}, r"pair \(0, 3\) is out of range.*\[0, 2\]"),
        ({"pairs": [(-1, 0)]}, "out of range"),
        ({"pairs": [(0, 1, 2)]}, "expected two integer"),
        ({"pairs": [(0.5, 1)]}, "expected two integer"),
        ({"pairs": 3}, "not a sequence"),
        ({"seeds": 1}, "seeds=1"),
        ({"seeds": [7]}, "1 seed"),
        ({"seeds": [1, 2, 1]}, "seed 1 appears more than once"),
        ({"seeds": [1, -2]}, "seed=-2"),
        ({"seeds": "ab"}, "seed='a'"),
        ({"mode": "test"}, "mode='test'.*'eval', 'train', 'keep'"),
        ({"level": 95}, "level=95"),
        ({"progress": 3}, "progress=3"),
        ({"layers": ["9"]}, "layer '9'"),
        ({"factory": lambda s: "net"}, "not a torch.nn.Module"),
        ({"factory": None}, "factory=None"),
    ],
)
def test_probe_forward_errors(kwargs: dict, match: str) -> None:
    args = {"factory": small_factory, "inputs": inputs(3, 4), "layers": ["0"], "seeds": 3, **kwargs}
    with pytest.raises(SphericalCowError, match=match) as info:
        probe_forward(**args)
    assert "\n" not in str(info.value)


def test_probe_forward_module_layers_need_names() -> None:
    foreign = small_factory(99)
    with pytest.raises(SphericalCowError, match="pass layer names"):
        probe_forward(small_factory, inputs(3, 4), [foreign[0]], 3)
    # A factory that returns the same module each time can use module objects.
    p = probe_forward(lambda s: init_gaussian_(foreign, s, 1.0, 0.0), inputs(3, 4), [foreign[2]], 3)
    assert p.layers == ["2"]


class TwoOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.lin(x))


class Transposed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.T


def test_record_layer_output_errors() -> None:
    x = inputs(3, 4)
    with pytest.raises(SphericalCowError, match="returned tuple, not a tensor"):
        record(nn.Sequential(TwoOut()), x, ["0"])
    with pytest.raises(SphericalCowError, match="ran 2 times"):
        record(Twice(), x, ["lin"])
    with pytest.raises(SphericalCowError, match="did not run"):
        record(Twice(), x, ["unused"])
    with pytest.raises(SphericalCowError, match=r"shape \(4, 3\).*3 inputs along dim 0"):
        record(nn.Sequential(Transposed()), x, ["0"])
    with pytest.raises(SphericalCowError, match="mode='fast'"):
        record(Twice(), x, ["lin"], mode="fast")
    with pytest.raises(SphericalCowError, match="lazy"):
        record(nn.Sequential(nn.LazyLinear(3)), x, ["0"])


# ------------------------------------------------------------------------------------------- result objects


def test_probe_forward_result_structure_and_progress() -> None:
    calls: list[int] = []
    x = inputs(3, 4)
    p = probe_forward(small_factory, x, ["0", "2"], [5, 6, 7, 8], pairs=[(0, 1), (2, 1)], progress=calls.append)
    assert isinstance(p, ForwardProbe)
    assert calls == [1, 2, 3, 4]
    assert p.layers == ["0", "2"] and p.seeds == [5, 6, 7, 8] and p.n_seeds == 4 and p.mode == "eval"
    assert p.width == {"0": 8, "2": 8}
    for name in p.layers:
        assert p.mean[name].shape == (3,) and p.variance[name].shape == (3,) and p.kurtosis[name].shape == (3,)
        assert p.correlation[name].shape == (2,) and p.correlation[name].n == 4
        assert np.all(np.abs(p.correlation[name].mean) <= 1.0)
    d = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    assert d["layers"] == ["0", "2"] and d["pairs"] == [[0, 1], [2, 1]] and d["n_seeds"] == 4
    assert len(d["variance"]["2"]["lo"]) == 3 and d["kurtosis"]["0"]["n"] == 4

    # Per-seed quantities agree with a direct computation from record().
    zs = [record(small_factory(s), x, ["2"])["2"].numpy() for s in [5, 6, 7, 8]]
    m2 = np.array([(z**2).mean(1) for z in zs])
    np.testing.assert_allclose(p.variance["2"].mean, m2.mean(0))
    # the kernel correlation as a ratio of means over neurons and seeds (not the mean of per-seed cosines)
    m01 = np.array([(z[0] * z[1]).mean() for z in zs])
    np.testing.assert_allclose(p.correlation["2"].mean[0], m01.mean() / np.sqrt(m2.mean(0)[0] * m2.mean(0)[1]))
    m4 = np.array([(z**4).mean(1) for z in zs])
    np.testing.assert_allclose(p.kurtosis["2"].mean, m4.mean(0) / m2.mean(0) ** 2 - 3.0)
    # Same seeds, same answer.
    q = probe_forward(small_factory, x, ["0", "2"], [5, 6, 7, 8], pairs=[(0, 1), (2, 1)])
    assert q.to_dict() == p.to_dict()


def test_probe_model_point_estimates() -> None:
    model = small_factory(3)
    x = inputs(3, 4)
    r = probe_model(model, x, ["2"], pairs=[(1, 2)])
    assert isinstance(r, ModelProbe)
    z = record(model, x, ["2"])["2"].numpy()
    np.testing.assert_allclose(r.mean["2"], z.mean(1))
    np.testing.assert_allclose(r.variance["2"], (z**2).mean(1))
    np.testing.assert_allclose(r.kurtosis["2"], (z**4).mean(1) / (z**2).mean(1) ** 2 - 3.0)
    np.testing.assert_allclose(r.correlation["2"], [z[1] @ z[2] / np.sqrt((z[1] @ z[1]) * (z[2] @ z[2]))])
    json.dumps(r.to_dict(), allow_nan=False)


def test_dead_layer_gives_nan_correlation_not_crash() -> None:
    def factory(seed: int) -> nn.Module:
        net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        with torch.no_grad():
            net[0].weight.zero_()
            net[0].bias.fill_(-1.0)
        return net

    p = probe_forward(factory, inputs(2, 4), ["1"], 3)
    assert np.isnan(p.correlation["1"].mean).all()
    assert p.to_dict()["correlation"]["1"]["mean"] == [None]
