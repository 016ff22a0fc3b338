"""Model factories for the doctor's tests: healthy models and models with planted defects.

Each factory takes no arguments (as ``cow doctor module:factory`` calls it) and draws its weights from torch's
global RNG, so the doctor's seeded ensemble gets independent initialisations. ``INPUT_SHAPES`` gives the
per-example input shape of each factory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

D_IN = 16


def _mlp(depth: int, width: int, act: type[nn.Module], cw: float | None, d_in: int = D_IN) -> nn.Sequential:
    """``depth`` hidden Linear+act layers and a Linear readout; W ~ N(0, cw / fan_in), b = 0 (``cw=None``: PyTorch's
    default nn.Linear init, W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. C_W = 1/3)."""
    layers: list[nn.Module] = []
    n = d_in
    for _ in range(depth):
        layers += [nn.Linear(n, width), act()]
        n = width
    layers.append(nn.Linear(n, 1))
    model = nn.Sequential(*layers)
    if cw is not None:
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, math.sqrt(cw / m.in_features))
                    m.bias.zero_()
    return model


# ------------------------------------------------------------------------------------------ healthy
def critical_tanh() -> nn.Module:
    """tanh MLP at its critical point C_W = 1, C_b = 0; depth 8, width 128."""
    return _mlp(8, 128, nn.Tanh, 1.0)


def critical_relu() -> nn.Module:
    """ReLU MLP at criticality (C_W = 2, He init); depth 6, width 128."""
    return _mlp(6, 128, nn.ReLU, 2.0)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (Kaiming init), max pooling and two dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.act = nn.ReLU()
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def small_cnn() -> nn.Module:
    """A small CNN for 3x16x16 inputs with PyTorch's Kaiming (He) normal init."""
    return SmallCNN()


def transformer_layer() -> nn.Module:
    """One nn.TransformerEncoderLayer (d_model 32, 4 heads, feed-forward 64, ReLU, batch_first) with PyTorch's init."""
    return nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, batch_first=True)


class ResidualStack(nn.Module):
    """z -> z + alpha * W2 relu(W1 z) repeated; W1 ~ N(0, 1/n) (linear input), W2 ~ N(0, 2/n) (He, ReLU input)."""

    def __init__(self, n_blocks: int, width: int, alpha: float = 1.0, d_in: int = D_IN) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(_ResBlock(width, alpha) for _ in range(n_blocks))
        self.out = nn.Linear(width, 1)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, math.sqrt(1.0 / m.in_features))
                    m.bias.zero_()
            for b in self.blocks:
                b.fc2.weight.normal_(0.0, math.sqrt(2.0 / width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inp(x)
        for b in self.blocks:
            z = b(z)
        return self.out(z)


class _ResBlock(nn.Module):
    def __init__(self, width: int, alpha: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(width, width)
        self.alpha = alpha

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.alpha * self.fc2(self.act(self.fc1(z)))


def residual_scaled() -> nn.Module:
    """20 residual blocks with branch multiplier 1/sqrt(20): variance grows by (1 + 1/20)^20 ~ e."""
    return ResidualStack(20, 64, alpha=1 / math.sqrt(20))


# ------------------------------------------------------------------------------------------ defects
def too_small_init() -> nn.Module:
    """tanh MLP with C_W = 0.25 (std 0.5/sqrt(fan_in)): chi_perp = 1/4 per layer, deep in the ordered phase."""
    return _mlp(12, 64, nn.Tanh, 0.25)


def too_large_init() -> nn.Module:
    """tanh MLP with C_W = 4 (std 2/sqrt(fan_in)): chi_perp(K*) = 1.36, chaotic over 30 layers."""
    return _mlp(30, 64, nn.Tanh, 4.0)


def too_large_relu() -> nn.Module:
    """ReLU MLP with C_W = 4: chi = C_W/2 = 2 per layer, the signal's variance doubles at each of 12 layers."""
    return _mlp(12, 64, nn.ReLU, 4.0)


def deep_tanh_default() -> nn.Module:
    """40-layer tanh MLP with PyTorch's default nn.Linear init (C_W = 1/3: ordered phase), no residual connections."""
    return _mlp(40, 64, nn.Tanh, None)


def residual_unscaled() -> nn.Module:
    """20 residual blocks without branch scaling: the variance doubles per block (2^20 overall)."""
    return ResidualStack(20, 64, alpha=1.0)


def huge_aspect_ratio() -> nn.Module:
    """ReLU MLP at criticality (C_W = 2) with depth 24 and width 8: sum 1/width = 3, predicted kurtosis 15 * 3 = 45."""
    return _mlp(24, 8, nn.ReLU, 2.0)


# ------------------------------------------------------------------------------ reviewer's cases (issue 8 review)
class FuncMLP(nn.Module):
    """Dense layers in an nn.ModuleList with F.relu called in forward (no activation modules); W ~ N(0, cw/fan_in)."""

    def __init__(self, depth: int, width: int, cw: float) -> None:
        super().__init__()
        self.ls = nn.ModuleList(nn.Linear(D_IN if i == 0 else width, width) for i in range(depth))
        self.out = nn.Linear(width, 1)
        with torch.no_grad():
            for lin in [*self.ls, self.out]:
                lin.weight.normal_(0.0, math.sqrt(cw / lin.in_features))
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.ls:
            x = F.relu(lin(x))
        return self.out(x)


def func_relu_he() -> nn.Module:
    """Healthy: 10 ReLU layers (F.relu) at He init C_W = 2, width 128."""
    return FuncMLP(10, 128, 2.0)


def func_relu_bad() -> nn.Module:
    """Defect: 20 ReLU layers (F.relu) at C_W = 0.5: chi = C_W/2 = 1/4 per layer, L/xi = 19 log 4 = 26 > 6."""
    return FuncMLP(20, 128, 0.5)


class FuncCNN(nn.Module):
    """Four 3x3 convolutions with F.relu / F.max_pool2d in forward and a dense readout (PyTorch default init)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        x = F.max_pool2d(torch.relu(self.c3(x)), 2)
        return self.fc(x.flatten(1))


def func_cnn() -> nn.Module:
    """A CNN whose activations are all function calls (for the model map), inputs 3x16x16."""
    return FuncCNN()


class EluMLP(nn.Module):
    """Dense layers with F.elu (outside the activation registry) between them."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(D_IN, 32)
        self.b = nn.Linear(32, 32)
        self.c = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(F.elu(self.b(F.elu(self.a(x)))))


def elu_mlp() -> nn.Module:
    return EluMLP()


def seq_relu_he() -> nn.Module:
    """Healthy: 10 ReLU layers, Kaiming-normal hidden layers, PyTorch-default readout (C_W = 1/3)."""
    layers: list[nn.Module] = []
    n = D_IN
    for _ in range(10):
        lin = nn.Linear(n, 128)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
        n = 128
    layers.append(nn.Linear(128, 1))
    return nn.Sequential(*layers)


def he_zero_readout() -> nn.Module:
    """Healthy: seq_relu_he with a zero readout (standard practice; every hidden gradient is 0 at init)."""
    m = seq_relu_he()
    with torch.no_grad():
        m[-1].weight.zero_()
        m[-1].bias.zero_()
    return m


def he_small_readout() -> nn.Module:
    """Healthy: seq_relu_he with the readout scaled by 0.01 (a common factor of every earlier layer's gradient)."""
    m = seq_relu_he()
    with torch.no_grad():
        m[-1].weight.mul_(0.01)
    return m


def default_relu4() -> nn.Module:
    """PyTorch default init, 3 ReLU hidden layers: chi_perp = C_W/2 = 1/6 per block over 2 blocks (readout excluded),
    L/xi = 2 log 6 = 3.6: mildly ordered, within the trainable range L < 6 xi."""
    return _mlp(3, 128, nn.ReLU, None)


class CNN8(nn.Module):
    """Eight 3x3 convolutions x 32 channels with ReLU modules and a dense readout, He init (inputs 3x8x8)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1) for i in range(8))
        self.acts = nn.ModuleList(nn.ReLU() for _ in range(8))
        self.fc = nn.Linear(32 * 8 * 8, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c, a in zip(self.convs, self.acts, strict=True):
            x = a(c(x))
        return self.fc(x.flatten(1))


def cnn8_he() -> nn.Module:
    """Healthy: 8 conv layers x 32 channels at He init (sum 1/channels = 0.25, but fan-in 288 per layer)."""
    return CNN8()


def _norm_mlp(norm: type[nn.Module], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    n = D_IN
    for _ in range(10):
        layers += [nn.Linear(n, 64), norm(64), act()]
        n = 64
    layers.append(nn.Linear(64, 1))
    return nn.Sequential(*layers)


def bn_mlp() -> nn.Module:
    """Healthy in training: 10 x (Linear, BatchNorm1d, ReLU) with PyTorch's default init."""
    return _norm_mlp(nn.BatchNorm1d, nn.ReLU)


def ln_mlp() -> nn.Module:
    """Healthy: 10 x (Linear, LayerNorm, Tanh) with PyTorch's default init (C_W = 1/3 is harmless here)."""
    return _norm_mlp(nn.LayerNorm, nn.Tanh)


def softplus_mlp() -> nn.Module:
    """Shallow softplus MLP (softplus has no critical initialisation)."""
    return nn.Sequential(nn.Linear(D_IN, 64), nn.Softplus(), nn.Linear(64, 64), nn.Softplus(), nn.Linear(64, 1))


def deep_softplus() -> nn.Module:
    """Defect: 20 softplus layers at C_W = 0.25: chi_perp = C_W <sigmoid(z)^2> < 1/4, ordered (L/xi > 19 log 4)."""
    return _mlp(20, 64, nn.Softplus, 0.25)


def deep_sigmoid() -> nn.Module:
    """Defect: 12 sigmoid layers, PyTorch default init (C_W = 1/3): chi_perp <= C_W/16 = 1/48 per layer, ordered."""
    return _mlp(12, 64, nn.Sigmoid, None)


def transformer4() -> nn.Module:
    """Healthy: a 4-layer post-norm nn.TransformerEncoder (d_model 64, 4 heads), PyTorch's init."""
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(D_IN, 32)
        self.b = nn.Linear(32, 32)
        self.c = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.c(torch.relu(self.b(torch.relu(self.a(x))))), "aux": x}


def dict_out() -> nn.Module:
    """A model returning a dict (the doctor analyses its first tensor, 'logits')."""
    return DictOut()


INPUT_SHAPES = {
    "critical_tanh": (D_IN,),
    "critical_relu": (D_IN,),
    "small_cnn": (3, 16, 16),
    "transformer_layer": (6, 32),
    "residual_scaled": (D_IN,),
    "too_small_init": (D_IN,),
    "too_large_init": (D_IN,),
    "too_large_relu": (D_IN,),
    "deep_tanh_default": (D_IN,),
    "residual_unscaled": (D_IN,),
    "huge_aspect_ratio": (D_IN,),
    "func_relu_he": (D_IN,),
    "func_relu_bad": (D_IN,),
    "func_cnn": (3, 16, 16),
    "elu_mlp": (D_IN,),
    "seq_relu_he": (D_IN,),
    "he_zero_readout": (D_IN,),
    "he_small_readout": (D_IN,),
    "default_relu4": (D_IN,),
    "cnn8_he": (3, 8, 8),
    "bn_mlp": (D_IN,),
    "ln_mlp": (D_IN,),
    "softplus_mlp": (D_IN,),
    "deep_softplus": (D_IN,),
    "deep_sigmoid": (D_IN,),
    "transformer4": (6, 64),
    "dict_out": (D_IN,),
}
