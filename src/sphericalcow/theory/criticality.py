"""Criticality of the infinite-width kernel recursion: fixed points, susceptibilities, depth scales, phases.

Conventions of Roberts & Yaida, *The Principles of Deep Learning Theory* (2022), chapter 5:

* single-input recursion  K' = f(K) = C_b + C_W <sigma(z)^2>_K                                     (eq. 5.1)
* parallel susceptibility chi_par(K) = d f / d K = C_W <z sigma(z) sigma'(z)>_K / K                 (eq. 5.9, after
  integrating by parts: d/dK <F(z)>_K = <F(z)(z^2 - K)>_K / (2 K^2))
* perpendicular susceptibility chi_perp(K) = C_W <sigma'(z)^2>_K                                  (eq. 5.10)
* depth scales xi = 1 / |log chi| (perturbations grow or decay like chi^l = exp(+-l/xi)); infinite at chi = 1.
* phase (Poole et al. 2016; Schoenholz et al. 2017, eq. 5): ordered if chi_perp < 1 at the fixed point
  (nearby inputs converge), chaotic if chi_perp > 1, critical on chi_perp = 1. The book's criticality asks for
  chi_par = chi_perp = 1 at once (§5.2), which :func:`critical_point` solves.

Universality classes (§5.3):

* scale-invariant: sigma(z) = a_+ z (z > 0), a_- z (z < 0). chi_par = chi_perp = C_W A_2 for every K with
  A_2 = (a_+^2 + a_-^2)/2, so the critical point is C_W = 1/A_2, C_b = 0 (eq. 5.66).
* K* = 0: sigma(0) = 0, sigma'(0) = sigma_1 != 0, smooth at 0. With sigma = sigma_1 z + sigma_2 z^2 + sigma_3 z^3 + ...
  and C_b = 0, C_W = 1/sigma_1^2 the recursion is K' = K + a_1 K^2 + O(K^3) and chi_perp = 1 + b_1 K + O(K^2) with
  (derived from <z^4>_K = 3 K^2, cf. eqs. 5.83-5.86)
      a_1 = 3 (sigma_2/sigma_1)^2 + 6 sigma_3/sigma_1,      b_1 = 4 (sigma_2/sigma_1)^2 + 6 sigma_3/sigma_1.
  The class needs a_1 < 0; then K^{(l)} ~ 1/(-a_1 l) and perpendicular perturbations decay as l^{-p_perp} with
  p_perp = b_1/a_1 (tanh: a_1 = b_1 = -2, p_perp = 1).
* other: neither (sigmoid, softplus, GELU, SiLU, ...). Their critical points, where they exist, are found
  numerically.

The critical line: at a fixed point K* with chi_perp(K*) = 1 we have C_W = 1/<sigma'^2>_{K*} and, from
K* = C_b + C_W <sigma^2>_{K*}, C_b = h(K*) with h(K) = K - <sigma^2>_K / <sigma'^2>_K. So for a given C_b the
critical line is a one-dimensional root of h(K) = C_b (the parametrisation used for the order-to-chaos
boundary of Poole et al. 2016, Fig. 3).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq

from ..activations import Activation, activation
from ..errors import SphericalCowError, check_positive
from .gaussian import expect_dsq, expect_sq, expect_zssd

PHASES = ("ordered", "critical", "chaotic")
CLASSES = ("scale-invariant", "K*=0", "other")
CHI_TOL = 1e-6
_K_BIG = 1e12
_K_SCAN = np.logspace(-6, 3, 721)


def _act(a: str | Activation) -> Activation:
    return a if isinstance(a, Activation) else activation(a)


# ----------------------------------------------------------------------------------------------------------------
# Taylor coefficients and universality class
# ----------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def taylor_coefficients(act: Activation) -> tuple[float, float, float, float] | None:
    """(sigma_0, sigma_1, sigma_2, sigma_3): sigma(z) = sum_k sigma_k z^k near 0, by float64 autograd.

    None when the activation has a kink at 0 (no Taylor expansion there).
    """
    if any(abs(k) < 1e-12 for k in act.kinks):
        return None
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    try:
        y = act.torch(z)
        out = [float(y.detach())]
        g = y
        for k in range(1, 4):
            if not g.requires_grad:  # the remaining derivatives vanish (e.g. a linear function)
                out.extend([0.0] * (4 - k))
                break
            (g,) = torch.autograd.grad(g, z, create_graph=True, allow_unused=True)
            if g is None:
                out.extend([0.0] * (4 - k))
                break
            out.append(float(g.detach()) / math.factorial(k) + 0.0)  # + 0.0: no "-0" in reports
    except (RuntimeError, TypeError, ValueError):
        return None  # not differentiable three times through torch: no Taylor-based class
    if not all(math.isfinite(v) for v in out):
        return None
    return tuple(out)  # type: ignore[return-value]


def universality(act: str | Activation) -> tuple[str, dict[str, float]]:
    """The universality class of an activation and its class constants (see module docstring)."""
    act = _act(act)
    if act.scale_invariant is not None:
        ap, am = act.scale_invariant
        A2, A4 = (ap * ap + am * am) / 2, (ap * ap * ap * ap + am * am * am * am) / 2
        return "scale-invariant", {"a_plus": ap, "a_minus": am, "A2": A2, "A4": A4, "cw_critical": 1 / A2}
    t = taylor_coefficients(act)
    if t is not None:
        s0, s1, s2, s3 = t
        if abs(s0) < 1e-14 and abs(s1) > 1e-12:
            a1 = 3 * (s2 / s1) ** 2 + 6 * s3 / s1
            b1 = 4 * (s2 / s1) ** 2 + 6 * s3 / s1
            consts = {"sigma1": s1, "sigma2": s2, "sigma3": s3, "a1": a1, "b1": b1, "cw_critical": 1 / s1**2}
            if a1 < 0:
                consts["p_perp"] = b1 / a1
                return "K*=0", consts
            return "other", {k: consts[k] for k in ("sigma1", "sigma2", "sigma3", "a1", "b1")}
        return "other", {"sigma0": s0, "sigma1": s1, "sigma2": s2, "sigma3": s3}
    return "other", {}


# ----------------------------------------------------------------------------------------------------------------
# Susceptibilities and fixed points (vectorised over numpy arrays)
# ----------------------------------------------------------------------------------------------------------------
def _scale_invariant_chi(act: Activation, cw: np.ndarray, K: np.ndarray) -> np.ndarray:
    """chi_par = chi_perp = C_W A_2 at every K for sigma = a_+ z (z > 0), a_- z (z < 0) (Roberts & Yaida §5.2)."""
    return np.broadcast_to(cw * universality(act)[1]["A2"], np.broadcast_shapes(cw.shape, K.shape)).copy()


def chi_parallel(act: str | Activation, cw, K) -> np.ndarray:
    """chi_par(K) = C_W <z sigma sigma'>_K / K (eq. 5.9); at K = 0 its limit C_W (sigma_1^2 + 2 sigma_0 sigma_2)."""
    act = _act(act)
    cw = np.asarray(cw, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if act.scale_invariant is not None:
        return _scale_invariant_chi(act, cw, K)
    safe = np.where(K > 0, K, 1.0)
    val = cw * expect_zssd(act, safe) / safe
    t = taylor_coefficients(act)
    # K -> 0: <sigma^2>_K = sigma_0^2 + (sigma_1^2 + 2 sigma_0 sigma_2) K + O(K^2)
    d0 = t[1] ** 2 + 2 * t[0] * t[2] if t is not None else float(act.derivative(np.zeros(1))[0]) ** 2
    return np.where(K > 0, val, cw * d0)


def chi_perpendicular(act: str | Activation, cw, K) -> np.ndarray:
    """chi_perp(K) = C_W <sigma'(z)^2>_K (eq. 5.10)."""
    act = _act(act)
    cw = np.asarray(cw, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if act.scale_invariant is not None:
        return _scale_invariant_chi(act, cw, K)
    return cw * expect_dsq(act, K)


def fixed_point(act: str | Activation, cw, cb, K0=1.0, *, n_iter: int = 300, n_newton: int = 100):
    """The fixed point K* = C_b + C_W <sigma^2>_{K*} reached by the recursion started at K^{(1)} = K0.

    Vectorised over broadcast arrays of ``cw``, ``cb``, ``K0``. Route: ``n_iter`` plain iterations (they select
    the basin of attraction), then Newton steps on g(K) = f(K) - K with g'(K) = chi_par - 1, which also converge
    (linearly) at marginal double roots and at the algebraic approach K ~ 1/l of the K* = 0 class.
    Scale-invariant activations use the exact result instead: f(K) = C_b + C_W A_2 K, so K* = C_b / (1 - C_W A_2)
    if C_W A_2 < 1 (0 at C_b = 0), and K grows without bound otherwise (linearly at C_W A_2 = 1 with C_b > 0).
    Elsewhere K still growing with chi_par >= 1 and no root in sight after the Newton steps counts as diverging.
    Returns ``(K_star, status)`` where status is 0 = converged, 1 = diverges (K* = inf), 2 = not converged (nan).
    """
    act = _act(act)
    cw, cb, K = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(cw, cb, K0))
    if act.scale_invariant is not None:
        slope = cw * universality(act)[1]["A2"]
        marginal = np.isclose(slope, 1.0, rtol=1e-12, atol=0.0)
        grows = ((slope > 1) & ~marginal) | (marginal & (cb > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            K_star = np.where(grows, np.inf, np.where(marginal, K, cb / (1 - slope)))
        return K_star, np.where(grows, 1, 0)
    K = K.copy()
    diverged = np.zeros(K.shape, dtype=bool)
    runaway = np.zeros(K.shape, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(n_iter):
            K = np.where(diverged, K, cb + cw * expect_sq(act, np.where(diverged, 1.0, K)))
            diverged |= ~(K < _K_BIG)
        for _ in range(n_newton):
            Ks = np.where(diverged, 1.0, K)
            g = cb + cw * expect_sq(act, Ks) - Ks
            dg = chi_parallel(act, cw, Ks) - 1.0
            small = np.abs(g) <= 1e-15 * Ks  # relative: K* = 0 is approached with g ~ a1 K^2
            step = np.where(small | (np.abs(dg) < 1e-300), 0.0, g / np.where(dg == 0, 1.0, dg))
            # growing with no root ahead (e.g. ReLU at C_W = 2 with C_b > 0): K grows without bound
            runaway = (g > 0) & (dg >= -1e-12) & ~small
            Knew = np.clip(Ks - step, 0.0, None)
            K = np.where(diverged, K, np.where(runaway, cb + cw * expect_sq(act, Ks), Knew))
            diverged |= ~(K < _K_BIG)
        diverged |= runaway
        Ks = np.where(diverged, 1.0, K)
        resid = np.abs(cb + cw * expect_sq(act, Ks) - Ks)
    ok = (resid <= 1e-9 * (1 + Ks)) & ~diverged
    status = np.where(diverged, 1, np.where(ok, 0, 2))
    K_star = np.where(diverged, np.inf, np.where(ok, K, np.nan))
    K_star = np.where(ok & (K_star < 1e-13), 0.0, K_star)
    return K_star, status


# ----------------------------------------------------------------------------------------------------------------
# The summary users ask for
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Criticality:
    """Fixed point, susceptibilities, depth scales, phase and universality class of (activation, C_W, C_b)."""

    activation: str
    cw: float
    cb: float
    K0: float
    K_star: float
    chi_par: float
    chi_perp: float
    xi_par: float
    xi_perp: float
    phase: str
    universality: str
    class_constants: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def depth_scale(chi: float) -> float:
    """xi = 1 / |log chi|: perturbations scale like exp(+-l / xi); infinite at chi = 1."""
    if not np.isfinite(chi) or chi <= 0:
        return 0.0 if chi == 0 else float("nan")
    lg = abs(math.log(chi))
    return math.inf if lg < CHI_TOL else 1.0 / lg


def criticality(act: str | Activation, cw: float | None = None, cb: float = 0.0, *, K0: float = 1.0) -> Criticality:
    """Fixed point K*, chi_par, chi_perp, depth scales, phase and universality class.

    ``cw=None`` evaluates the critical initialisation for this ``cb`` (:func:`critical_init`). ``K0`` is the
    first-layer kernel K^{(1)} the recursion starts from; it selects the fixed point where there are several.
    """
    act = _act(act)
    cb = check_positive("cb", cb, allow_zero=True)
    if cw is None:
        cw, _ = critical_init(act, cb)
    cw = check_positive("cw", cw)
    K0 = check_positive("K0", K0)
    cls, consts = universality(act)
    notes: list[str] = []
    K_star, status = fixed_point(act, cw, cb, K0)
    K_star, status = float(K_star), int(status)
    if status == 1:
        K_eval = _K_BIG
        notes.append("K grows without bound with depth: no finite fixed point; chis are evaluated as K -> inf")
    elif status == 2:
        raise SphericalCowError(f"the fixed-point search did not converge for activation={act.spec}, cw={cw}, cb={cb}")
    else:
        K_eval = K_star
    chi_par = float(chi_parallel(act, cw, K_eval))
    chi_perp = float(chi_perpendicular(act, cw, K_eval))
    if abs(chi_perp - 1) <= CHI_TOL:
        phase = "critical"
        if abs(chi_par - 1) > CHI_TOL:
            notes.append(f"on the order-chaos line (chi_perp = 1) but chi_par = {chi_par:.4g} != 1")
    else:
        phase = "ordered" if chi_perp < 1 else "chaotic"
    xi_perp = depth_scale(chi_perp)
    if phase != "critical" and xi_perp > 50:
        notes.append(
            f"nearly critical: xi_perp = {xi_perp:.4g} layers, so a network much shallower than that "
            "propagates signals as if critical"
        )
    if cls == "scale-invariant" and cb > 0 and abs(chi_par - 1) <= CHI_TOL:
        notes.append(
            "scale-invariant at C_W = 1/A_2 with C_b > 0: K grows linearly with depth (K^{(l+1)} = K^{(l)} + C_b)"
        )
    if cls == "K*=0" and K_star == 0.0 and phase == "critical":
        notes.append(
            f"K^{{(l)}} -> 0 as 1/({-consts['a1']:.4g} l); perpendicular perturbations decay as "
            f"l^-{consts['p_perp']:.4g}"
        )
    return Criticality(
        activation=act.spec,
        cw=cw,
        cb=cb,
        K0=K0,
        K_star=K_star,
        chi_par=chi_par,
        chi_perp=chi_perp,
        xi_par=depth_scale(chi_par),
        xi_perp=xi_perp,
        phase=phase,
        universality=cls,
        class_constants=consts,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------------------
# Critical line and the book's critical point
# ----------------------------------------------------------------------------------------------------------------
def _h(act: Activation, K: np.ndarray) -> np.ndarray:
    """h(K) = K - <sigma^2>_K / <sigma'^2>_K: the C_b at which K is a fixed point with chi_perp = 1."""
    return K - expect_sq(act, K) / expect_dsq(act, K)


def _roots(fun, grid: np.ndarray) -> list[float]:
    """Roots of ``fun`` bracketed by sign changes on ``grid``. Values within round-off of zero (|v| <= 1e-12 (1 + K))
    carry no sign: a function that is zero to machine precision over a range (a linear piece) has no isolated root."""
    vals = np.asarray(fun(grid), dtype=np.float64)
    sign = np.where(np.abs(vals) <= 1e-12 * (1 + grid), 0.0, np.sign(vals))
    out = []
    for i in np.nonzero(sign[:-1] * sign[1:] < 0)[0]:
        try:
            out.append(brentq(lambda k: float(fun(np.array([k]))[0]), grid[i], grid[i + 1], xtol=1e-14, rtol=1e-13))
        except ValueError:  # the bracket did not hold up under re-evaluation
            continue
    return out


@dataclass(frozen=True)
class CriticalPoint:
    cw: float
    cb: float
    K_star: float
    chi_par: float


def critical_line_points(act: str | Activation, cb: float) -> list[CriticalPoint]:
    """All fixed points K* > 0 (scanned over 1e-6 <= K <= 1e3) with chi_perp(K*) = 1 at this ``cb``."""
    act = _act(act)
    pts = []
    for K in _roots(lambda k: _h(act, k) - cb, _K_SCAN):
        cw = 1.0 / float(expect_dsq(act, K))
        pts.append(CriticalPoint(cw, cb, K, float(chi_parallel(act, cw, K))))
    return pts


def critical_init(act: str | Activation, cb: float = 0.0) -> tuple[float, float]:
    """(C_W, C_b) on the critical line chi_perp(K*) = 1 for the given C_b.

    Exact for the named classes: scale-invariant C_W = 1/A_2 (chi_perp = 1 at every K; for C_b > 0 K grows linearly
    with depth), K* = 0 class at C_b = 0: C_W = 1/sigma_1^2 (tanh: 1; erf: pi/4). Otherwise the smallest fixed point
    K* > 0 with chi_perp = 1 that is not repelling along K (chi_par <= 1), found as a root of h(K*) = C_b.
    """
    return _critical_init(_act(act), check_positive("cb", cb, allow_zero=True))


@lru_cache(maxsize=1024)  # pure in (activation, C_b); studies and phase diagrams ask repeatedly
def _critical_init(act: Activation, cb: float) -> tuple[float, float]:
    cls, consts = universality(act)
    if cls == "scale-invariant" or (cls == "K*=0" and cb == 0.0):
        return float(consts["cw_critical"]), cb
    pts = [p for p in critical_line_points(act, cb) if p.chi_par <= 1 + 1e-9]
    if not pts:
        hint = ""
        try:
            cp = critical_point(act)
            hint = f"; its critical point (chi_par = chi_perp = 1) is cw={cp.cw:.6g}, cb={cp.cb:.6g}"
        except SphericalCowError:
            pass
        raise SphericalCowError(
            f"activation {act.spec} has no critical initialisation at cb={cb:g} (no attracting fixed point with "
            f"chi_perp = 1 for K* in [1e-6, 1e3]){hint}; pass cw explicitly"
        )
    return pts[0].cw, cb


def critical_point(act: str | Activation) -> CriticalPoint:
    """The book's criticality, chi_par = chi_perp = 1 at the fixed point (Roberts & Yaida §5.2).

    Exact for the named classes; otherwise solved along the critical line as a root in K of
    <z sigma sigma'>_K = K <sigma'^2>_K, with C_W = 1/<sigma'^2>_K and C_b = h(K) >= 0.

    For the "other" class (GELU, SiLU) chi_par = 1 makes K* a double root of f(K) - K, so the fixed point is
    half-stable: the recursion reaches it from one side only. For GELU (C_W, C_b, K*) = (1.98306, 0.172922, 3.5616)
    it is reached from above; started below (e.g. K^{(1)} = C_b + C_W) it settles at the nearby stable fixed point
    K = 3.035 with chi_perp = 0.994 (xi_perp = 166 layers). Networks meant to sit at criticality should start at
    K^{(1)} >= K*.
    """
    return _critical_point(_act(act))


@lru_cache(maxsize=256)
def _critical_point(act: Activation) -> CriticalPoint:
    cls, consts = universality(act)
    if cls == "scale-invariant":
        return CriticalPoint(consts["cw_critical"], 0.0, math.nan, 1.0)
    if cls == "K*=0":
        return CriticalPoint(consts["cw_critical"], 0.0, 0.0, 1.0)
    for K in _roots(lambda k: expect_zssd(act, k) - k * expect_dsq(act, k), _K_SCAN):
        cb = float(_h(act, np.array([K]))[0])
        if cb >= 0:
            return CriticalPoint(1.0 / float(expect_dsq(act, K)), cb, K, 1.0)
    raise SphericalCowError(f"activation {act.spec} has no point with chi_par = chi_perp = 1 for K* in [1e-6, 1e3]")
