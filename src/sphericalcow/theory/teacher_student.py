"""Online SGD of a two-layer soft committee machine in the teacher-student setup: the closed ODEs (float64).

Setup (Saad & Solla 1995, PRL 74, 4337 and PRE 52, 4225; Goldt, Advani, Saxe, Krzakala & Zdeborova 2019,
"Dynamics of stochastic gradient descent for two-layer neural networks in the teacher-student setup", NeurIPS,
eqs. (1)-(5) and appendix A). Inputs x ~ N(0, I_N). Teacher with M hidden units and student with K::

    y = sum_n v*_n g(rho_n) + sigma zeta,   rho_n = w*_n . x / sqrt(N),  zeta ~ N(0, 1)   (output noise)
    phi(x) = sum_i v_i g(lambda_i),          lambda_i = w_i . x / sqrt(N)
    g(u) = erf(u / sqrt(2))

Online SGD on the loss (phi - y)^2 / 2 with a fresh sample at every step mu, error Delta = phi - y:

    w_i <- w_i - (eta / sqrt(N)) v_i g'(lambda_i) Delta x        (first layer:  learning rate eta / N in w . x / N)
    v_i <- v_i - (eta_v / N) g(lambda_i) Delta                    (second layer: learning rate eta_v / N)

This is Goldt et al.'s scaling (their eq. (3)): both layers move on the time scale t = mu / N, so one unit of t is N
SGD steps. In the limit N -> infinity the order parameters Q_ik = w_i.w_k / N, R_in = w_i.w*_n / N,
T_nm = w*_n.w*_m / N and v self-average and obey (Goldt et al. eqs. (6)-(8); Saad & Solla PRE eqs. (9)-(10)), with
c = (v_1..v_K, -v*_1..-v*_M) the coefficients of Delta = sum_a c_a g(u_a) - sigma zeta over all K+M fields u::

    dR_in/dt = -eta v_i sum_a c_a I3(i, n, a)
    dQ_ik/dt = -eta [v_i sum_a c_a I3(i, k, a) + v_k sum_a c_a I3(k, i, a)]
               + eta^2 v_i v_k [sum_ab c_a c_b I4(i, k, a, b) + sigma^2 J2(i, k)]
    dv_i/dt  = -eta_v sum_a c_a I2(i, a)
    eps_g    = (1/2) E[(phi - y + sigma zeta)^2] = (1/2) sum_ab c_a c_b I2(a, b)

where I2(a, b) = E[g(u_a) g(u_b)], I3(a, b, c) = E[g'(u_a) u_b g(u_c)], I4(a, b, c, d) = E[g'(u_a) g'(u_b) g(u_c)
g(u_d)] and J2(a, b) = E[g'(u_a) g'(u_b)] over the Gaussian fields with covariance Omega = [[Q, R], [R^T, T]].
For g = erf(./sqrt 2) they are closed forms (below). eps_g is the noise-free generalisation error (the test loss
minus sigma^2/2).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import fsolve

from ..errors import SphericalCowError, check_int, check_positive

__all__ = [
    "ODECurve",
    "Plateau",
    "asymptotic_error_first_layer",
    "asymptotic_fixed_point",
    "generalisation_error",
    "i2",
    "i3",
    "i4",
    "integrate_ode",
    "j2",
    "ode_rhs",
    "random_order_parameters",
    "specialisation_rate",
    "symmetric_plateau",
]

_TWO_PI = 2.0 / math.pi
_FOUR_PI2 = 4.0 / math.pi**2


def _cov(C: Any, n: int) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim < 2 or C.shape[-2:] != (n, n):
        raise SphericalCowError(f"covariance of shape {C.shape} is not allowed; expected (..., {n}, {n})")
    return C


def i2(C: Any) -> np.ndarray:
    """I2 = E[g(u1) g(u2)] for g(u) = erf(u/sqrt 2), (u1, u2) ~ N(0, C), C of shape (..., 2, 2).

    Closed form (Saad & Solla 1995 PRE, eq. (A3); Goldt et al. 2019, appendix A.2; Williams 1997):
    I2 = (2/pi) arcsin( C12 / sqrt((1 + C11)(1 + C22)) ).
    """
    C = _cov(C, 2)
    return _TWO_PI * np.arcsin(C[..., 0, 1] / np.sqrt((1.0 + C[..., 0, 0]) * (1.0 + C[..., 1, 1])))


def i3(C: Any) -> np.ndarray:
    """I3 = E[g'(u1) u2 g(u3)] for g(u) = erf(u/sqrt 2), (u1, u2, u3) ~ N(0, C), C of shape (..., 3, 3).

    Closed form (Saad & Solla 1995 PRE, eq. (A4); Goldt et al. 2019, appendix A.2):
    I3 = (2/pi) (1/sqrt(Lambda3)) (C23 (1 + C11) - C12 C13) / (1 + C11),  Lambda3 = (1 + C11)(1 + C33) - C13^2.
    """
    C = _cov(C, 3)
    return _i3(C[..., 0, 0], C[..., 0, 1], C[..., 0, 2], C[..., 1, 2], C[..., 2, 2])


def _i3(c11, c12, c13, c23, c33):
    lam3 = (1.0 + c11) * (1.0 + c33) - c13**2
    return _TWO_PI / np.sqrt(lam3) * (c23 * (1.0 + c11) - c12 * c13) / (1.0 + c11)


def i4(C: Any) -> np.ndarray:
    """I4 = E[g'(u1) g'(u2) g(u3) g(u4)] for g(u) = erf(u/sqrt 2), (u1..u4) ~ N(0, C), C of shape (..., 4, 4).

    Closed form (Saad & Solla 1995 PRE, eq. (A5); Goldt et al. 2019, appendix A.2):
    I4 = (4/pi^2) (1/sqrt(Lambda4)) arcsin( Lambda0 / sqrt(Lambda1 Lambda2) ) with
    Lambda4 = (1 + C11)(1 + C22) - C12^2,
    Lambda0 = Lambda4 C34 - C23 C24 (1 + C11) - C13 C14 (1 + C22) + C12 C13 C24 + C12 C14 C23,
    Lambda1 = Lambda4 (1 + C33) - C23^2 (1 + C11) - C13^2 (1 + C22) + 2 C12 C13 C23,
    Lambda2 = Lambda4 (1 + C44) - C24^2 (1 + C11) - C14^2 (1 + C22) + 2 C12 C14 C24.
    """
    C = _cov(C, 4)
    g = C.__getitem__
    return _i4(
        g((..., 0, 0)),
        g((..., 1, 1)),
        g((..., 0, 1)),
        g((..., 2, 2)),
        g((..., 3, 3)),
        g((..., 2, 3)),
        g((..., 0, 2)),
        g((..., 0, 3)),
        g((..., 1, 2)),
        g((..., 1, 3)),
    )


def _i4(c11, c22, c12, c33, c44, c34, c13, c14, c23, c24):
    lam4 = (1.0 + c11) * (1.0 + c22) - c12**2
    lam0 = lam4 * c34 - c23 * c24 * (1.0 + c11) - c13 * c14 * (1.0 + c22) + c12 * c13 * c24 + c12 * c14 * c23
    lam1 = lam4 * (1.0 + c33) - c23**2 * (1.0 + c11) - c13**2 * (1.0 + c22) + 2.0 * c12 * c13 * c23
    lam2 = lam4 * (1.0 + c44) - c24**2 * (1.0 + c11) - c14**2 * (1.0 + c22) + 2.0 * c12 * c14 * c24
    arg = np.clip(lam0 / np.sqrt(lam1 * lam2), -1.0, 1.0)
    return _FOUR_PI2 / np.sqrt(lam4) * np.arcsin(arg)


def j2(C: Any) -> np.ndarray:
    """J2 = E[g'(u1) g'(u2)] for g(u) = erf(u/sqrt 2), (u1, u2) ~ N(0, C), C of shape (..., 2, 2).

    Closed form (Saad & Solla 1995 PRE, eq. (A6); Goldt et al. 2019, appendix A.2):
    J2 = (2/pi) ((1 + C11)(1 + C22) - C12^2)^(-1/2).
    """
    C = _cov(C, 2)
    return _TWO_PI / np.sqrt((1.0 + C[..., 0, 0]) * (1.0 + C[..., 1, 1]) - C[..., 0, 1] ** 2)


def _omega(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    return np.block([[Q, R], [R.T, T]])


def _pair_cov(Om: np.ndarray) -> np.ndarray:
    """(D, D, 2, 2) covariances of every pair of fields."""
    d = np.diag(Om)
    D = len(d)
    C = np.empty((D, D, 2, 2))
    C[..., 0, 0] = d[:, None]
    C[..., 1, 1] = d[None, :]
    C[..., 0, 1] = C[..., 1, 0] = Om
    return C


def generalisation_error(Q: Any, R: Any, T: Any, v: Any, v_star: Any) -> float:
    """eps_g = (1/2) E[(phi(x) - phi*(x))^2] = (1/2) sum_ab c_a c_b I2(a, b), c = (v, -v*) (Goldt et al. 2019, eq. (5);
    Saad & Solla 1995 PRE, eq. (8)): the noise-free generalisation error of a soft committee machine with
    g = erf(./sqrt 2)."""
    Q, R, T, v, v_star = _check_state(Q, R, T, v, v_star)
    c = np.concatenate([v, -v_star])
    return float(0.5 * c @ i2(_pair_cov(_omega(Q, R, T))) @ c)


def _check_state(Q, R, T, v, v_star):
    Q, R, T = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (Q, R, T))
    v, v_star = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (v, v_star))
    K, M = len(v), len(v_star)
    for name, a, shape in (("Q", Q, (K, K)), ("R", R, (K, M)), ("T", T, (M, M))):
        if a.shape != shape:
            raise SphericalCowError(
                f"{name} has shape {a.shape}; expected {shape} for K={K} student and M={M} teacher units"
            )
        if not np.isfinite(a).all():
            raise SphericalCowError(f"{name} contains NaN or inf; expected finite order parameters")
    Om = _omega(Q, R, T)
    if not np.allclose(Om, Om.T, atol=1e-10):
        raise SphericalCowError("Q and T must be symmetric; got asymmetric order parameters")
    if np.linalg.eigvalsh(Om).min() < -1e-9 * max(1.0, float(np.abs(Om).max())):
        raise SphericalCowError("[[Q, R], [R^T, T]] is not positive semi-definite; not the overlaps of real vectors")
    return Q, R, T, v, v_star


def ode_rhs(
    Q: np.ndarray,
    R: np.ndarray,
    T: np.ndarray,
    v: np.ndarray,
    v_star: np.ndarray,
    *,
    lr: float,
    lr_v: float,
    noise: float = 0.0,
    train: Literal["both", "first"] = "both",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dQ/dt, dR/dt, dv/dt) of the Saad-Solla / Goldt et al. ODEs (module docstring), vectorised over all index
    combinations (one call evaluates K^2 (K+M)^2 I4's). ``train="first"`` keeps v fixed (dv/dt = 0)."""
    K = len(v)
    Om = _omega(Q, R, T)
    d = np.diag(Om)
    c = np.concatenate([v, -v_star])
    # I3(i, a, b) for student i and any fields a, b: shape (K, D, D)
    c11 = d[:K, None, None]
    c12 = Om[:K, :, None]
    c13 = Om[:K, None, :]
    c23 = Om[None, :, :]
    c33 = d[None, None, :]
    I3 = _i3(c11, c12, c13, c23, c33)
    A = I3 @ c  # (K, D): sum_b c_b I3(i, a, b)
    dR = -lr * v[:, None] * A[:, K:]
    drift = v[:, None] * A[:, :K]  # v_i sum_b c_b I3(i, k, b)
    # I4(i, k, a, b): shape (K, K, D, D)
    I4 = _i4(
        d[:K, None, None, None],
        d[None, :K, None, None],
        Om[:K, :K, None, None],
        d[None, None, :, None],
        d[None, None, None, :],
        Om[None, None, :, :],
        Om[:K, None, :, None],
        Om[:K, None, None, :],
        Om[None, :K, :, None],
        Om[None, :K, None, :],
    )
    quad = np.einsum("ikab,a,b->ik", I4, c, c)
    Cp = _pair_cov(Om[:K, :K])
    J = j2(Cp)
    dQ = -lr * (drift + drift.T) + lr**2 * np.outer(v, v) * (quad + noise**2 * J)
    if train == "both":
        I2 = i2(_pair_cov(Om)[:K, :])  # (K, D)
        dv = -lr_v * (I2 @ c)
    else:
        dv = np.zeros(K)
    return dQ, dR, dv


@dataclass(frozen=True)
class ODECurve:
    """A solution of the ODEs: order parameters and eps_g on the grid ``t`` (t = SGD steps / N)."""

    t: np.ndarray  # (n_t,)
    eps_g: np.ndarray  # (n_t,)
    Q: np.ndarray  # (n_t, K, K)
    R: np.ndarray  # (n_t, K, M)
    v: np.ndarray  # (n_t, K)
    T: np.ndarray
    v_star: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def plateau(self, eps_plateau: float, *, rel_tol: float = 0.1) -> tuple[float, float, float]:
        """(start, end, length) of the longest stretch of t on which |eps_g / eps_plateau - 1| <= rel_tol;
        (nan, nan, 0) if the curve never comes that close."""
        on = np.abs(self.eps_g / eps_plateau - 1.0) <= rel_tol
        best, start = (math.nan, math.nan, 0.0), None
        for j, flag in enumerate(np.append(on, False)):
            if flag and start is None:
                start = j
            elif not flag and start is not None:
                t0, t1 = float(self.t[start]), float(self.t[j - 1])
                if t1 - t0 > best[2] or math.isnan(best[0]):
                    best = (t0, t1, t1 - t0)
                start = None
        return best

    def time_below(self, level: float) -> float:
        """First t with eps_g(t) < level (after the last time it was above), nan if never."""
        below = self.eps_g < level
        if not below[-1]:
            return math.nan
        above = np.nonzero(~below)[0]
        j = 0 if len(above) == 0 else above[-1] + 1
        return float(self.t[j])

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "eps_g": self.eps_g,
            "Q": self.Q,
            "R": self.R,
            "v": self.v,
            "T": self.T,
            "v_star": self.v_star,
            "params": self.params,
            "seconds": self.seconds,
        }


def integrate_ode(
    Q0: Any,
    R0: Any,
    T: Any,
    v0: Any,
    v_star: Any,
    *,
    lr: float,
    t_max: float,
    lr_v: float | None = None,
    noise: float = 0.0,
    train: Literal["both", "first"] = "both",
    n_points: int = 401,
    t_eval: Any = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> ODECurve:
    """Integrate the ODEs (module docstring) from (Q0, R0, v0) with scipy's ``solve_ivp`` (LSODA) to ``t_max``.

    ``lr`` is eta (first layer, scaled eta/sqrt(N) per step on w: Goldt et al. 2019, eq. (3)); ``lr_v`` is eta_v
    (second layer, eta_v/N per step), default ``lr``; ``noise`` the teacher's output-noise std sigma; ``train`` "both"
    or "first" (v stays at v0). ``t_eval`` (optional, increasing, in [0, t_max]) overrides the uniform grid of
    ``n_points``."""
    lr = check_positive("lr", lr)
    lr_v = lr if lr_v is None else check_positive("lr_v", lr_v, allow_zero=True)
    noise = check_positive("noise", noise, allow_zero=True)
    t_max = check_positive("t_max", t_max)
    if train not in ("both", "first"):
        raise SphericalCowError(f"train={train!r} is not allowed; expected 'both' or 'first'")
    Q0, R0, T, v0, v_star = _check_state(Q0, R0, T, v0, v_star)
    K, M = len(v0), len(v_star)
    if t_eval is None:
        n_points = check_int("n_points", n_points, minimum=2)
        t_eval = np.linspace(0.0, t_max, n_points)
    else:
        t_eval = np.asarray(t_eval, dtype=np.float64)
        if t_eval.ndim != 1 or t_eval[0] < 0 or t_eval[-1] > t_max or np.any(np.diff(t_eval) <= 0):
            raise SphericalCowError("t_eval must be an increasing 1-D grid inside [0, t_max]")

    def unpack(y):
        Q = y[: K * K].reshape(K, K)
        R = y[K * K : K * K + K * M].reshape(K, M)
        v = y[K * K + K * M :]
        return 0.5 * (Q + Q.T), R, v

    def f(_t, y):
        Q, R, v = unpack(y)
        dQ, dR, dv = ode_rhs(Q, R, T, v, v_star, lr=lr, lr_v=lr_v, noise=noise, train=train)
        return np.concatenate([dQ.ravel(), dR.ravel(), dv])

    y0 = np.concatenate([Q0.ravel(), R0.ravel(), v0])
    t0 = time.perf_counter()
    sol = solve_ivp(f, (0.0, t_max), y0, method="LSODA", t_eval=t_eval, rtol=rtol, atol=atol)
    if not sol.success:
        raise SphericalCowError(f"the ODE integration failed at lr={lr:g}, noise={noise:g}: {sol.message}")
    seconds = time.perf_counter() - t0
    Qs, Rs, vs = zip(*(unpack(y) for y in sol.y.T), strict=True)
    Qs, Rs, vs = np.array(Qs), np.array(Rs), np.array(vs)
    c = np.concatenate([vs, -np.broadcast_to(v_star, (len(vs), M))], axis=1)
    eps = np.array([0.5 * ci @ i2(_pair_cov(_omega(Qi, Ri, T))) @ ci for ci, Qi, Ri in zip(c, Qs, Rs, strict=True)])
    return ODECurve(
        t=sol.t,
        eps_g=eps,
        Q=Qs,
        R=Rs,
        v=vs,
        T=T,
        v_star=v_star,
        params={"lr": lr, "lr_v": lr_v, "noise": noise, "train": train, "K": K, "M": M},
        seconds=seconds,
    )


@dataclass(frozen=True)
class Plateau:
    """The symmetric (unspecialised) fixed point for K = M, T = I, v* = 1: Q_ii = Q, Q_ik = C (i != k),
    R_in = R for all i, n, v_i = v; eps_g there; the eigenvalues of the ODE's Jacobian at it (the positive ones
    drive the specialisation transition)."""

    K: int
    lr: float
    noise: float
    train: str
    Q: float
    C: float
    R: float
    v: float
    eps_g: float
    eigenvalues: np.ndarray

    @property
    def escape_rate(self) -> float:
        """The largest real part of the Jacobian's eigenvalues: > 0 means the plateau is a saddle."""
        return float(np.max(self.eigenvalues.real))

    def order_parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(Q, R, T, v, v_star) of the fixed point as matrices."""
        K = self.K
        Q = np.full((K, K), self.C) + (self.Q - self.C) * np.eye(K)
        return Q, np.full((K, K), self.R), np.eye(K), np.full(K, self.v), np.ones(K)

    def to_dict(self) -> dict[str, Any]:
        return {
            "K": self.K,
            "lr": self.lr,
            "noise": self.noise,
            "train": self.train,
            "Q": self.Q,
            "C": self.C,
            "R": self.R,
            "v": self.v,
            "eps_g": self.eps_g,
            "escape_rate": self.escape_rate,
        }


def _flat_rhs(y, K, M, T, v_star, lr, lr_v, noise, train):
    Q = y[: K * K].reshape(K, K)
    R = y[K * K : K * K + K * M].reshape(K, M)
    v = y[K * K + K * M :]
    dQ, dR, dv = ode_rhs(0.5 * (Q + Q.T), R, T, v, v_star, lr=lr, lr_v=lr_v, noise=noise, train=train)
    return np.concatenate([dQ.ravel(), dR.ravel(), dv])


def _jacobian(y, K, M, T, v_star, lr, lr_v, noise, train, h=1e-6):
    """Central-difference Jacobian of the flattened RHS over the independent coordinates (upper triangle of Q, R,
    and v when trained)."""
    iu = np.triu_indices(K)
    idx_q = [i * K + j for i, j in zip(*iu, strict=True)]
    idx = idx_q + list(range(K * K, K * K + K * M)) + ([*range(K * K + K * M, len(y))] if train == "both" else [])
    J = np.empty((len(idx), len(idx)))
    for col, j in enumerate(idx):
        e = np.zeros_like(y)
        e[j] = h
        if j < K * K:  # symmetric perturbation of Q_ab = Q_ba
            a, b = divmod(j, K)
            e[b * K + a] = h
        J[:, col] = (
            _flat_rhs(y + e, K, M, T, v_star, lr, lr_v, noise, train)[idx]
            - _flat_rhs(y - e, K, M, T, v_star, lr, lr_v, noise, train)[idx]
        ) / (2 * h)
    return J


def symmetric_plateau(K: int, lr: float, *, noise: float = 0.0, train: Literal["both", "first"] = "first") -> Plateau:
    """The symmetric plateau of K = M students learning an isotropic teacher (T = I, v* = 1, v = 1 at start).

    Solves the fixed-point equations dQ_11/dt = dQ_12/dt = dR_11/dt = 0 (and dv_1/dt = 0 for ``train="both"``) of
    the ODEs restricted to the symmetric subspace (Saad & Solla 1995 PRE, section IV.A) with scipy's ``fsolve``,
    starting from the small-eta solution Q = C = 1/(2K - 1), R = 1/sqrt(K (2K - 1)) (their eq. (15); Biehl, Riegler
    & Wohler 1996). The Jacobian of the full ODE there (central differences) gives the escape (specialisation)
    rate; Saad & Solla show the plateau is left along the specialising direction R_in - R_im.
    """
    K = check_int("K", K, minimum=2)
    lr = check_positive("lr", lr)
    noise = check_positive("noise", noise, allow_zero=True)
    if train not in ("both", "first"):
        raise SphericalCowError(f"train={train!r} is not allowed; expected 'both' or 'first'")
    T, v_star = np.eye(K), np.ones(K)

    def build(p):
        Q_, C_, R_ = p[:3]
        v_ = p[3] if train == "both" else 1.0
        Q = np.full((K, K), C_) + (Q_ - C_) * np.eye(K)
        return Q, np.full((K, K), R_), np.full(K, v_)

    def eqs(p):
        Q, R, v = build(p)
        dQ, dR, dv = ode_rhs(Q, R, T, v, v_star, lr=lr, lr_v=lr, noise=noise, train=train)
        out = [dQ[0, 0], dQ[0, 1], dR[0, 0]]
        return [*out, dv[0]] if train == "both" else out

    q0 = 1.0 / (2 * K - 1)
    p0 = [q0, q0, 1.0 / math.sqrt(K * (2 * K - 1))] + ([1.0] if train == "both" else [])
    p, _info, _ier, msg = fsolve(eqs, p0, full_output=True, xtol=1e-12)
    if np.max(np.abs(eqs(p))) > 1e-11:
        raise SphericalCowError(f"no symmetric plateau found at K={K}, lr={lr:g}, noise={noise:g} ({msg.strip()})")
    Q, R, v = build(p)
    eps = generalisation_error(Q, R, T, v, v_star)
    y = np.concatenate([Q.ravel(), R.ravel(), v])
    eig = np.linalg.eigvals(_jacobian(y, K, K, T, v_star, lr, lr, noise, train))
    return Plateau(
        K=K,
        lr=lr,
        noise=noise,
        train=train,
        Q=float(p[0]),
        C=float(p[1]),
        R=float(p[2]),
        v=float(v[0]),
        eps_g=eps,
        eigenvalues=eig,
    )


def specialisation_rate(K: int, lr: float, *, noise: float = 0.0, train: Literal["both", "first"] = "first") -> float:
    """The escape rate from the symmetric plateau: the largest eigenvalue of the ODE's Jacobian there (see
    :func:`symmetric_plateau`). A perturbation delta_0 of the symmetry grows as delta_0 e^{rate t}, so the plateau
    lasts about ln(1/delta_0)/rate (Saad & Solla 1995 PRE, section IV.B; Biehl, Riegler & Wohler 1996)."""
    return symmetric_plateau(K, lr, noise=noise, train=train).escape_rate


def asymptotic_error_first_layer(lr: float, noise: float, K: int = 1) -> float:
    """Leading-order asymptotic generalisation error of first-layer online SGD with output noise sigma, K = M,
    T = I, v = v* = 1:

        eps_g* = K eta sigma^2 / (2 sqrt(3) pi) + O(eta^2 sigma^2).

    Goldt et al. 2019 NeurIPS (section 3, "asymptotic generalisation error") show that eps_g* of first-layer training
    is proportional to eta sigma^2 and grows linearly with the network size; the constant 1/(2 sqrt 3 pi) per unit
    is the linearisation of the ODEs around the perfect solution Q = R = T (each specialised unit fluctuates
    independently to leading order; for K = 1 the drift of Q and R balances the diffusion term eta^2 sigma^2 J2,
    J2 = 2 / (sqrt(3) pi) at Q = 1). Checked in the tests against the exact fixed point of the ODEs
    (:func:`asymptotic_fixed_point`, ratio -> 1 as eta -> 0) and against simulations."""
    lr = check_positive("lr", lr)
    noise = check_positive("noise", noise, allow_zero=True)
    K = check_int("K", K, minimum=1)
    return K * lr * noise**2 / (2.0 * math.sqrt(3.0) * math.pi)


def asymptotic_fixed_point(
    K: int, lr: float, noise: float, *, train: Literal["both", "first"] = "first"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The specialised fixed point of the ODEs for K = M, T = I, v* = 1 (v = 1 for first-layer training), solved
    exactly (fsolve on the full RHS) from the perfect solution Q = R = I: returns (Q, R, v, eps_g*). Symmetric
    ansatz: Q_ii = q, Q_ik = c, R_ii = r, R_in = s (i != n)."""
    K = check_int("K", K, minimum=1)
    lr = check_positive("lr", lr)
    noise = check_positive("noise", noise, allow_zero=True)
    T, v_star = np.eye(K), np.ones(K)

    def build(p):
        q, c, r, s = p[:4]
        v_ = p[4] if train == "both" else 1.0
        Q = np.full((K, K), c) + (q - c) * np.eye(K)
        R = np.full((K, K), s) + (r - s) * np.eye(K)
        return Q, R, np.full(K, v_)

    def eqs(p):
        Q, R, v = build(p)
        dQ, dR, dv = ode_rhs(Q, R, T, v, v_star, lr=lr, lr_v=lr, noise=noise, train=train)
        out = [dQ[0, 0], dQ[0, 1] if K > 1 else p[1], dR[0, 0], dR[0, 1] if K > 1 else p[3]]
        return [*out, dv[0]] if train == "both" else out

    p0 = [1.0, 0.0, 1.0, 0.0] + ([1.0] if train == "both" else [])
    p, _, _ier, msg = fsolve(eqs, p0, full_output=True, xtol=1e-12)
    if np.max(np.abs(eqs(p))) > 1e-11:
        raise SphericalCowError(f"no specialised fixed point found at K={K}, lr={lr:g}, noise={noise:g} ({msg})")
    Q, R, v = build(p)
    return Q, R, v, generalisation_error(Q, R, T, v, v_star)


def random_order_parameters(
    K: int, M: int, *, seed: int, init_std: float = 1e-3, teacher_norm: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded initial order parameters (Q0, R0, T) in the N -> infinity description, for the CLI and sweeps.

    T = teacher_norm * I (an orthogonal teacher). A student with weights w_i ~ N(0, init_std^2 I_N) has
    Q_ii -> init_std^2 and R -> 0 as N -> infinity; R = 0 exactly never leaves the symmetric subspace, so the
    O(1/sqrt N) overlaps of a finite student are replaced by one seeded draw R0 ~ N(0, init_std^2 / K) per entry,
    and Q0 = init_std^2 I + R0 R0^T / teacher_norm keeps [[Q0, R0], [R0^T, T]] positive definite."""
    K = check_int("K", K, minimum=1)
    M = check_int("M", M, minimum=1)
    init_std = check_positive("init_std", init_std)
    teacher_norm = check_positive("teacher_norm", teacher_norm)
    rng = np.random.default_rng(seed)
    R0 = rng.normal(0.0, init_std / math.sqrt(K), size=(K, M))
    Q0 = init_std**2 * np.eye(K) + R0 @ R0.T / teacher_norm
    return Q0, R0, teacher_norm * np.eye(M)
