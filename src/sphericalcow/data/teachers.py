"""Teacher networks: the soft committee machine (erf or ReLU) and random deep MLP teachers.

Soft committee machine (Saad & Solla 1995; Goldt et al. 2019 NeurIPS, eq. (1)) with M hidden units on N inputs::

    y = sum_m v_m g(w_m . x / sqrt(N)) + sigma zeta,   x ~ N(0, I_N),  zeta ~ N(0, 1)

with g(u) = erf(u / sqrt(2)) ("erf") or max(0, u) ("relu"), second-layer weights v (default all ones) and output
noise sigma. The teacher weights w_m are drawn N(0, I_N) (so T = w w^T / N -> I), or exactly orthogonal with
|w_m|^2 = N (``orthogonal=True``: T = I exactly). Inputs and labels are float32 by default (training); the weights in
``structure`` are float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..description import MLP
from ..errors import SphericalCowError, check_int, check_positive
from .base import Dataset

__all__ = ["SoftCommitteeTeacher", "committee_teacher", "mlp_teacher", "soft_committee"]

ACTIVATIONS = ("erf", "relu")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _dtype(dtype: Any) -> torch.dtype:
    """``dtype`` as a torch float dtype: torch.float32 / torch.float64 or the strings "float32" / "float64"; the one
    set of forms every data generator accepts."""
    if dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise SphericalCowError(f"dtype={dtype!r} is not allowed; expected 'float32' or 'float64'")


def _seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an int >= 0 (every data generator's seed rule), else a one-line SphericalCowError."""
    return check_int(name, seed, minimum=0)


def committee_activation(name: str, u: torch.Tensor) -> torch.Tensor:
    """g(u): erf(u / sqrt 2) for "erf", max(0, u) for "relu"."""
    if name == "erf":
        return torch.special.erf(u / math.sqrt(2.0))
    if name == "relu":
        return torch.relu(u)
    raise SphericalCowError(f"activation={name!r} is not allowed; expected one of {', '.join(ACTIVATIONS)}")


@dataclass(frozen=True)
class SoftCommitteeTeacher:
    """A soft committee machine teacher: ``w`` (M, N) and ``v`` (M,) float64, activation, output-noise std."""

    w: torch.Tensor
    v: torch.Tensor
    activation: str = "erf"
    noise: float = 0.0

    @property
    def N(self) -> int:
        return int(self.w.shape[1])

    @property
    def M(self) -> int:
        return int(self.w.shape[0])

    @property
    def T(self) -> torch.Tensor:
        """Teacher-teacher overlaps T = w w^T / N (M, M), float64."""
        return self.w @ self.w.T / self.N

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free teacher output sum_m v_m g(w_m . x / sqrt N) of inputs x (P, N), in x's dtype."""
        if x.ndim != 2 or x.shape[1] != self.N:
            raise SphericalCowError(f"inputs of shape {tuple(x.shape)} are not allowed; expected (P, {self.N})")
        u = x @ self.w.T.to(x.dtype) / math.sqrt(self.N)
        return committee_activation(self.activation, u) @ self.v.to(x.dtype)

    def sample(self, P: int, *, seed: int, dtype: Any = "float32") -> Dataset:
        """P fresh samples x ~ N(0, I_N), y = output(x) + noise * zeta."""
        P = check_int("P", P, minimum=1)
        dt = _dtype(dtype)
        g = torch.Generator().manual_seed(_seed(seed))
        x = torch.randn(P, self.N, generator=g, dtype=torch.float64)
        y = self.output(x)
        if self.noise > 0:
            y = y + self.noise * torch.randn(P, generator=g, dtype=torch.float64)
        return Dataset(x.to(dt), y.to(dt), self.structure(), name=f"soft committee teacher M={self.M}, N={self.N}")

    def online(
        self, *, seed: int, batch: int = 1, dtype: Any = "float64"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """An endless stream of fresh (x, y) minibatches of ``batch`` samples (online SGD: every sample is new)."""
        batch = check_int("batch", batch, minimum=1)
        dt = _dtype(dtype)
        g = torch.Generator().manual_seed(_seed(seed))
        while True:
            x = torch.randn(batch, self.N, generator=g, dtype=torch.float64)
            y = self.output(x)
            if self.noise > 0:
                y = y + self.noise * torch.randn(batch, generator=g, dtype=torch.float64)
            yield x.to(dt), y.to(dt)

    def structure(self) -> dict[str, Any]:
        return {
            "teacher": self,
            "w": self.w,
            "v": self.v,
            "T": self.T,
            "activation": self.activation,
            "noise": self.noise,
            "N": self.N,
            "M": self.M,
        }


def committee_teacher(
    *,
    N: int,
    M: int,
    seed: int,
    activation: str = "erf",
    v: Any = None,
    noise: float = 0.0,
    orthogonal: bool = False,
) -> SoftCommitteeTeacher:
    """A random soft committee machine teacher (module docstring). ``v``: M second-layer weights (default ones)."""
    N = check_int("N", N, minimum=1)
    M = check_int("M", M, minimum=1)
    if activation not in ACTIVATIONS:
        raise SphericalCowError(f"activation={activation!r} is not allowed; expected one of {', '.join(ACTIVATIONS)}")
    noise = check_positive("noise", noise, allow_zero=True)
    if orthogonal and M > N:
        raise SphericalCowError(f"orthogonal=True needs M <= N; got M={M}, N={N}")
    g = torch.Generator().manual_seed(_seed(seed))
    w = torch.randn(M, N, generator=g, dtype=torch.float64)
    if orthogonal:
        q, _ = torch.linalg.qr(w.T)
        w = math.sqrt(N) * q.T
    if v is None:
        vv = torch.ones(M, dtype=torch.float64)
    else:
        vv = torch.as_tensor(v, dtype=torch.float64).reshape(-1)
        if vv.numel() != M or not torch.isfinite(vv).all():
            raise SphericalCowError(f"v has {vv.numel()} entries (or non-finite ones); expected {M} finite numbers")
    return SoftCommitteeTeacher(w=w, v=vv, activation=activation, noise=noise)


def soft_committee(
    *,
    N: int,
    M: int,
    P: int,
    seed: int,
    activation: str = "erf",
    v: Any = None,
    noise: float = 0.0,
    orthogonal: bool = False,
    dtype: Any = "float32",
) -> Dataset:
    """P samples from a random soft committee teacher: ``structure`` holds the teacher (``"teacher"``), its weights
    ``"w"`` (M, N), ``"v"``, ``"T"`` (float64), activation and noise. The teacher is drawn from ``seed``, the samples
    from ``seed + 1``."""
    teacher = committee_teacher(N=N, M=M, seed=seed, activation=activation, v=v, noise=noise, orthogonal=orthogonal)
    return teacher.sample(P, seed=_seed(seed) + 1, dtype=dtype)


def mlp_teacher(arch: MLP, *, P: int, seed: int, noise: float = 0.0, dtype: Any = "float32") -> Dataset:
    """A random deep MLP teacher from a :class:`~sphericalcow.description.MLP` description: the network
    ``arch.build(seed=seed)`` (float64) labels P inputs x ~ N(0, I_{d_in}) (drawn from ``seed + 1``), plus Gaussian
    output noise of std ``noise``. ``structure["model"]`` is the teacher module, ``structure["arch"]`` its description.
    y has shape (P,) for d_out = 1, else (P, d_out)."""
    if not isinstance(arch, MLP):
        raise SphericalCowError(f"arch={arch!r} is not allowed; expected a sphericalcow MLP description")
    P = check_int("P", P, minimum=1)
    noise = check_positive("noise", noise, allow_zero=True)
    dt = _dtype(dtype)
    model = arch.build(seed=_seed(seed), dtype=torch.float64)
    g = torch.Generator().manual_seed(_seed(seed) + 1)
    x = torch.randn(P, arch.d_in, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    if noise > 0:
        y = y + noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    if arch.d_out == 1:
        y = y.reshape(-1)
    return Dataset(
        x.to(dt), y.to(dt), {"model": model, "arch": arch, "noise": noise, "seed": _seed(seed)}, name="MLP teacher"
    )
