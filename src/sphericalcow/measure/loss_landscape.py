"""Loss-landscape slices of any ``torch.nn.Module``: 1-D and 2-D slices along random directions, and the linear
interpolation between two models. The model is never mutated: losses are evaluated with ``functional_call`` on
copies of its parameters and buffers, in the chosen BatchNorm/dropout mode (dropout masks fixed by ``seed``).

A slice is L(theta + alpha d1 [+ beta d2]) for directions d in parameter space (Goodfellow, Vinyals & Saxe 2015,
"Qualitatively characterizing neural network optimization problems", ICLR; Li, Xu, Taylor, Studer & Goldstein 2018,
"Visualizing the Loss Landscape of Neural Nets", NeurIPS). Directions (:data:`DIRECTIONS`):

* ``"gaussian"``: i.i.d. N(0, 1) entries, the whole vector rescaled to |d| = |theta| (so alpha = 1 is a step as
  large as the weights themselves);
* ``"filter_normalized"`` (Li et al. 2018, sec. 4): i.i.d. N(0, 1) entries, then each filter (slice along the first
  axis of a weight with >= 2 dimensions: an output unit of a Linear layer, an output channel of a convolution)
  rescaled to the norm of the same filter of theta, d_{i,j} <- d_{i,j} |theta_{i,j}| / |d_{i,j}|; one-dimensional
  parameters (biases, BatchNorm scales) get d = 0 unless ``include_1d`` (then each is rescaled as one filter). This
  removes the scale invariance of ReLU/BatchNorm networks, so slices of different networks can be compared;
* ``"orthogonal"``: Gaussian vectors made exactly orthogonal to theta and to each other (Gram-Schmidt), each
  rescaled to |theta|: moves along them leave |theta| unchanged to first order, and 2-D slices have orthogonal axes.

The loss is the mean over all examples, sum_b n_b L_b / N over the batches (as in :mod:`.hessian`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from sphericalcow.errors import SphericalCowError, check_int
from sphericalcow.measure.hessian import LossFn, _batch_size, _cast, _Data, _Functional, resolve_loss
from sphericalcow.progress import progress_bar

__all__ = [
    "DIRECTIONS",
    "Interpolation",
    "LossSlice1D",
    "LossSlice2D",
    "interpolate",
    "loss_slice_1d",
    "loss_slice_2d",
    "random_directions",
]

DIRECTIONS = ("gaussian", "filter_normalized", "orthogonal")

Direction = dict[str, torch.Tensor]


class _Evaluator:
    """Mean loss over all examples at arbitrary parameter values (the selected ones), without touching the model."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: str | LossFn,
        data: Any,
        params: str | Sequence[str] | None,
        mode: str,
        dtype: torch.dtype | None,
        seed: int,
    ) -> None:
        self.f = _Functional(model, params, mode, dtype, seed)
        self.loss_fn = resolve_loss(loss_fn)
        self.data = _Data(data)

    def __call__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None) -> float:
        total, n = 0.0, 0.0
        saved = self.f.buffers
        if buffers is not None:
            self.f.buffers = buffers
        try:
            with torch.no_grad():
                for i, (x, y) in enumerate(self.data):
                    x = _cast(x, self.f.dtype).to(self.f.device) if isinstance(x, torch.Tensor) else x
                    y = _cast(y, self.f.dtype).to(self.f.device)
                    nb = float(_batch_size(x))
                    total += nb * float(self.loss_fn(self.f.forward(params, x, i), y))
                    n += nb
        finally:
            self.f.buffers = saved
        return total / n


def _norm(d: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in d.values()))


def _dot(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[n].double() * b[n].double()).sum()) for n in a)


def _directions_for(
    theta: dict[str, torch.Tensor], n: int, kind: str, seed: int, include_1d: bool
) -> list[dict[str, torch.Tensor]]:
    if kind not in DIRECTIONS:
        raise SphericalCowError(f"direction kind={kind!r} is not allowed; expected one of {', '.join(DIRECTIONS)}")
    gen = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    tnorm = _norm(theta)
    if tnorm == 0:
        raise SphericalCowError("the selected parameters are all zero; normalised directions need |theta| > 0")
    out: list[dict[str, torch.Tensor]] = []
    for _ in range(n):
        d = {k: torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) for k, t in theta.items()}
        if kind == "filter_normalized":
            for k, t in theta.items():
                if t.ndim >= 2:
                    tn = t.reshape(t.shape[0], -1).norm(dim=1)
                    dn = d[k].reshape(t.shape[0], -1).norm(dim=1)
                    d[k] = (d[k].reshape(t.shape[0], -1) * (tn / dn)[:, None]).reshape(t.shape)
                elif include_1d:
                    d[k] = d[k] * (t.norm() / d[k].norm())
                else:
                    d[k] = torch.zeros_like(t)
        else:
            if kind == "orthogonal":
                for _ in range(2):  # Gram-Schmidt twice against theta and the earlier directions
                    for b in [theta, *out]:
                        c = _dot(d, b) / _dot(b, b)
                        d = {k: d[k] - c * b[k] for k in d}
            s = tnorm / _norm(d)
            d = {k: v * s for k, v in d.items()}
        out.append(d)
    return out


def random_directions(
    model: nn.Module,
    n: int = 1,
    kind: str = "filter_normalized",
    *,
    params: str | Sequence[str] | None = None,
    seed: int = 0,
    include_1d: bool = False,
) -> list[Direction]:
    """``n`` random directions in the space of the selected parameters (names -> tensors shaped like them, in the
    parameters' dtype); see the module docstring for the three kinds."""
    check_int("n", n, minimum=1)
    names = _Functional(model, params, "eval", None, seed).names
    theta = {k: p.detach() for k, p in model.named_parameters() if k in set(names)}
    return _directions_for(theta, n, kind, seed, include_1d)


def _grid(values: Any, name: str, default: np.ndarray) -> np.ndarray:
    if values is None:
        return default
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise SphericalCowError(f"{name} must be a non-empty list of finite numbers; got {values!r}")
    return a


def _resolve_dirs(
    ev: _Evaluator, given: str | Sequence[Direction] | Direction, n: int, seed: int, include_1d: bool
) -> list[dict[str, torch.Tensor]]:
    theta = ev.f.theta
    if isinstance(given, str):
        return _directions_for(theta, n, given, seed, include_1d)
    dirs = [given] if isinstance(given, dict) else list(given)
    if len(dirs) != n:
        raise SphericalCowError(f"{len(dirs)} directions given; expected {n}")
    out = []
    for d in dirs:
        if set(d) != set(theta):
            missing = sorted(set(theta) ^ set(d))
            raise SphericalCowError(f"direction keys differ from the selected parameters at {missing[0]!r}")
        for k, t in theta.items():
            if tuple(d[k].shape) != tuple(t.shape):
                raise SphericalCowError(f"direction {k!r} has shape {tuple(d[k].shape)}; expected {tuple(t.shape)}")
        out.append({k: d[k].detach().to(ev.f.dtype) for k in theta})
    return out


@dataclass
class LossSlice1D:
    """L(theta + alpha d) at each of ``alphas``; ``center_loss`` = L(theta)."""

    alphas: np.ndarray
    losses: np.ndarray
    center_loss: float
    kind: str
    direction: Direction

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "losses": self.losses.tolist(),
            "center_loss": self.center_loss,
            "kind": self.kind,
        }

    def plot(self, title: str = "") -> Figure:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.plot(self.alphas, self.losses, "-o", ms=3)
        ax.set_xlabel(f"alpha ({self.kind} direction)")
        ax.set_ylabel("loss")
        ax.set_title(title or "1-D loss slice")
        fig.tight_layout()
        return fig


@dataclass
class LossSlice2D:
    """L(theta + alpha d1 + beta d2): ``losses[i, j]`` at (``alphas[i]``, ``betas[j]``)."""

    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray
    center_loss: float
    kind: str
    directions: list[Direction]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "betas": self.betas.tolist(),
            "losses": self.losses.tolist(),
            "center_loss": self.center_loss,
            "kind": self.kind,
        }

    def plot(self, title: str = "", levels: int = 20) -> Figure:
        fig = Figure(figsize=(5, 4.2))
        ax = fig.subplots()
        cs = ax.contour(self.alphas, self.betas, self.losses.T, levels=levels)
        ax.clabel(cs, fontsize=6)
        ax.plot([0], [0], "k+")
        ax.set_xlabel("alpha (d1)")
        ax.set_ylabel("beta (d2)")
        ax.set_title(title or f"2-D loss slice ({self.kind})")
        fig.tight_layout()
        return fig


def loss_slice_1d(
    model: nn.Module,
    loss_fn: str | LossFn,
    data: Any,
    *,
    direction: str | Direction = "filter_normalized",
    alphas: Any = None,
    params: str | Sequence[str] | None = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    include_1d: bool = False,
    progress: bool = False,
) -> LossSlice1D:
    """The 1-D slice L(theta + alpha d) (Goodfellow et al. 2015; Li et al. 2018). ``direction``: a kind from
    :data:`DIRECTIONS` (drawn with ``seed``) or a dict of tensors shaped like the selected parameters.
    ``alphas`` default: 41 points in [-1, 1]."""
    ev = _Evaluator(model, loss_fn, data, params, mode, dtype, seed)
    a = _grid(alphas, "alphas", np.linspace(-1.0, 1.0, 41))
    (d,) = _resolve_dirs(ev, direction, 1, seed, include_1d)
    th = ev.f.theta
    losses = np.empty(len(a))
    with progress_bar(len(a), "loss slice 1-D", enabled=progress) as adv:
        for i, al in enumerate(a):
            losses[i] = ev({k: th[k] + float(al) * d[k] for k in th})
            adv(1)
    kind = direction if isinstance(direction, str) else "given"
    return LossSlice1D(a, losses, ev(th), kind, d)


def loss_slice_2d(
    model: nn.Module,
    loss_fn: str | LossFn,
    data: Any,
    *,
    directions: str | Sequence[Direction] = "filter_normalized",
    alphas: Any = None,
    betas: Any = None,
    params: str | Sequence[str] | None = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    include_1d: bool = False,
    progress: bool = False,
) -> LossSlice2D:
    """The 2-D slice L(theta + alpha d1 + beta d2) on the grid ``alphas`` x ``betas`` (default 21 x 21 in
    [-1, 1]^2). ``directions``: a kind from :data:`DIRECTIONS` (two drawn with ``seed``) or two dicts."""
    ev = _Evaluator(model, loss_fn, data, params, mode, dtype, seed)
    a = _grid(alphas, "alphas", np.linspace(-1.0, 1.0, 21))
    b = _grid(betas, "betas", np.linspace(-1.0, 1.0, 21))
    d1, d2 = _resolve_dirs(ev, directions, 2, seed, include_1d)
    th = ev.f.theta
    losses = np.empty((len(a), len(b)))
    with progress_bar(len(a) * len(b), "loss slice 2-D", enabled=progress) as adv:
        for i, al in enumerate(a):
            for j, be in enumerate(b):
                losses[i, j] = ev({k: th[k] + float(al) * d1[k] + float(be) * d2[k] for k in th})
                adv(1)
    kind = directions if isinstance(directions, str) else "given"
    return LossSlice2D(a, b, losses, ev(th), kind, [d1, d2])


@dataclass
class Interpolation:
    """L((1 - alpha) theta_a + alpha theta_b) at each of ``alphas`` (0: model a, 1: model b). ``barrier`` is the
    largest excess of the path's loss over the straight line between the end points (Frankle et al. 2020's
    instability; 0 for a convex path), over the alphas in [0, 1]."""

    alphas: np.ndarray
    losses: np.ndarray
    loss_a: float
    loss_b: float

    @property
    def barrier(self) -> float:
        inside = (self.alphas >= 0) & (self.alphas <= 1)
        if not inside.any():
            return float("nan")
        line = (1 - self.alphas[inside]) * self.loss_a + self.alphas[inside] * self.loss_b
        return float(max(0.0, np.max(self.losses[inside] - line)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "alphas": self.alphas.tolist(),
            "losses": self.losses.tolist(),
            "loss_a": self.loss_a,
            "loss_b": self.loss_b,
            "barrier": self.barrier,
        }

    def plot(self, title: str = "") -> Figure:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.plot(self.alphas, self.losses, "-o", ms=3)
        ax.set_xlabel("alpha: (1 - alpha) theta_a + alpha theta_b")
        ax.set_ylabel("loss")
        ax.set_title(title or "linear interpolation")
        fig.tight_layout()
        return fig


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: str | LossFn,
    data: Any,
    *,
    alphas: Any = None,
    mode: str = "eval",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    interpolate_buffers: bool = True,
    progress: bool = False,
) -> Interpolation:
    """Loss along the straight line theta(alpha) = (1 - alpha) theta_a + alpha theta_b between two models of the same
    architecture (Goodfellow, Vinyals & Saxe 2015, sec. 2; ``alphas`` default 21 points in [0, 1]; values outside
    extrapolate). Floating-point buffers (BatchNorm running statistics) are interpolated the same way when
    ``interpolate_buffers`` (else model a's are used); integer buffers are model a's. Neither model is mutated."""
    ev = _Evaluator(model_a, loss_fn, data, None, mode, dtype, seed)
    names = ev.f.names
    pb = dict(model_b.named_parameters())
    for k in names:
        if k not in pb or tuple(pb[k].shape) != tuple(ev.f.theta[k].shape):
            raise SphericalCowError(
                f"model_b has no parameter {k!r} of shape {tuple(ev.f.theta[k].shape)}; expected the same architecture"
            )
    theta_b = {k: _cast(pb[k].detach(), ev.f.dtype) for k in names}
    bb = dict(model_b.named_buffers())
    if set(bb) != set(ev.f.buffers):
        raise SphericalCowError("model_a and model_b have different buffers; expected the same architecture")
    buf_b = {k: _cast(v.detach(), ev.f.dtype) for k, v in bb.items()}
    a = _grid(alphas, "alphas", np.linspace(0.0, 1.0, 21))
    th = ev.f.theta
    losses = np.empty(len(a))

    def bufs(al: float) -> dict[str, torch.Tensor] | None:
        if not interpolate_buffers:
            return None
        return {k: ((1 - al) * v + al * buf_b[k]) if v.is_floating_point() else v for k, v in ev.f.buffers.items()}

    with progress_bar(len(a), "interpolation", enabled=progress) as adv:
        for i, al in enumerate(a):
            al = float(al)
            losses[i] = ev({k: (1 - al) * th[k] + al * theta_b[k] for k in th}, bufs(al))
            adv(1)
    loss_a = ev(th)
    loss_b = ev(theta_b, bufs(1.0) if interpolate_buffers else None)
    return Interpolation(a, losses, loss_a, loss_b)
