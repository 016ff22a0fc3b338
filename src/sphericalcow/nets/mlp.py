"""PyTorch modules for :class:`sphericalcow.MLP` in NTK and standard parametrization.

Initialisation (Roberts & Yaida 2022, eq. 2.19): Var W^{(l)} = C_W / n_{l-1}, Var b^{(l)} = C_b.
NTK parametrization (Jacot et al. 2018, eq. 1): z = sqrt(C_b) beta + sqrt(C_W / n_{l-1}) W x with W, beta ~ N(0, 1).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..description import MLP


class NTKLinear(nn.Module):
    """Dense layer in NTK parametrization: y = sqrt(C_b) * bias + sqrt(C_W / fan_in) * x @ weight.T."""

    def __init__(self, fan_in: int, fan_out: int, cw: float, cb: float, *, dtype: Any = None, device: Any = None):
        super().__init__()
        self.in_features, self.out_features = fan_in, fan_out
        self.w_scale = math.sqrt(cw / fan_in)
        self.b_scale = math.sqrt(cb)
        self.weight = nn.Parameter(torch.empty(fan_out, fan_in, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(fan_out, dtype=dtype, device=device))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0, generator=generator)
            self.bias.normal_(0.0, 1.0, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight * self.w_scale, self.bias * self.b_scale)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, w_scale={self.w_scale:.4g}, b_scale={self.b_scale:.4g}"


class _Block(nn.Module):
    """One hidden layer; its output is the preactivation z^{(l+1)} (the residual sum when residual)."""

    def __init__(self, dense: nn.Module, act: nn.Module | None, residual: bool):
        super().__init__()
        self.dense, self.act, self.residual = dense, act, residual

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.act is None:  # the input layer
            return self.dense(z)
        out = self.dense(self.act(z))
        return z + out if self.residual else out


class MLPNet(nn.Module):
    """An MLP built from a description; ``layers.i`` output z^{(i+1)}, ``readout`` outputs z^{(L+1)}."""

    def __init__(self, arch: MLP, *, dtype: Any = None, device: Any = None):
        super().__init__()
        self.arch = arch
        sizes = (arch.d_in, *arch.widths)
        blocks = []
        for i in range(arch.depth):
            dense = _dense(arch, sizes[i], sizes[i + 1], dtype, device)
            blocks.append(_Block(dense, None if i == 0 else arch.activation.module(), arch.residual and i > 0))
        self.layers = nn.ModuleList(blocks)
        self.readout = _dense(arch, sizes[-1], arch.d_out, dtype, device)
        self.act = arch.activation.module()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for m in [*(b.dense for b in self.layers), self.readout]:
            _init(m, self.arch, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x
        for block in self.layers:
            z = block(z)
        return self.readout(self.act(z))


def _dense(arch: MLP, fan_in: int, fan_out: int, dtype: Any, device: Any) -> nn.Module:
    if arch.parametrization == "ntk":
        return NTKLinear(fan_in, fan_out, arch.cw, arch.cb, dtype=dtype, device=device)
    return nn.Linear(fan_in, fan_out, dtype=dtype, device=device)


def _init(m: nn.Module, arch: MLP, generator: torch.Generator | None) -> None:
    if isinstance(m, NTKLinear):
        m.reset_parameters(generator)
        return
    assert isinstance(m, nn.Linear)
    with torch.no_grad():
        m.weight.normal_(0.0, math.sqrt(arch.cw / m.in_features), generator=generator)
        # draw then scale (also at C_b = 0) so one seed gives the same network in both parametrizations
        m.bias.normal_(0.0, 1.0, generator=generator).mul_(math.sqrt(arch.cb))


def build_mlp(arch: MLP, *, seed: int | None = None, dtype: Any = None, device: Any = None) -> MLPNet:
    """Build and initialise the module; the same ``seed`` gives the same weights on the same device."""
    dtype = dtype or torch.get_default_dtype()
    net = MLPNet(arch, dtype=dtype, device=device)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device or "cpu")
        gen.manual_seed(int(seed))
    net.reset_parameters(gen)
    return net
