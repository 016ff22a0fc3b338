"""Forward and backward measurements on an ensemble of initialisations of one architecture.

Every measurement runs on float64 deep copies on the CPU (the user's model is never touched) in eval mode, except batch
normalisation, which is put in train mode (batch statistics, as in training: in eval mode a freshly initialised
BatchNorm is the identity and would hide what it does). Per draw:

* **second moment** K = E[z^2] (mean over units and examples), its per-draw **gain** K_out / K_in across each
  block, and the **correlation** of two inputs,
  K_ab / sqrt(K_aa K_bb) with K_ab = <z_a . z_b> / n (the NNGP kernel's normalised off-diagonal), at every probe;
* **chi_perp** of block l: the mean squared response per unit to a random perturbation v of the block's input,
  chi_perp = (|J v|^2 / n_out) / (|v|^2 / n_in), by a forward difference of step 1e-6 |z|_rms in float64 (Jacobian
  J of the block's input-output map inside the full model, so skip connections and normalisations are included).
  For a dense layer W acting on sigma(z) its expectation is C_W <sigma'(z)^2>_K, the book's chi_perp (PDLT eq. 5.10;
  Poole et al. 2016); for a residual block z + f(z) it is 1 + E|J_f v|^2 / |v|^2.
* **chi_par** of block l: the response of the output's second moment to a rescaling z -> (1 + eps) z of the input,
  chi_par = dK_out / dK_in (PDLT eq. 5.9: chi_par = dK^{(l+1)} / dK^{(l)}), by a forward difference;
* **excess kurtosis** of a unit's preactivation over the ensemble of draws at a fixed input: E[z^4] / E[z^2]^2 - 3
  with the moments pooled over draws and the (exchangeable) units of a layer at each input and spatial position;
* **gradients**: the squared norm of d(u . f(x)) / d theta per weight layer (weights and biases separately) with
  u ~ N(0, 1) per output; its mean over u is the trace of that layer's NTK block, sum_a |d f_a / d theta_l|^2
  (Jacot et al. 2018), so the ensemble mean estimates the per-layer NTK contributions of PDLT §9.4.
"""

from __future__ import annotations

import copy
import math
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SphericalCowError
from .model_map import ModelMap, select_output, weight_of

__all__ = ["Measurements", "draw_models", "measure"]

#: Relative size of the finite-difference steps (float64: truncation ~1e-6 relative, round-off ~1e-10).
FD_STEP = 1e-6


class _Stop(BaseException):
    """Raised inside a hook to end a forward pass once the wanted probe has been captured."""


def _first(t: Any) -> torch.Tensor:
    return select_output(t)[0]


def _forward_first_tensor(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return select_output(type(self).forward(self, *args, **kwargs))[0]


def set_modes(m: nn.Module) -> nn.Module:
    """The doctor's working modes, in place on a copy: eval mode except batch norm (train mode: batch statistics),
    and a forward that returns the analysed tensor (:func:`select_output`) for models returning tuples or dicts."""
    m.eval()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
    if not isinstance(m.__dict__.get("forward"), types.MethodType):
        m.forward = types.MethodType(_forward_first_tensor, m)
    return m


def run_probes(
    model: nn.Module,
    x: torch.Tensor,
    probes: list[tuple[str, str]],
    *,
    perturb: tuple[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    stop_at: int | None = None,
) -> tuple[list[torch.Tensor | None], Any]:
    """Outputs at ``probes`` (copies), optionally replacing probe ``perturb[0]``'s tensor by ``perturb[1](z)``;
    ``stop_at``: end the pass after that probe (returns output ``None``)."""
    mods = dict(model.named_modules())
    got: list[torch.Tensor | None] = [None] * len(probes)
    handles = []

    def handle(k: int, t: torch.Tensor) -> torch.Tensor | None:
        new = None
        if perturb is not None and perturb[0] == k:
            new = perturb[1](t)
            t = new
        got[k] = t.detach().clone()
        if stop_at is not None and k == stop_at:
            raise _Stop
        return new

    for k, (name, where) in enumerate(probes):
        if where == "out":

            def hook(_m, _a, out, k=k):
                if got[k] is not None:
                    return None
                new = handle(k, _first(out))
                if new is None:
                    return None
                return (new, *out[1:]) if isinstance(out, tuple) else new

            handles.append(mods[name].register_forward_hook(hook))
        else:

            def pre(_m, args, k=k):
                if got[k] is not None or not args:
                    return None
                new = handle(k, args[0])
                return None if new is None else (new, *args[1:])

            handles.append(mods[name].register_forward_pre_hook(pre))
    out = None
    try:
        with torch.enable_grad():  # grad mode keeps PyTorch's fused fast paths (which skip submodule hooks) off
            out = model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return got, out


def _resample(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """A copy with each floating parameter redrawn i.i.d. N(mean, std^2) of that tensor (constant tensors kept)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            if p.is_floating_point() and p.numel() > 1:
                mean, std = p.mean(), p.std()
                p.copy_(mean + std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


def _prepare(m: nn.Module) -> nn.Module:
    m = set_modes(m.cpu().double())
    for p in m.parameters():
        p.requires_grad_(p.is_floating_point())
    return m


def draw_models(model: nn.Module, n: int, *, factory: Callable[[], nn.Module] | None, seed: int) -> Iterator[nn.Module]:
    """Draw 0 is (a float64 copy of) ``model``; draws 1..n-1 come from ``factory()`` under
    ``torch.manual_seed(seed * 7919 + i)`` (global RNG restored afterwards) or, without a factory, by resampling
    every parameter tensor i.i.d. Gaussian with its own mean and standard deviation."""
    base = _prepare(copy.deepcopy(model))
    yield base
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 1)
    for i in range(1, n):
        if factory is None:
            yield _resample(base, gen)
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) * 7919 + i)
            try:
                fresh = factory()
            except Exception as e:
                raise SphericalCowError(f"the factory raised {type(e).__name__}: {e}") from None
        got = {k: v.shape for k, v in fresh.state_dict().items()} if isinstance(fresh, nn.Module) else None
        if got != shapes:
            raise SphericalCowError(
                "factory() returns a model whose state_dict differs from the model's in names or shapes"
            )
        yield _prepare(fresh)


@dataclass
class Measurements:
    """Per-draw arrays (axis 0: draws). ``K``/``corr``: (draws, probes); ``chi_perp``/``chi_par``: (draws, blocks);
    ``gain``: (draws, blocks) per-draw ratio K_out / K_in of each block; ``grad``/``grad_bias``: (draws, layers)
    squared gradient norms of weights / other parameters; ``grad_body``: (draws, layers) squared weight-gradient
    norms backpropagated from the readout's input (readout scale removed; the output if there is no readout);
    ``kurt_m2``/``kurt_m4``: per kurtosis probe (each weight
    layer's output), (draws, groups) second and fourth moments pooled over units. ``chi_perp``/``chi_par`` are NaN
    for draws beyond the first ``n_chi`` (the Jacobian passes are the expensive part)."""

    K: np.ndarray
    corr: np.ndarray
    chi_perp: np.ndarray
    chi_par: np.ndarray
    gain: np.ndarray
    grad: np.ndarray
    grad_bias: np.ndarray
    grad_body: np.ndarray
    kurt_m2: list[np.ndarray]
    kurt_m4: list[np.ndarray]
    kurt_names: list[str]
    n_draws: int
    output_scale: float
    notes: list[str] = field(default_factory=list)
    #: per weight layer, (rows, 3) over all draws: each weight row's (one unit's fan-in, :func:`unit_rows`) mean w^2,
    #: mean w^4 and E[w_j^2 w_k^2] (j != k) (:func:`row_moments`), the effective (``w_scale``d) weight
    w_rows: list[np.ndarray] | None = None
    #: per weight layer, the number of entries in a row
    w_row_len: list[int] | None = None
    #: per weight layer, (entries, 2) over all draws: b^2 and b^4 of each effective bias entry (``None``: no bias)
    b_entries: list[np.ndarray | None] | None = None
    #: per weight layer, (draws, groups, channel groups) sums over the inputs feeding one unit of each kurtosis group
    #: (the groups of ``kurt_m2``), S2 = sum x^2, S4 = sum x^4 and S22 = (sum x^2)^2 (:func:`input_sums`); ``None``
    #: where not defined
    in_s2: list[np.ndarray | None] | None = None
    in_s4: list[np.ndarray | None] | None = None
    in_s22: list[np.ndarray | None] | None = None


def pooled_kurtosis(samples: np.ndarray | None, per_sample: int = 1) -> tuple[float, float]:
    """Excess kurtosis about zero, mean(x^4) / mean(x^2)^2 - 3, pooled over every draw's entries (a bias of one entry
    per draw has a kurtosis only across draws), from samples whose first two columns are means of x^2 and x^4 over
    ``per_sample`` entries each (entries, or weight rows), and its standard error under the Gaussian null,
    sqrt(24 / N) for N entries (the sample excess kurtosis of N normal draws; Kendall & Stuart, The Advanced Theory of
    Statistics, vol. 1, §12.19), the SE that a test of "Gaussian" needs: an SE estimated from the data (jackknife,
    delta method) is itself so noisy at small N that it rejects a Gaussian 5-20% of the time at 3 SE (measured for
    12-100 entries). NaN without data or when every entry is zero."""
    if samples is None or samples.shape[0] == 0 or not samples[:, 0].mean() > 0:
        return math.nan, math.nan
    k = float(samples[:, 1].mean() / samples[:, 0].mean() ** 2 - 3.0)
    return k, math.sqrt(24.0 / (samples.shape[0] * per_sample))


def unit_rows(mod: nn.Module, kind: str) -> torch.Tensor:
    """The weight as (units, entries per unit): a linear layer's (out, in) weight or a convolution's
    (out, in / groups, *kernel) filters as they are; a table's looked-up rows for an embedding (its ``padding_idx``
    row, zero and never trained, dropped); otherwise the weight transposed so that rows run along the fan-in where
    the layout is (in, out) (a module computing x @ W), else reshaped as stored."""
    w = weight_of(mod)
    if kind == "embedding":
        pad = getattr(mod, "padding_idx", None)
        if pad is not None and w.shape[0] > 1:
            w = torch.cat([w[:pad], w[pad + 1 :]])
        return w
    if isinstance(mod, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        g = mod.groups  # stored (in, out / g, *k): one output channel's filter is (in / g, *k) within its group
        k = w.shape[2:]
        v = w.reshape(g, w.shape[0] // g, w.shape[1], *k).transpose(1, 2)
        return v.reshape(g * w.shape[1], -1)
    if w.dim() == 2 and hasattr(mod, "in_features") and w.shape == (mod.in_features, mod.out_features):
        if mod.in_features != mod.out_features:
            return w.t()
    return w


def row_moments(w: torch.Tensor, scale: float = 1.0) -> np.ndarray:
    """(rows, 3) per row of ``scale * w`` (a unit's fan-in: a linear layer's weight row, a convolution's flattened
    filter, an embedding vector): mean w^2, mean w^4 and E[w_j^2 w_k^2] (j != k), estimated as
    ((sum w^2)^2 - sum w^4) / (d (d - 1)). The last equals E[w^2]^2 for i.i.d. entries and differs for dependent
    ones: a row of fixed norm r and uniformly random direction (orthogonal init) has r^4 / (d (d + 2)) against
    E[w^2]^2 = r^4 / d^2. NaN for d = 1."""
    rows = (w.detach().double() * scale).reshape(w.shape[0], -1)
    d = rows.shape[1]
    w2 = rows.pow(2)
    s2, s4 = w2.sum(1), w2.pow(2).sum(1)
    m22 = (s2.pow(2) - s4) / (d * (d - 1)) if d > 1 else torch.full_like(s2, math.nan)
    return torch.stack([s2 / d, s4 / d, m22], dim=1).numpy()


def input_sums(
    x: torch.Tensor | None, mod: nn.Module, kind: str, n_ex: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per unit group of :func:`_unit_groups` (example, position) and channel group (columns; one for a linear layer),
    the sums over the inputs that feed one unit, S2 = sum_j x_j^2, S4 = sum_j x_j^4 and S22 = (sum_j x_j^2)^2: a
    linear layer's feature vector; a convolution's patch, padding included (computed as the module's own convolution
    of x^2 and x^4 with a kernel of ones per channel group: units of different groups read different channels).
    ``None`` where the layer is not a linear layer or a (non-transposed) convolution, or x is not a float tensor."""
    if x is None or not x.is_floating_point() or x.numel() == 0:
        return None
    x = x.detach().double()[:n_ex]
    if kind == "linear":
        fan_in = int(mod.in_features)
        if x.dim() < 2 or x.shape[-1] != fan_in:
            return None
        rows = x.reshape(-1, fan_in)
        s2 = rows.pow(2).sum(1, keepdim=True)
        return s2.numpy(), rows.pow(4).sum(1, keepdim=True).numpy(), s2.pow(2).numpy()
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    if kind != "conv" or not isinstance(mod, conv) or x.dim() != 2 + len(mod.kernel_size):
        return None
    ones = torch.ones(mod.groups, mod.in_channels // mod.groups, *mod.kernel_size, dtype=torch.float64)
    with torch.no_grad():
        s2 = mod._conv_forward(x.pow(2), ones, None)
        s4 = mod._conv_forward(x.pow(4), ones, None)

    def per_unit(t: torch.Tensor) -> np.ndarray:  # (examples, groups, *positions) -> (examples * positions, groups)
        return t.movedim(1, -1).reshape(-1, t.shape[1]).numpy()

    return per_unit(s2), per_unit(s4), per_unit(s2.pow(2))


def _feature_dim(z: torch.Tensor, is_conv: bool) -> int:
    return 1 if is_conv and z.dim() >= 3 else z.dim() - 1


def _unit_groups(z: torch.Tensor, is_conv: bool, n_ex: int) -> torch.Tensor:
    """(groups, units): rows are (example, position) groups of exchangeable units (features/channels)."""
    z = z[:n_ex]
    if z.dim() == 1:
        return z.reshape(-1, 1)
    fd = _feature_dim(z, is_conv)
    z = z.movedim(fd, -1)
    return z.reshape(-1, z.shape[-1])


def _ms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean())


def _check_finite(out: Any, what: str) -> None:
    t = _first(out)
    if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
        raise SphericalCowError(f"the model's output holds NaN or inf ({what}); the doctor needs finite outputs")


def measure(
    model: nn.Module,
    x: torch.Tensor,
    mm: ModelMap,
    *,
    n_init: int,
    factory: Callable[[], nn.Module] | None,
    seed: int,
    advance: Callable[[int], None] = lambda n=1: None,
    n_kurt_examples: int = 4,
    n_chi: int = 6,
) -> Measurements:
    """Run every forward/backward measurement on ``n_init`` draws (see the module docstring); the Jacobian
    susceptibilities (two extra passes per block) on the first ``n_chi`` of them."""
    probes = mm.probes
    index = {p: i for i, p in enumerate(probes)}
    kprobes = [(la.name, "out") for la in mm.layers]
    conv_names = {la.name for la in mm.layers if la.kind == "conv"}
    gen = torch.Generator().manual_seed(int(seed) * 104729 + 17)
    K, corr, cperp, cpar, grads, gains, body = [], [], [], [], [], [], []
    m2: list[list[np.ndarray]] = [[] for _ in kprobes]
    m4: list[list[np.ndarray]] = [[] for _ in kprobes]
    notes: list[str] = []
    n_ex = x.shape[0]
    pairs = [(a, a + 1) for a in range(0, n_ex - 1, 2)]
    out_scale = float("nan")
    kmap = [len(probes) + i for i in range(len(kprobes))]
    iprobes = [(la.name, "in") for la in mm.layers]
    imap = [len(probes) + len(kprobes) + i for i in range(len(iprobes))]
    wrows: list[list[np.ndarray]] = [[] for _ in mm.layers]
    row_len = [0 for _ in mm.layers]
    bents: list[list[np.ndarray]] = [[] for _ in mm.layers]
    s2: list[list[np.ndarray]] = [[] for _ in mm.layers]
    s4: list[list[np.ndarray]] = [[] for _ in mm.layers]
    s22: list[list[np.ndarray]] = [[] for _ in mm.layers]
    sums_ok = [True for _ in mm.layers]
    n_k = min(n_kurt_examples, n_ex)
    for d, m in enumerate(draw_models(model, n_init, factory=factory, seed=seed)):
        allz, out = run_probes(m, x, probes + kprobes + iprobes)
        mods = dict(m.named_modules())
        for j, la in enumerate(mm.layers):
            rows = unit_rows(mods[la.name], la.kind)
            row_len[j] = int(math.prod(rows.shape[1:]))
            wrows[j].append(row_moments(rows, la.w_scale))
            b = getattr(mods[la.name], "bias", None)
            if isinstance(b, torch.Tensor):
                b2 = (b.detach().double() * la.b_scale).reshape(-1).pow(2)
                bents[j].append(torch.stack([b2, b2.pow(2)], dim=1).numpy())
        for j, (k, la) in enumerate(zip(imap, mm.layers, strict=True)):
            sums = input_sums(allz[k], mods[la.name], la.kind, n_k) if sums_ok[j] else None
            if sums is None:
                sums_ok[j] = False
            else:
                s2[j].append(sums[0])
                s4[j].append(sums[1])
                s22[j].append(sums[2])
        zs, kz = allz[: len(probes)], [allz[i] for i in kmap]
        _check_finite(out, "the model itself" if d == 0 else f"random draw {d}")
        if d == 0:
            out_scale = _ms(_first(out))
        missing = [probes[i][0] for i, z in enumerate(zs) if z is None]
        if missing:
            raise SphericalCowError(f"layer {missing[0]!r} did not run in the forward pass; cannot probe it")
        K.append([_ms(z) for z in zs])
        row = []
        for z in zs:
            f = z.reshape(n_ex, -1).double() if z.dim() >= 1 and z.shape[0] == n_ex else None
            if f is None or not pairs:
                row.append(float("nan"))
                continue
            vals = [
                float(f[a] @ f[b] / math.sqrt(max(float(f[a] @ f[a]) * float(f[b] @ f[b]), 1e-300))) for a, b in pairs
            ]
            row.append(float(np.mean(vals)))
        corr.append(row)
        for i, z in enumerate(kz):
            g = _unit_groups(z.double(), kprobes[i][0] in conv_names, n_k)
            m2[i].append(g.pow(2).mean(dim=1).numpy())
            m4[i].append(g.pow(4).mean(dim=1).numpy())
        pr, pa, gain = [], [], []
        for b in mm.blocks:
            gain.append(_ms(zs[index[b.dst]]) / max(_ms(zs[index[b.src]]), 1e-300))
            if d >= n_chi:
                pr.append(float("nan"))
                pa.append(float("nan"))
                continue
            i, j = index[b.src], index[b.dst]
            zi, zj = zs[i], zs[j]
            v = torch.randn(zi.shape, generator=gen, dtype=zi.dtype)
            eps = FD_STEP * math.sqrt(_ms(zi)) / math.sqrt(_ms(v))
            if not math.isfinite(eps) or eps == 0:
                pr.append(float("nan"))
                pa.append(float("nan"))
                continue
            zp, _ = run_probes(m, x, probes, perturb=(i, lambda z, v=v, eps=eps: z + eps * v), stop_at=j)
            zs_, _ = run_probes(m, x, probes, perturb=(i, lambda z: z * (1.0 + FD_STEP)), stop_at=j)
            dz = zp[j] - zj
            pr.append(_ms(dz) / (eps * eps * _ms(v)))
            dK = _ms(zs_[j]) - _ms(zj)
            pa.append(dK / (((1.0 + FD_STEP) ** 2 - 1.0) * _ms(zi)))
        gains.append(gain)
        cperp.append(pr)
        cpar.append(pa)
        grads.append(_grad_norms(m, x, mm, gen))
        body.append([w for w, _ in _grad_norms(m, x, mm, gen, at=mm.readout)] if mm.readout else grads[-1])
        advance(1)
    return Measurements(
        K=np.array(K),
        corr=np.array(corr),
        chi_perp=np.array(cperp).reshape(len(K), len(mm.blocks)),
        chi_par=np.array(cpar).reshape(len(K), len(mm.blocks)),
        gain=np.array(gains).reshape(len(K), len(mm.blocks)),
        grad=np.array(grads)[:, :, 0],
        grad_bias=np.array(grads)[:, :, 1],
        grad_body=np.array([[g if isinstance(g, float) else g[0] for g in row] for row in body]),
        kurt_m2=[np.array(a) for a in m2],
        kurt_m4=[np.array(a) for a in m4],
        kurt_names=[p[0] for p in kprobes],
        n_draws=len(K),
        output_scale=out_scale,
        notes=notes,
        w_rows=[np.concatenate(a) for a in wrows],
        w_row_len=row_len,
        b_entries=[np.concatenate(a) if a else None for a in bents],
        in_s2=[np.array(a) if ok and a else None for a, ok in zip(s2, sums_ok, strict=True)],
        in_s4=[np.array(a) if ok and a else None for a, ok in zip(s4, sums_ok, strict=True)],
        in_s22=[np.array(a) if ok and a else None for a, ok in zip(s22, sums_ok, strict=True)],
    )


def _grad_norms(
    m: nn.Module, x: torch.Tensor, mm: ModelMap, gen: torch.Generator, *, at: str | None = None
) -> list[tuple[float, float]]:
    """(weights, other parameters) squared gradient norms of u . f(x) per weight layer; with ``at`` (a module name),
    of u . h(x) for h the input of that module (the readout), so that the readout's scale, a common factor of every
    earlier layer's gradient, drops out (the readout itself then gets zero)."""
    m.zero_grad(set_to_none=True)
    mods = dict(m.named_modules())
    got: list[torch.Tensor] = []
    handle = None
    if at is not None:

        def pre(_m, args):
            if not got and args and isinstance(args[0], torch.Tensor):
                got.append(args[0])

        handle = mods[at].register_forward_pre_hook(pre)
    try:
        out = _first(m(x))
    finally:
        if handle is not None:
            handle.remove()
    target = got[0] if got else out
    u = torch.randn(target.shape, generator=gen, dtype=target.dtype)
    (target * u).sum().backward()
    res = []
    for la in mm.layers:
        w, b = 0.0, 0.0
        for p in mods[la.name].parameters():
            if p.grad is not None:
                g = float(p.grad.double().pow(2).sum())
                if p.dim() >= 2:
                    w += g
                else:
                    b += g
        res.append((w, b))
    m.zero_grad(set_to_none=True)
    return res
