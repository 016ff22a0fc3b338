"""Empirical NTK and NNGP kernels: against a naive autograd loop and closed forms; symmetry; no mutation; errors."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import sphericalcow as sc
from sphericalcow.errors import SphericalCowError
from sphericalcow.measure import ntk as ntk_mod
from sphericalcow.measure.ntk import empirical_nngp, empirical_ntk
from sphericalcow.measure.probes import record

TOL = 1e-12
DT = torch.float64

# torch's forward-AD decompositions are scripted with torch.jit on first use of jvp (a torch-internal warning)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------- models


class ScalarOut(nn.Module):
    """Output of shape (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(torch.tanh(self.lin1(x))).squeeze(-1)


class Flaky(nn.Module):
    """Raises from its ``calls``-th forward on (a Python counter, not model state)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return x


def ntk_mlp() -> nn.Module:
    return sc.MLP(d_in=3, width=8, depth=2, d_out=2, activation="tanh").build(seed=0, dtype=DT)


def std_mlp() -> nn.Module:
    return sc.MLP(d_in=3, width=8, depth=2, d_out=2, activation="tanh", cb=0.1, parametrization="standard").build(
        seed=1, dtype=DT
    )


def cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 3 * 3, 3)).to(DT)


def scalar_out() -> nn.Module:
    torch.manual_seed(3)
    return ScalarOut().to(DT)


def bn_eval() -> nn.Module:
    torch.manual_seed(4)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return m.eval()


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "ntk_mlp": (ntk_mlp, (3,)),
    "std_mlp": (std_mlp, (3,)),
    "cnn": (cnn, (1, 5, 5)),
    "scalar_out": (scalar_out, (3,)),
    "bn_eval": (bn_eval, (3,)),
}


def data(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def naive_jacobian(model: nn.Module, x: torch.Tensor, names: set[str] | None = None) -> torch.Tensor:
    """(N, O, P): per input and per output, torch.autograd.grad over the trainable parameters, flattened."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        per_out = []
        for a in range(out.numel()):
            grads = torch.autograd.grad(out[a], params, retain_graph=True, allow_unused=True)
            flat = [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
            per_out.append(torch.cat(flat))
        rows.append(torch.stack(per_out))
    return torch.stack(rows).detach()


def naive_ntk(j1: torch.Tensor, j2: torch.Tensor, outputs: str) -> torch.Tensor:
    full = torch.einsum("iap,jbp->ijab", j1, j2)
    if outputs == "full":
        return full
    diag = full.diagonal(dim1=2, dim2=3)
    return diag if outputs == "diagonal" else diag.sum(-1)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


# ------------------------------------------------------------------------------- against the naive loop


@pytest.mark.parametrize("method", ["jacobian", "jvp"])
@pytest.mark.parametrize("name", list(MODELS))
def test_matches_naive_autograd_loop(name: str, method: str) -> None:
    factory, shape = MODELS[name]
    model = factory()
    x1, x2 = data(5, shape, 10), data(4, shape, 11)
    j1, j2 = naive_jacobian(model, x1), naive_jacobian(model, x2)
    n_out = j1.shape[1]
    for outputs in ("full", "diagonal", "trace"):
        k12 = empirical_ntk(model, x1, x2, method=method, outputs=outputs)
        k11 = empirical_ntk(model, x1, method=method, outputs=outputs)
        assert k12.dtype == DT and k11.dtype == DT
        expect_shape = {"full": (5, 4, n_out, n_out), "diagonal": (5, 4, n_out), "trace": (5, 4)}[outputs]
        assert k12.shape == expect_shape
        assert max_err(k12, naive_ntk(j1, j2, outputs)) < TOL
        assert max_err(k11, naive_ntk(j1, j1, outputs)) < TOL


def test_output_dims_are_flattened() -> None:
    torch.manual_seed(5)
    lin = nn.Linear(3, 6).to(DT)
    model = nn.Sequential(lin, nn.Tanh(), nn.Unflatten(1, (2, 3)))  # output (N, 2, 3): O = 6
    x = data(3, (3,), 12)
    k = empirical_ntk(model, x, outputs="full")
    assert k.shape == (3, 3, 6, 6)
    assert max_err(k, naive_ntk(naive_jacobian(model, x), naive_jacobian(model, x), "full")) < TOL


# --------------------------------------------------------------------------- one hidden layer, in closed form


def one_hidden_layer_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """f = b2s b2 + w2s W2 s(h), h = w1s W1 x + b1s b1; Theta_ab(x, x') summed over W1, b1, W2, b2:

    d/db2:  b2s^2 delta_ab                       d/dW2:  w2s^2 delta_ab sum_j s(h_j) s(h'_j)
    d/db1:  w2s^2 b1s^2 sum_j W2_aj W2_bj s'(h_j) s'(h'_j)
    d/dW1:  w2s^2 w1s^2 (x.x') sum_j W2_aj W2_bj s'(h_j) s'(h'_j)
    so Theta_ab = delta_ab [b2s^2 + w2s^2 s.s'] + w2s^2 (b1s^2 + w1s^2 x.x') sum_j W2_aj W2_bj s'_j s''_j,
    i.e. C_b + (C_W / n) sum_j s(z_j) s(z'_j) + ... with b2s^2 = C_b, w2s^2 = C_W / n.
    """
    first, readout = model.layers[0].dense, model.readout
    w1, b1, w1s, b1s = first.weight, first.bias, first.w_scale, first.b_scale
    w2, w2s, b2s = readout.weight, readout.w_scale, readout.b_scale
    h1, h2 = w1s * x1 @ w1.T + b1s * b1, w1s * x2 @ w1.T + b1s * b1
    s1, s2 = torch.tanh(h1), torch.tanh(h2)
    d1, d2 = 1 - s1**2, 1 - s2**2
    eye = torch.eye(w2.shape[0], dtype=DT)
    readout_part = (b2s**2 + w2s**2 * s1 @ s2.T)[:, :, None, None] * eye
    hidden = torch.einsum("aj,bj,ij,kj->ikab", w2, w2, d1, d2)
    return (readout_part + w2s**2 * (b1s**2 + w1s**2 * x1 @ x2.T)[:, :, None, None] * hidden).detach()


@pytest.mark.parametrize("method", ["jacobian", "jvp"])
def test_one_hidden_layer_closed_form(method: str) -> None:
    arch = sc.MLP(d_in=3, width=16, depth=1, d_out=2, activation="tanh", cw=1.5, cb=0.2)
    model = arch.build(seed=7, dtype=DT)
    x1, x2 = data(4, (3,), 13), data(3, (3,), 14)
    k = empirical_ntk(model, x1, x2, method=method, outputs="full")
    assert max_err(k, one_hidden_layer_ntk(model, x1, x2)) < TOL
    # the readout part alone is C_b + C_W phi.phi'/n
    ko = empirical_ntk(model, x1, x2, method=method, outputs="diagonal", params="readout")
    phi1, phi2 = torch.tanh(model.layers[0](x1)), torch.tanh(model.layers[0](x2))
    expect = (arch.cb + arch.cw * phi1 @ phi2.T / 16).detach()
    assert max_err(ko, expect[:, :, None].expand(4, 3, 2)) < TOL


# ----------------------------------------------------------------------------- symmetry, chunks, auto


@pytest.mark.parametrize("method", ["jacobian", "jvp"])
def test_symmetric_psd_and_x2_none_equals_x1(method: str) -> None:
    model = ntk_mlp()
    x = data(7, (3,), 15)
    full = empirical_ntk(model, x, method=method, outputs="full", chunk_size=3)
    mat = full.permute(0, 2, 1, 3).reshape(14, 14)
    assert torch.equal(mat, mat.T)
    eig = torch.linalg.eigvalsh(mat)
    assert float(eig.min()) > -1e-12 * float(eig.max())
    for outputs in ("full", "diagonal", "trace"):
        assert max_err(empirical_ntk(model, x, x, method=method, outputs=outputs), full_to(full, outputs)) < TOL


def full_to(full: torch.Tensor, outputs: str) -> torch.Tensor:
    if outputs == "full":
        return full
    d = full.diagonal(dim1=2, dim2=3)
    return d if outputs == "diagonal" else d.sum(-1)


@pytest.mark.parametrize("method", ["jacobian", "jvp"])
def test_chunk_size_does_not_change_the_result(method: str) -> None:
    model = std_mlp()
    x1, x2 = data(7, (3,), 16), data(5, (3,), 17)
    for outputs in ("full", "diagonal", "trace"):
        ref_sym = empirical_ntk(model, x1, method=method, outputs=outputs)
        ref = empirical_ntk(model, x1, x2, method=method, outputs=outputs)
        for chunk in (1, 2, 3, 100):
            assert max_err(empirical_ntk(model, x1, method=method, outputs=outputs, chunk_size=chunk), ref_sym) < 1e-14
            assert max_err(empirical_ntk(model, x1, x2, method=method, outputs=outputs, chunk_size=chunk), ref) < 1e-14


@pytest.mark.parametrize("outputs", ["full", "diagonal", "trace"])
def test_jacobian_route_blocks_when_jacobians_do_not_fit(monkeypatch: pytest.MonkeyPatch, outputs: str) -> None:
    model = ntk_mlp()  # P = 122, O = 2, float64: 1952 bytes of Jacobian per input
    x1, x2 = data(6, (3,), 18), data(5, (3,), 19)
    ref = empirical_ntk(model, x1, x2, method="jacobian", outputs=outputs)
    ref_sym = empirical_ntk(model, x1, method="jacobian", outputs=outputs)
    # 0: nothing kept, every column chunk recomputed; 5000: blocks, one 2-input column chunk kept for reuse
    for budget in (0, 5000):
        monkeypatch.setattr(ntk_mod, "AUTO_BUDGET_BYTES", budget)
        k = empirical_ntk(model, x1, x2, method="jacobian", outputs=outputs, chunk_size=2)
        assert max_err(k, ref) < 1e-14
        k = empirical_ntk(model, x1, method="jacobian", outputs=outputs, chunk_size=2)
        assert max_err(k, ref_sym) < 1e-14


def test_auto_picks_by_jacobian_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ntk_mlp()
    x = data(4, (3,), 20)
    calls: list[str] = []
    for route in ("_ntk_jacobian", "_ntk_jvp"):
        orig = getattr(ntk_mod, route)

        def spy(*args: Any, _orig: Callable[..., torch.Tensor] = orig, _name: str = route) -> torch.Tensor:
            calls.append(_name)
            return _orig(*args)

        monkeypatch.setattr(ntk_mod, route, spy)
    k_small = empirical_ntk(model, x)
    monkeypatch.setattr(ntk_mod, "AUTO_BUDGET_BYTES", 0)
    k_big = empirical_ntk(model, x)
    assert calls == ["_ntk_jacobian", "_ntk_jvp"]
    assert max_err(k_big, k_small) < TOL


def test_default_chunks_respect_the_budget() -> None:
    mib = 1 << 20
    k1, k2 = ntk_mod._default_chunks("jacobian", 1000, 1000, 10, 10**6, 4, 10**4)
    assert k1 == k2 == ntk_mod.CHUNK_BUDGET_BYTES // (10 * (4 * 10**6 + 10**4))
    assert ntk_mod._default_chunks("jacobian", 5, 3, 1, 10, 8, 0) == (5, 3)
    assert ntk_mod._default_chunks("jacobian", 5, 5, 10, 10**9, 4, 0) == (1, 1)  # one input over budget: still 1
    k1, k2 = ntk_mod._default_chunks("jvp", 1000, 1000, 10, 10**6, 4, 10**4)
    assert k2 * 2 * 10 * 4 * 10**6 <= 512 * mib and k2 * 10 * k1 * 10**4 <= 512 * mib


# ------------------------------------------------------------------------------------------ params filter


def test_params_filter_and_frozen_parameters() -> None:
    model = ntk_mlp()
    x = data(4, (3,), 21)
    names = {n for n, _ in model.named_parameters()}
    for sel, keep in (
        ("readout", {"readout.weight", "readout.bias"}),
        (["layers.0.dense.weight", "readout.bias"], {"layers.0.dense.weight", "readout.bias"}),
        ("layers", {n for n in names if n.startswith("layers.")}),
    ):
        j = naive_jacobian(model, x, keep)
        for method in ("jacobian", "jvp"):
            k = empirical_ntk(model, x, method=method, outputs="full", params=sel)
            assert max_err(k, naive_ntk(j, j, "full")) < TOL
    model.layers[1].dense.weight.requires_grad_(False)
    j = naive_jacobian(model, x)
    assert j.shape[2] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert max_err(empirical_ntk(model, x, outputs="full"), naive_ntk(j, j, "full")) < TOL
    assert model.layers[1].dense.weight.requires_grad is False
    with pytest.raises(SphericalCowError, match="frozen"):
        empirical_ntk(model, x, params="layers.1.dense.weight")
    with pytest.raises(SphericalCowError, match="'layer'"):
        empirical_ntk(model, x, params="layer")  # a prefix only at a '.' boundary
    with pytest.raises(SphericalCowError, match="empty"):
        empirical_ntk(model, x, params=[])


# ------------------------------------------------------------------------------------------- no mutation


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "params": {n: (p, p.detach().clone(), p.requires_grad, p.grad) for n, p in model.named_parameters()},
        "buffers": {n: (b, b.clone()) for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for n, m in model.named_modules()
        },
    }


def assert_unchanged(model: nn.Module, snap: dict[str, Any]) -> None:
    now = snapshot(model)
    assert now["params"].keys() == snap["params"].keys() and now["buffers"].keys() == snap["buffers"].keys()
    for n, (p, value, rg, grad) in snap["params"].items():
        q = now["params"][n][0]
        assert q is p and torch.equal(q, value) and q.requires_grad == rg and q.grad is grad, n
    for n, (b, value) in snap["buffers"].items():
        assert now["buffers"][n][0] is b and torch.equal(b, value), n
    assert now["training"] == snap["training"]
    assert now["hooks"] == snap["hooks"]


def test_never_mutates_the_model() -> None:
    model = bn_eval()
    model[3].train()  # a Linear in train mode: allowed, and must stay so
    model[0].weight.requires_grad_(False)
    snap = snapshot(model)
    x = data(5, (3,), 22)
    for method in ("jacobian", "jvp"):
        empirical_ntk(model, x, method=method, outputs="full", chunk_size=2)
    empirical_nngp(model, x)
    empirical_nngp(model, x, layer="2")
    assert_unchanged(model, snap)


def test_never_mutates_when_an_error_is_raised_midway() -> None:
    x = data(4, (3,), 23)
    # the probe runs the forward pass twice; the third call is inside the vmapped computation
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), Flaky(fail_at=3), nn.Linear(4, 2)).to(DT)
    for method in ("jacobian", "jvp"):
        model[2].calls = 0
        snap = snapshot(model)
        with pytest.raises(RuntimeError, match="boom"):
            empirical_ntk(model, x, method=method)
        assert_unchanged(model, snap)
    # nngp: the readout's pre-hook is registered when the forward pass raises after it; it must be removed
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), Flaky(fail_at=1)).to(DT)
    snap = snapshot(model)
    with pytest.raises(SphericalCowError, match=r"model failed on x1 of shape \(4, 3\).*boom"):
        empirical_nngp(model, x)
    assert_unchanged(model, snap)
    with pytest.raises(SphericalCowError, match=r"model failed on x1 of shape \(4, 3\).*boom"):
        empirical_ntk(model, x)  # raised by the probe: wrapped with the shape
    assert_unchanged(model, snap)


# ------------------------------------------------------------------------------------------------- NNGP


def test_nngp_ntk_readout_is_exact() -> None:
    arch = sc.MLP(d_in=3, width=12, depth=2, d_out=2, activation="tanh", cw=1.7, cb=0.3)
    model = arch.build(seed=9, dtype=DT)
    x1, x2 = data(5, (3,), 24), data(4, (3,), 25)
    phi1 = torch.tanh(record(model, x1, ["layers.1"])["layers.1"])
    phi2 = torch.tanh(record(model, x2, ["layers.1"])["layers.1"])
    expect = arch.cb + arch.cw * phi1 @ phi2.T / 12
    k = empirical_nngp(model, x1, x2)
    assert k.shape == (5, 4) and k.dtype == DT
    assert max_err(k, expect) < TOL
    ks = empirical_nngp(model, x1)
    assert torch.equal(ks, ks.T) and max_err(ks, arch.cb + arch.cw * phi1 @ phi1.T / 12) < TOL
    # layer=...: the raw kernel of that module's output
    z1 = record(model, x1, ["layers.1"])["layers.1"]
    assert max_err(empirical_nngp(model, x1, layer="layers.1"), z1 @ z1.T / 12) < TOL


def test_nngp_plain_linear_readout_uses_weight_mean_squares() -> None:
    model = std_mlp()
    x = data(6, (3,), 26)
    phi = torch.tanh(record(model, x, ["layers.1"])["layers.1"])
    w, b = model.readout.weight.detach(), model.readout.bias.detach()
    expect = w.square().mean() * phi @ phi.T + b.square().mean()
    assert max_err(empirical_nngp(model, x), expect) < TOL
    no_bias = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1, bias=False)).to(DT)
    phi = torch.relu(no_bias[0](x)).detach()
    assert max_err(empirical_nngp(no_bias, x), no_bias[2].weight.detach().square().mean() * phi @ phi.T) < TOL


def test_nngp_errors() -> None:
    x = data(3, (3,), 27)
    with pytest.raises(SphericalCowError, match=r"no nn\.Linear or NTKLinear"):
        empirical_nngp(nn.Sequential(nn.Tanh()), x)
    with pytest.raises(SphericalCowError, match="not a submodule name"):
        empirical_nngp(ntk_mlp(), x, layer="nope")
    seq = nn.Sequential(nn.Linear(3, 4), nn.Unflatten(1, (2, 2)), nn.Linear(2, 1)).to(DT)
    with pytest.raises(SphericalCowError, match=r"shape \(3, 2, 2\).*layer="):
        empirical_nngp(seq, x)


# ----------------------------------------------------------------------------------------------- errors


def test_batchnorm_in_training_mode_and_dropout_are_refused() -> None:
    model = bn_eval().train()
    x = data(4, (3,), 28)
    snap = snapshot(model)
    for call in (lambda: empirical_ntk(model, x), lambda: empirical_nngp(model, x)):
        with pytest.raises(SphericalCowError, match=r"BatchNorm1d '1' is in training mode.*model.eval\(\)"):
            call()
    assert_unchanged(model, snap)
    no_stats = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False)).to(DT).eval()
    with pytest.raises(SphericalCowError, match="track_running_stats=False"):
        empirical_ntk(no_stats, x)
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1)).to(DT)
    with pytest.raises(SphericalCowError, match="Dropout '1' is in training mode"):
        empirical_ntk(drop, x)
    assert empirical_ntk(drop.eval(), x).shape == (4, 4)

    class FunctionalDropout(nn.Module):  # random numbers drawn without a Dropout module: caught inside vmap
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return nn.functional.dropout(self.lin(t), 0.5, training=True)

    with pytest.raises(SphericalCowError, match=r"random numbers.*model\.eval\(\)"):
        empirical_ntk(FunctionalDropout().to(DT), x)


def test_bad_inputs_and_arguments() -> None:
    model = ntk_mlp()
    x = data(4, (3,), 29)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(SphericalCowError, match=r"x1 contains NaN \(first in input 2\)"):
        empirical_ntk(model, bad)
    bad[2, 1] = float("inf")
    with pytest.raises(SphericalCowError, match="x2 contains inf"):
        empirical_ntk(model, x, bad)
    with pytest.raises(SphericalCowError, match="x2 contains NaN"):
        empirical_nngp(model, x, torch.full((2, 3), float("nan"), dtype=DT))
    with pytest.raises(SphericalCowError, match=r"model failed on x1 of shape \(4, 5\)"):
        empirical_ntk(model, data(4, (5,), 30))
    with pytest.raises(SphericalCowError, match=r"model failed on x2 of shape \(2, 4\)"):
        empirical_ntk(model, x, data(2, (4,), 31))
    with pytest.raises(SphericalCowError, match=r"x1 of shape \(3,\)|x1 has shape \(3,\)|model output has shape"):
        empirical_ntk(model, torch.zeros(3, dtype=DT))
    with pytest.raises(SphericalCowError, match=r"x1 has shape \(0, 3\)"):
        empirical_ntk(model, torch.zeros(0, 3))
    with pytest.raises(SphericalCowError, match="x1 has dtype <U1"):
        empirical_ntk(model, np.array([["a", "b", "c"]]))
    with pytest.raises(SphericalCowError, match="method='fast' is not allowed; expected one of 'auto', 'jacobian'"):
        empirical_ntk(model, x, method="fast")
    with pytest.raises(SphericalCowError, match="outputs='mean' is not allowed; expected one of 'trace', 'full'"):
        empirical_ntk(model, x, outputs="mean")
    with pytest.raises(SphericalCowError, match="chunk_size=0"):
        empirical_ntk(model, x, chunk_size=0)
    with pytest.raises(SphericalCowError, match=r"not a torch\.nn\.Module"):
        empirical_ntk(lambda t: t, x)
    frozen = ntk_mlp().requires_grad_(False)
    with pytest.raises(SphericalCowError, match="no trainable parameters"):
        empirical_ntk(frozen, x)
    with pytest.raises(SphericalCowError, match=r"output has shape \(1, 2, 2\) for 2 input\(s\) of x1"):
        empirical_ntk(nn.Sequential(nn.Linear(3, 2), nn.Unflatten(0, (1, -1))).to(DT), x)

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.lin(t), self.lin(t)

    with pytest.raises(SphericalCowError, match="returned tuple on x1; expected a single tensor"):
        empirical_ntk(Pair().to(DT), x)


def test_numpy_inputs_and_model_dtype() -> None:
    model = ntk_mlp()
    x = data(4, (3,), 32)
    k_np = empirical_ntk(model, x.numpy().astype(np.float32))  # converted to the model's float64
    assert k_np.dtype == DT and max_err(k_np, empirical_ntk(model, x.float().double())) < TOL
    m32 = sc.MLP(d_in=3, width=8, depth=2, d_out=2, activation="tanh").build(seed=0, dtype=torch.float32)
    k32 = empirical_ntk(m32, x, method="jvp", outputs="diagonal")
    assert k32.dtype == torch.float32 and k32.shape == (4, 4, 2)
    m64 = copy.deepcopy(m32).double()
    assert max_err(k32.double(), empirical_ntk(m64, x, outputs="diagonal")) < 1e-5
    assert empirical_nngp(m32, x.numpy()).dtype == torch.float32
