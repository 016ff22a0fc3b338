"""Infinite-width NNGP and NTK kernels of an MLP description, exact, blocked and float64.

Recursions (depth L hidden layers, readout l = L+1; sigma-expectations under the layer-l kernel):

* NNGP (Roberts & Yaida 2022, eqs. 4.117-4.118; Lee et al. 2018, eq. 5):
  K^{(1)} = C_b + C_W x.x'/n_0,   K^{(l+1)} = C_b + C_W <sigma(z) sigma(z')>_{K^{(l)}}   (z, z' at inputs x, x').
* NTK, NTK parametrization (Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 11 with biases):
  Theta^{(1)} = K^{(1)},   Theta^{(l+1)} = K^{(l+1)} + C_W <sigma'(z) sigma'(z')>_{K^{(l)}} Theta^{(l)}.
* NTK, standard parametrization (W ~ N(0, C_W/fan_in) and b ~ N(0, C_b) are the trained parameters; Sohl-Dickstein
  et al. 2020, "On the infinite width limit of neural networks with a standard parameterization", §2):
  dz_i/dW_ij = sigma_j, so the weights of layer l+1 contribute  n_l <sigma(z) sigma(z')>  and every bias 1:
  Theta^{(1)} = x.x' + 1,   Theta^{(l+1)} = n_l (K^{(l+1)} - C_b)/C_W + 1 + C_W <sigma' sigma'> Theta^{(l)}.
  This kernel grows with the widths n_l (it has no infinite-width limit: the learning rate has to shrink like
  1/n), so it uses the description's widths; in NTK parametrization widths do not enter.
* Residual MLP (z^{(l+1)} = z^{(l)} + W sigma(z^{(l)}) + b for the hidden-to-hidden layers): the branch is
  independent of z^{(l)} with mean zero, so K^{(l+1)} = K^{(l)} + C_b + C_W <sigma(z) sigma(z')> and
  Theta^{(l+1)} = Theta^{(l)} (1 + C_W <sigma' sigma'>) + (branch parameters' term).

The readout kernel is the same for every output (Theta_{ab} = Theta delta_{ab} at infinite width).

Routes for the two-dimensional Gaussian expectations of each entry (``method``):

* ``"closed"``: scale-invariant activations (relu, leaky_relu, linear, abs; Cho & Saul 2009 arc-cosine kernel
  with theta = arccos rho) in vectorised torch; erf and sin through their closed forms in
  :mod:`sphericalcow.activations`.  Exact to rounding.
* ``"interpolation"`` (other activations): per layer, the expectation as a function of
  (log K_aa, log K_bb, theta = arccos rho) is tabulated with the accurate quadrature of
  :mod:`sphericalcow.theory.gaussian` at Chebyshev-Lobatto points and evaluated as a Chebyshev series.  In theta
  the functions are smooth also for kinked activations (their (1 - rho)^{k+1/2} terms are powers of theta), so the
  series converges geometrically; the number of points doubles until the trailing coefficients fall below
  ``1e-12`` relative, in each direction (one point in log K when all inputs have the same variance).  Measured
  against per-entry quadrature: see the tests (<= 1e-11 relative).
* ``"quadrature"``: per-entry quadrature (~1 ms per entry and layer); ``"auto"`` uses it for activations without
  closed forms when there are at most 5000 distinct entries (64 when all inputs share one variance): cheaper than
  a table, which is used above that.

Cost of the tables: ~33-65 points in theta when every input has the same variance (normalise the inputs, e.g. to
the sphere, for speed: ~0.1 s per layer); with varying variances also 9-33 points in each log K direction (the
Chebyshev coefficients in log K decay only ~40x per order: 17 points already for a 1.45x range of variances),
i.e. 5000-36000 quadratures, 15-35 s per layer and kernel on one core.  Variances spanning more than ~70x exceed
33 points and raise (use method="quadrature").

Memory: entries are computed in blocks of ``block_size`` x ``block_size`` through all layers, written into the
outputs (only the upper triangle when x2 is None), so the peak is the outputs plus ~20 blocks per worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..activations import Activation
from ..errors import SphericalCowError, check_int
from ..progress import progress_bar
from .gaussian import expect_cross, expect_dcross, expect_dmean, expect_dsq, expect_mean, expect_sq
from .recursions import as_float64_array

__all__ = ["KERNELS", "KERNEL_METHODS", "Kernels", "kernels", "nngp", "ntk"]

KERNELS = ("nngp", "ntk")
KERNEL_METHODS = ("auto", "closed", "interpolation", "quadrature")
_TOL = 1e-12
_SAME_VARIANCE = 1e-13  # log K spread below which all inputs share one variance (1-D tables)
_SNAP = 1.0 - 8 * np.finfo(np.float64).eps
_MAX_THETA_POINTS = 1025
_MAX_S_POINTS = 33
_DIRECT_ENTRIES = 5000  # below this many distinct entries per layer, per-entry quadrature beats building a table
_DIRECT_ENTRIES_CONST = 64  # the same when every input has the same variance (1-D tables of 33-65 points)


@dataclass(frozen=True)
class Kernels:
    """The kernels asked for, each an (N1, N2) tensor (``None`` when not asked for); ``k["ntk"]`` also works."""

    nngp: torch.Tensor | None = None
    ntk: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in KERNELS:
            raise KeyError(name)
        value = getattr(self, name)
        if value is None:
            raise KeyError(f"{name} was not computed; pass get=({name!r}, ...)")
        return value


# ----------------------------------------------------------------------------------------------------------
# Pair maps: (K_aa, K_bb, K_ab) blocks -> (<sigma sigma>, <sigma' sigma'>) blocks
# ----------------------------------------------------------------------------------------------------------

PairMap = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]


def _correlation(qa: torch.Tensor, qb: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """rho = K_ab / sqrt(K_aa K_bb) clipped to [-1, 1], 0 where a variance is 0, and snapped to +-1 within 8 ulps:
    there the inputs are identical up to rounding, and arccos (slope 1/sqrt(1 - rho^2)) would turn one ulp of
    rounding into 1e-8 errors; for truly distinct inputs that close the snap stays below that same floor."""
    ra = torch.where(qa > 0, qa.rsqrt(), torch.zeros_like(qa))  # rsqrt(0) = inf is never selected
    rb = torch.where(qb > 0, qb.rsqrt(), torch.zeros_like(qb))
    rho = torch.mul(K, ra[:, None]).mul_(rb[None, :]).clamp_(-1.0, 1.0)
    rho.masked_fill_(rho >= _SNAP, 1.0)
    rho.masked_fill_(rho <= -_SNAP, -1.0)
    return rho


def _scale_invariant_map(ap: float, am: float) -> PairMap:
    """sigma = ap z (z > 0), am z (z < 0) = ap relu(z) - am relu(-z); with J(rho) = (sin t + (pi - t) cos t)/(2 pi):
    <sigma sigma> = sqrt(K_aa K_bb) [(ap^2 + am^2) J(rho) - 2 ap am J(-rho)],
    <sigma' sigma'> = [(ap^2 + am^2)(pi - t) + 2 ap am t] / (2 pi)  (Cho & Saul 2009, eq. 6, n = 0, 1)."""
    p2, pm = ap * ap + am * am, 2.0 * ap * am
    two_pi = 2.0 * math.pi

    def pair(qa: torch.Tensor, qb: torch.Tensor, K: torch.Tensor, need_dot: bool):
        rho = _correlation(qa, qb, K)
        if ap == am:
            E = K * (ap * ap)
            return E, (torch.full_like(K, ap * ap) if need_dot else None)
        theta = torch.acos(rho)
        sin_t = torch.mul(rho, rho).neg_().add_(1.0).sqrt_()
        pi_minus = torch.neg(theta).add_(math.pi)
        # p2 (sin + (pi - t) rho) - pm (sin - t rho) = (p2 - pm) sin + rho (p2 (pi - t) + pm t)
        dot = torch.mul(pi_minus, p2).add_(theta, alpha=pm)
        E = torch.addcmul(sin_t.mul_(p2 - pm), rho, dot)
        E.mul_(torch.sqrt(qa)[:, None] / two_pi).mul_(torch.sqrt(qb)[None, :])
        return E, (dot.div_(two_pi) if need_dot else None)

    return pair


def _scale_invariant_step(ap: float, am: float):
    """One fused layer (K, Theta) -> (K', Theta') for scale-invariant activations, NTK parametrization, no residual:
    with d = ap^2 + am^2 - 2 ap am and theta = arccos rho (the formulas of :func:`_scale_invariant_map` regrouped),
    2 pi <sigma sigma> / sqrt(K_aa K_bb) = d (sin t + rho (pi - t)) + 2 ap am pi rho,
    2 pi <sigma' sigma'> = d (pi - t) + 2 ap am pi.  About a dozen tensor operations per entry instead of ~25.
    rho is scaled by (1 + 8 eps) before clipping, which snaps |rho| within 8 ulps of 1 to +-1 (see _correlation)."""
    p2, pm = ap * ap + am * am, 2.0 * ap * am
    d = p2 - pm
    one = torch.ones((), dtype=torch.float64)
    bump = 1.0 + 8 * float(np.finfo(np.float64).eps)

    def step(qa, qb, K, T, cw: float, cb: float, want_ntk: bool):
        rho = torch.mul(K, (qa.rsqrt() * bump)[:, None]).mul_(qb.rsqrt()[None, :]).clamp_(-1.0, 1.0)
        pim = torch.rsub(torch.acos(rho), math.pi)
        E = torch.addcmul(one, rho, rho, value=-1.0).sqrt_().addcmul_(rho, pim)
        if pm:
            E.mul_(d).add_(rho, alpha=pm * math.pi)
            scale = cw / (2.0 * math.pi)
        else:
            scale = cw * d / (2.0 * math.pi)
        E.mul_((qa.sqrt() * scale)[:, None]).mul_(qb.sqrt()[None, :])
        if cb:
            E.add_(cb)
        if not want_ntk:
            return E, None
        T_new = torch.addcmul(E, pim, T, value=cw * d / (2.0 * math.pi))
        if pm:
            T_new.add_(T, alpha=cw * pm / 2.0)
        return E, T_new

    return step


def _numpy_closed_map(act: Activation) -> PairMap:
    cross, dcross = act.closed_form("cross"), act.closed_form("dcross")

    def pair(qa: torch.Tensor, qb: torch.Tensor, K: torch.Tensor, need_dot: bool):
        a, b, k = qa.numpy()[:, None], qb.numpy()[None, :], K.numpy()
        k = np.clip(k, -np.sqrt(a * b), np.sqrt(a * b))
        E = torch.from_numpy(np.asarray(cross(a, b, k), dtype=np.float64))
        D = torch.from_numpy(np.asarray(dcross(a, b, k), dtype=np.float64)) if need_dot else None
        return E, D

    return pair


def _quadrature_map(act: Activation) -> PairMap:
    def pair(qa: torch.Tensor, qb: torch.Tensor, K: torch.Tensor, need_dot: bool):
        a, b, k = qa.numpy()[:, None], qb.numpy()[None, :], K.numpy()
        k = np.clip(k, -np.sqrt(a * b), np.sqrt(a * b))
        a, b = np.broadcast_to(a, k.shape), np.broadcast_to(b, k.shape)
        E = torch.from_numpy(np.asarray(expect_cross(act, a, b, k, method="quadrature"), dtype=np.float64))
        D = None
        if need_dot:
            D = torch.from_numpy(np.asarray(expect_dcross(act, a, b, k, method="quadrature"), dtype=np.float64))
        return E, D

    return pair


def _lobatto(n: int) -> np.ndarray:
    """Chebyshev-Lobatto points cos(pi k/(n-1)), k = 0..n-1 (descending from 1 to -1)."""
    return np.cos(np.pi * np.arange(n) / (n - 1))


def _cheb_coeffs(values: np.ndarray, axis: int) -> np.ndarray:
    """Chebyshev coefficients from values at Lobatto points along ``axis`` (DCT-I)."""
    v = np.moveaxis(values, axis, -1)
    n = v.shape[-1]
    if n == 1:
        return np.moveaxis(v.copy(), -1, axis)
    ext = np.concatenate([v, v[..., -2:0:-1]], axis=-1)
    c = np.fft.rfft(ext, axis=-1).real[..., :n] / (n - 1)
    c[..., 0] /= 2.0
    c[..., -1] /= 2.0
    return np.moveaxis(c, -1, axis)


def _converged(coeffs: np.ndarray, axis: int) -> bool:
    c = np.abs(np.moveaxis(coeffs, axis, 0))
    scale = max(float(c.max()), 1e-300)
    n = c.shape[0]
    tail = c[max(n - 3, 1) :]
    return float(tail.max()) <= _TOL * scale


def _log_variance_range(q_all: np.ndarray) -> tuple[float, float]:
    """(min, max) of log K over the nonzero variances (0, 0 when there are none)."""
    pos = q_all[q_all > 0]
    if not pos.size:
        return 0.0, 0.0
    return float(np.log(pos.min())), float(np.log(pos.max()))


class _ChebTable:
    """<sigma sigma> (and <sigma' sigma'>) for one layer as a Chebyshev series in (y_a, y_b, x):
    y = affine map of log K to [-1, 1] over the variances present, x = 2 theta / pi - 1."""

    def __init__(self, act: Activation, q_all: np.ndarray, need_dot: bool):
        self.act, self.need_dot = act, need_dot
        self.s_lo, self.s_hi = _log_variance_range(q_all)
        self.const = self.s_hi - self.s_lo <= _SAME_VARIANCE
        fns = [self._table_fn("cross")] + ([self._table_fn("dcross")] if need_dot else [])
        self.coeffs = [self._fit(fn) for fn in fns]

    def _table_fn(self, kind: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        f = expect_cross if kind == "cross" else expect_dcross
        memo: dict[tuple[float, float, float], float] = {}  # nested Lobatto grids: refinement reuses values

        def values(s_nodes: np.ndarray, x_nodes: np.ndarray) -> np.ndarray:
            # values[a, b, c] at log-variances s_a, s_b and x_c; symmetric in (a, b)
            n_s, n_x = s_nodes.size, x_nodes.size
            ia, ib = np.triu_indices(n_s)
            keys = [
                (round(s_nodes[i], 12), round(s_nodes[j], 12), round(x, 12))
                for i, j in zip(ia, ib, strict=True)
                for x in x_nodes
            ]
            todo = [k for k in keys if k not in memo]
            if todo:
                arr = np.array(todo)
                A, B = np.exp(arr[:, 0]), np.exp(arr[:, 1])
                C = np.sqrt(A * B) * np.cos(np.pi * (arr[:, 2] + 1.0) / 2.0)
                memo.update(zip(todo, np.asarray(f(self.act, A, B, C), dtype=np.float64).tolist(), strict=True))
            vals = np.array([memo[k] for k in keys]).reshape(ia.size, n_x)
            out = np.empty((n_s, n_s, n_x))
            out[ia, ib] = vals
            out[ib, ia] = vals
            return out

        return values

    def _s_nodes(self, n: int) -> np.ndarray:
        if n == 1:
            return np.array([0.5 * (self.s_lo + self.s_hi)])
        return 0.5 * (self.s_lo + self.s_hi) + 0.5 * (self.s_hi - self.s_lo) * _lobatto(n)

    def _fit(self, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        n_s = 1 if self.const else 9
        n_x = 33
        while True:
            vals = fn(self._s_nodes(n_s), _lobatto(n_x))
            c = _cheb_coeffs(vals, axis=2)
            if n_s > 1:
                c = _cheb_coeffs(_cheb_coeffs(c, axis=0), axis=1)
            ok_x = _converged(c, axis=2)
            ok_s = n_s == 1 or (_converged(c, axis=0))
            if ok_x and ok_s:
                return c
            if (not ok_x and n_x >= _MAX_THETA_POINTS) or (not ok_s and n_s >= _MAX_S_POINTS):
                raise SphericalCowError(
                    f"the kernel of {self.act.label} does not resolve to {_TOL:g} with {n_x} x {n_s} table points "
                    f"(variances {math.exp(self.s_lo):.4g}..{math.exp(self.s_hi):.4g}); use method='quadrature'"
                )
            if not ok_x:
                n_x = 2 * n_x - 1
            if not ok_s:
                n_s = 2 * n_s - 1

    def _y(self, q: torch.Tensor) -> torch.Tensor:
        if self.const:
            return torch.zeros_like(q)
        s = torch.log(q.clamp_min(1e-300))
        return ((2.0 * s - (self.s_lo + self.s_hi)) / (self.s_hi - self.s_lo)).clamp_(-1.0, 1.0)

    @staticmethod
    def _cheb_basis(y: torch.Tensor, n: int) -> torch.Tensor:
        T = torch.empty(y.shape[0], n, dtype=torch.float64)
        T[:, 0] = 1.0
        if n > 1:
            T[:, 1] = y
        for k in range(2, n):
            T[:, k] = 2.0 * y * T[:, k - 1] - T[:, k - 2]
        return T

    def __call__(self, qa: torch.Tensor, qb: torch.Tensor, K: torch.Tensor, need_dot: bool):
        rho = _correlation(qa, qb, K)
        x2 = torch.acos(rho).mul_(4.0 / math.pi).sub_(2.0)  # 2 x, x = 2 theta / pi - 1
        outs = []
        for c in self.coeffs if need_dot else self.coeffs[:1]:
            Ta = Tb = None
            if not self.const:  # the two tables may have converged at different sizes
                Ta, Tb = self._cheb_basis(self._y(qa), c.shape[0]), self._cheb_basis(self._y(qb), c.shape[0])
            outs.append(self._clenshaw(c, x2, Ta, Tb))
        return outs[0], (outs[1] if need_dot else None)

    @staticmethod
    def _clenshaw(c: np.ndarray, x2: torch.Tensor, Ta, Tb) -> torch.Tensor:
        n = c.shape[2]
        ct = torch.from_numpy(np.ascontiguousarray(c))

        def coef(k: int):
            if Ta is None:
                return float(ct[0, 0, k])
            return Ta @ ct[:, :, k] @ Tb.T

        b1 = torch.zeros_like(x2)
        b2 = torch.zeros_like(x2)
        for k in range(n - 1, 0, -1):
            # b_k = c_k + 2 x b_{k+1} - b_{k+2}
            b2.neg_().addcmul_(x2, b1).add_(coef(k))
            b1, b2 = b2, b1
        # result = c_0 + x b_1 - b_2
        return b1.mul_(x2).mul_(0.5).sub_(b2).add_(coef(0))


def _pair_map(act: Activation, method: str, q_all: np.ndarray, need_dot: bool, n_entries: int) -> PairMap:
    closed = act.has_closed_form("cross") and act.has_closed_form("dcross")
    if method == "closed" and not closed:
        raise SphericalCowError(f"activation {act.label!r} has no closed-form kernel; use method='auto'")
    if method in ("auto", "closed") and closed:
        si = act.scale_invariant
        return _scale_invariant_map(*si) if si is not None else _numpy_closed_map(act)
    if method == "auto":  # per-entry quadrature when it is cheaper than building the table (~33-65 or ~5000 points)
        s_lo, s_hi = _log_variance_range(q_all)
        const = s_hi - s_lo <= _SAME_VARIANCE
        if n_entries <= (_DIRECT_ENTRIES_CONST if const else _DIRECT_ENTRIES):
            return _quadrature_map(act)
    if method == "quadrature":
        return _quadrature_map(act)
    return _ChebTable(act, q_all, need_dot)


# ----------------------------------------------------------------------------------------------------------
# Per-layer bookkeeping
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    """Transition l -> l+1 (l = 1..L): the variances of layer l for both input sets and how Theta updates."""

    q1: torch.Tensor
    q2: torch.Tensor
    residual: bool
    fan_in: int
    pair: PairMap | None = None
    mean1: torch.Tensor | None = None  # <sigma>, <sigma'> at the variances (for zero-variance inputs)
    mean2: torch.Tensor | None = None
    dmean1: torch.Tensor | None = None
    dmean2: torch.Tensor | None = None
    fast: Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None = None  # fused step (scale-invariant)
    s0: float = 0.0  # sigma(0), sigma'(0)
    ds0: float = 0.0


def _variances(arch, x: np.ndarray, standard: bool, want_ntk: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Diagonal K^{(l)}_{aa} and Theta^{(l)}_{aa}, l = 1..L+1, with overflow reported by layer."""
    act = arch.activation
    q = arch.cb + arch.cw * np.einsum("ij,ij->i", x, x) / x.shape[1]
    th = (np.einsum("ij,ij->i", x, x) + 1.0) if standard else q.copy()
    qs, ths = [q], [th]
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(1, arch.depth + 1):
            residual = arch.residual and layer < arch.depth
            sq = expect_sq(act, q)
            chi = arch.cw * expect_dsq(act, q)
            branch = arch.widths[layer - 1] * sq + 1.0 if standard else arch.cb + arch.cw * sq
            q_new = arch.cb + arch.cw * sq
            if residual:
                q_new = q + q_new
                th = th * (1.0 + chi) + branch
            else:
                th = (q_new if not standard else branch) + chi * th
            q = q_new
            bad = not (np.isfinite(q).all() and (np.isfinite(th).all() or not want_ntk))
            if bad:
                what = "kernel" if not np.isfinite(q).all() else "NTK"
                raise SphericalCowError(
                    f"the {what} overflows float64 at layer {layer + 1} (cw={arch.cw:.4g}, depth={arch.depth}); "
                    "lower cw or depth, or normalise the inputs"
                )
            qs.append(q)
            ths.append(th)
    return qs, ths


def _as_inputs(x, name: str, d_in: int) -> np.ndarray:
    arr = as_float64_array(x, name)
    if arr.shape[1] != d_in:
        raise SphericalCowError(f"{name} has {arr.shape[1]} features; the architecture expects d_in={d_in}")
    if arr.shape[0] == 0:
        raise SphericalCowError(f"{name} has no rows; expected at least one input")
    return arr


def _check_get(get: str | Sequence[str]) -> tuple[str, ...]:
    if not isinstance(get, str | list | tuple):
        raise SphericalCowError(f"get={get!r} is not allowed; expected 'nngp', 'ntk' or a tuple of them")
    items = (get,) if isinstance(get, str) else tuple(get)
    if not items:
        raise SphericalCowError("get is empty; allowed: 'nngp', 'ntk' or both")
    for g in items:
        if g not in KERNELS:
            raise SphericalCowError(f"get={g!r} is not a kernel; allowed: 'nngp', 'ntk'")
    return items


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype in (torch.float64, "float64"):
        return torch.float64
    if dtype in (torch.float32, "float32"):
        return torch.float32
    raise SphericalCowError(f"dtype={dtype!r} is not allowed; allowed: float64, float32")


def kernels(
    arch,
    x1,
    x2=None,
    get: str | Sequence[str] = ("nngp", "ntk"),
    *,
    dtype: Any = torch.float64,
    method: str = "auto",
    block_size: int = 256,
    progress: bool | None = None,
) -> Kernels | torch.Tensor:
    """NNGP and/or NTK of the readout of ``arch`` (an :class:`~sphericalcow.MLP`) between inputs ``x1`` and ``x2``.

    ``x1`` (N1, d_in) and ``x2`` (N2, d_in) are NumPy arrays or tensors; ``x2=None`` means x1 (and only the upper
    triangle is computed).  Returns :class:`Kernels` (``.nngp``, ``.ntk``, (N1, N2) tensors), or the one tensor
    when ``get`` is a string.  ``dtype`` float32 stores the outputs in float32 (computed in float64).  ``method``:
    see the module docstring.  ``progress``: a progress bar over blocks (default: on when N1 N2 >= 4e6).
    The recursions and their sources are in the module docstring.
    """
    from ..description import MLP

    if not isinstance(arch, MLP):
        raise SphericalCowError(f"arch is a {type(arch).__name__}; expected an sc.MLP description")
    single = isinstance(get, str)
    items = _check_get(get)
    out_dtype = _check_dtype(dtype)
    if method not in KERNEL_METHODS:
        raise SphericalCowError(f"method={method!r} is not allowed; allowed: {', '.join(KERNEL_METHODS)}")
    block_size = check_int("block_size", block_size, minimum=16)
    a = _as_inputs(x1, "x1", arch.d_in)
    symmetric = x2 is None
    b = a if symmetric else _as_inputs(x2, "x2", arch.d_in)
    want_ntk = "ntk" in items
    standard = arch.parametrization == "standard"

    qs1, ths1 = _variances(arch, a, standard, want_ntk)
    qs2, ths2 = (qs1, ths1) if symmetric else _variances(arch, b, standard, want_ntk)
    if out_dtype == torch.float32:  # |K_ab| <= sqrt(K_aa K_bb), the same for Theta: the diagonals bound everything
        big = float(torch.finfo(torch.float32).max)
        for name, diag in (("NNGP", qs1[-1]), ("NNGP", qs2[-1]), ("NTK", ths1[-1]), ("NTK", ths2[-1])):
            if (name == "NTK" and not want_ntk) or (name == "NNGP" and "nngp" not in items):
                continue
            if float(np.max(diag)) > big:
                raise SphericalCowError(
                    f"the {name} reaches {float(np.max(diag)):.3g}, beyond float32 (max {big:.3g}); use dtype=float64"
                )
    act = arch.activation
    layers: list[_Layer] = []
    for layer in range(1, arch.depth + 1):
        q1, q2 = qs1[layer - 1], qs2[layer - 1]
        lay = _Layer(
            torch.from_numpy(q1), torch.from_numpy(q2), arch.residual and layer < arch.depth, arch.widths[layer - 1]
        )
        n_entries = a.shape[0] * (a.shape[0] + 1) // 2 if symmetric else a.shape[0] * b.shape[0]
        lay.pair = _pair_map(act, method, np.concatenate([q1, q2]), want_ntk, n_entries)
        si = act.scale_invariant
        if si is not None and method in ("auto", "closed") and not standard and not lay.residual:
            lay.fast = _scale_invariant_step(*si)
        if (q1 == 0).any() or (q2 == 0).any():
            lay.mean1, lay.mean2 = (
                torch.from_numpy(np.asarray(expect_mean(act, q), dtype=np.float64)) for q in (q1, q2)
            )
            lay.dmean1, lay.dmean2 = (
                torch.from_numpy(np.asarray(expect_dmean(act, q), dtype=np.float64)) for q in (q1, q2)
            )
            lay.s0, lay.ds0 = float(act(np.zeros(1))[0]), float(act.derivative(np.zeros(1))[0])
        layers.append(lay)

    n1, n2 = a.shape[0], b.shape[0]
    out_k = torch.empty((n1, n2), dtype=out_dtype) if "nngp" in items else None
    out_t = torch.empty((n1, n2), dtype=out_dtype) if want_ntk else None
    xa, xb = torch.from_numpy(a), torch.from_numpy(b)
    starts1 = list(range(0, n1, block_size))
    starts2 = list(range(0, n2, block_size))
    blocks = [(i, j) for i in starts1 for j in starts2 if not symmetric or j >= i]
    show = progress if progress is not None else n1 * n2 >= 4_000_000

    def work(ij: tuple[int, int]) -> None:
        i0, j0 = ij
        i1, j1 = min(i0 + block_size, n1), min(j0 + block_size, n2)
        K, T = _block(arch, layers, xa[i0:i1], xb[j0:j1], slice(i0, i1), slice(j0, j1), want_ntk, standard, symmetric)
        for out, val in ((out_k, K), (out_t, T)):
            if out is None:
                continue
            out[i0:i1, j0:j1] = val
            if symmetric and j0 != i0:
                out[j0:j1, i0:i1] = val.T

    # Blocks run on a pool of Python threads, each op single-threaded (torch releases the GIL): on a busy machine
    # intra-op parallelism over small blocks stalls at every op's barrier (measured: 7 ms per op under load).
    n_threads = torch.get_num_threads()
    with progress_bar(len(blocks), "kernel blocks", enabled=bool(show)) as advance:
        if n_threads == 1 or len(blocks) == 1:
            for ij in blocks:
                work(ij)
                advance(1)
        else:
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(max_workers=n_threads) as pool:
                    for _ in pool.map(work, blocks):
                        advance(1)
            finally:
                torch.set_num_threads(n_threads)
    if symmetric:  # the diagonal blocks: make them exactly symmetric
        for out in (out_k, out_t):
            if out is not None:
                for i0 in starts1:
                    i1 = min(i0 + block_size, n1)
                    blk = out[i0:i1, i0:i1]
                    blk.copy_(torch.triu(blk) + torch.triu(blk, 1).T)
    res = Kernels(nngp=out_k, ntk=out_t)
    return res[items[0]] if single else res


def _block(arch, layers: list[_Layer], xa, xb, sa: slice, sb: slice, want_ntk: bool, standard: bool, symmetric: bool):
    dot = xa @ xb.T
    K = (arch.cw / xa.shape[1]) * dot + arch.cb
    T = (dot + 1.0) if standard else K.clone()
    cw, cb = arch.cw, arch.cb
    diagonal = symmetric and sa == sb
    for lay in layers:
        qa, qb = lay.q1[sa], lay.q2[sb]
        if diagonal:  # the same inputs: K_aa is the variance from the one-input recursion
            K.diagonal().copy_(qa)
        if lay.fast is not None and lay.mean1 is None:
            K, T = lay.fast(qa, qb, K, T, cw, cb, want_ntk)
            continue
        E, D = lay.pair(qa, qb, K, want_ntk)
        if lay.mean1 is not None:
            E, D = _zero_variance_fix(lay, sa, sb, E, D)
        K_branch = E.mul(cw).add_(cb)
        if want_ntk:
            chi = D.mul_(cw)
            branch = E.mul(lay.fan_in).add_(1.0) if standard else K_branch
            if lay.residual:
                T = T.addcmul(T, chi).add_(branch)
            else:
                T = torch.addcmul(branch, chi, T)
        K = K.add(K_branch) if lay.residual else K_branch
    return K, (T if want_ntk else None)


def _zero_variance_fix(lay: _Layer, sa: slice, sb: slice, E, D):
    """Rows/columns with K_aa = 0 (z = 0 exactly): <sigma(0) sigma(z')> = sigma(0) <sigma>, same for sigma'."""
    za, zb = lay.q1[sa] == 0, lay.q2[sb] == 0
    if not (za.any() or zb.any()):
        return E, D
    E, D = E.clone(), (D.clone() if D is not None else None)
    ma, mb, da, db = lay.mean1[sa], lay.mean2[sb], lay.dmean1[sa], lay.dmean2[sb]
    E[za, :] = lay.s0 * mb[None, :].expand(int(za.sum()), -1)
    E[:, zb] = ma[:, None].expand(-1, int(zb.sum())) * lay.s0
    if D is not None:
        D[za, :] = lay.ds0 * db[None, :].expand(int(za.sum()), -1)
        D[:, zb] = da[:, None].expand(-1, int(zb.sum())) * lay.ds0
    return E, D


def nngp(arch, x1, x2=None, **kwargs: Any) -> torch.Tensor:
    """The infinite-width NNGP kernel K^{(L+1)} of ``arch``'s readout, (N1, N2) float64; see :func:`kernels`."""
    return kernels(arch, x1, x2, get="nngp", **kwargs)


def ntk(arch, x1, x2=None, **kwargs: Any) -> torch.Tensor:
    """The infinite-width NTK Theta^{(L+1)} of ``arch``'s readout, (N1, N2) float64; see :func:`kernels`."""
    return kernels(arch, x1, x2, get="ntk", **kwargs)
