"""Infinite-width kernel recursions (the NNGP of an MLP, layer by layer).

Roberts & Yaida (2022), eq. (4.118):  K^{(l+1)}_{ab} = C_b + C_W <sigma(z_a) sigma(z_b)>_{K^{(l)}}, with the first
layer K^{(1)}_{ab} = C_b + C_W x_a . x_b / n_0 (eq. 4.117). The diagonal (one input) closes on itself; a pair of
inputs needs the two-dimensional Gaussian expectation at correlation rho = K_ab / sqrt(K_aa K_bb).
Residual MLP z^{(l+1)} = z^{(l)} + W sigma(z^{(l)}) + b: the branch is independent of z^{(l)} and has mean zero, so
K^{(l+1)} = K^{(l)} + C_b + C_W <sigma sigma>_{K^{(l)}} (cf. Roberts & Yaida §6.4 with xi = gamma = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..activations import Activation, activation
from ..errors import SphericalCowError
from .gaussian import expect_cross, expect_sq


def as_float64_array(x, name: str = "x") -> np.ndarray:
    """Inputs as a finite float64 array of shape (N, d)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise SphericalCowError(f"{name} has shape {arr.shape}; expected (N, d_in)")
    if not np.isfinite(arr).all():
        raise SphericalCowError(f"{name} contains NaN or inf; expected finite values")
    return arr


def input_kernel(x1: np.ndarray, x2: np.ndarray, cw: float, cb: float) -> np.ndarray:
    """K^{(1)}_{ab} = C_b + C_W x_a . x_b / n_0 (Roberts & Yaida eq. 4.117)."""
    return cb + cw * (x1 @ x2.T) / x1.shape[1]


def next_kernel(act: Activation, cw: float, cb: float, K: np.ndarray, *, residual: bool = False) -> np.ndarray:
    """One layer of the recursion for a symmetric (N, N) kernel matrix over N inputs."""
    d = np.diag(K).copy()
    E = expect_cross(act, d[:, None], d[None, :], K)
    np.fill_diagonal(E, expect_sq(act, d))
    out = cb + cw * E
    return K + out if residual else out


def variance_recursion(
    act: str | Activation, cw: float, cb: float, K1, n_layers: int, *, residual: bool = False
) -> np.ndarray:
    """K^{(1)}, ..., K^{(n_layers)} for one input, vectorised over an array of starting values ``K1``.

    Returns an array of shape (n_layers, *K1.shape).
    """
    act = activation(act)
    K = np.asarray(K1, dtype=np.float64)
    out = np.empty((n_layers, *K.shape))
    for i in range(n_layers):
        out[i] = K
        if i + 1 < n_layers:
            nxt = cb + cw * expect_sq(act, K)
            K = K + nxt if residual else nxt
    return out


@dataclass(frozen=True)
class KernelProfile:
    """Per-layer NNGP kernels of an MLP over N inputs: ``K[l-1]`` is K^{(l)}, l = 1..L+1 (the last is the readout)."""

    K: np.ndarray  # (L+1, N, N)

    @property
    def layers(self) -> np.ndarray:
        return np.arange(1, self.K.shape[0] + 1)

    def variance(self, a: int = 0) -> np.ndarray:
        return self.K[:, a, a]

    def correlation(self, a: int = 0, b: int = 1) -> np.ndarray:
        return self.K[:, a, b] / np.sqrt(self.K[:, a, a] * self.K[:, b, b])


def kernel_profile(arch, x) -> KernelProfile:
    """Layer-by-layer NNGP kernel of ``arch`` (an :class:`~sphericalcow.MLP`) on inputs ``x`` of shape (N, d_in).

    Layer l = 1..L are the hidden preactivations, l = L+1 the readout (never residual).
    """
    x = as_float64_array(x)
    if x.shape[1] != arch.d_in:
        raise SphericalCowError(f"x has {x.shape[1]} features; the architecture expects d_in={arch.d_in}")
    K = input_kernel(x, x, arch.cw, arch.cb)
    out = [K]
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(1, arch.depth + 1):
            residual = arch.residual and layer < arch.depth
            K = next_kernel(arch.activation, arch.cw, arch.cb, K, residual=residual)
            if not np.isfinite(K).all():
                raise SphericalCowError(
                    f"the kernel overflows float64 at layer {layer + 1} (cw={arch.cw:.4g}, depth={arch.depth}); "
                    "lower cw or depth, or normalise the inputs"
                )
            out.append(K)
    res = np.stack(out)
    return KernelProfile(res)
