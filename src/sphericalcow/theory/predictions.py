"""Closed-form predictions of infinitely wide networks: GP inference and gradient descent on the MSE loss.

Pure float64 linear algebra on kernel matrices; nothing is trained.  Inputs may be NumPy arrays, torch tensors or
nested sequences; outputs are float64 torch tensors on the CPU.

Sources
    * Rasmussen & Williams, *Gaussian Processes for Machine Learning* (2006), eqs. (2.25)-(2.26) and Algorithm 2.1:
      the GP posterior mean and covariance, computed with a Cholesky factor.
    * Lee et al. (2019), *Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient Descent*:
      eqs. (9)-(11) (linearised network trained on the MSE loss: closed-form train outputs), eq. (12) (outputs on
      test points) and eqs. (14)-(16) (the infinite ensemble of networks trained with the NTK is a Gaussian with mean
      (15) and covariance (16)); the discrete-step version is their Appendix (gradient descent instead of flow).

Conventions (see :class:`NTKPredictor`)
    * Loss ``L = 1/(2N) sum_i ||f(x_i) - y_i||^2`` over the N training points, so gradient flow in parameter space
      with learning rate ``lr`` moves the linearised outputs as ``df/dt = -(lr/N) Theta (f - y)``; ``t`` counts
      steps of size ``lr`` (``gradient_flow=True`` is the small-``lr`` limit at fixed ``lr * t``).  For a *sum*
      loss ``1/2 sum_i ||f - y||^2`` pass ``lr * N``; for a loss that is also averaged over the ``d_out`` outputs
      pass ``lr / d_out``.
    * ``diag_reg`` follows neural-tangents: the added ridge is ``diag_reg * trace(K) / N`` (relative to the mean
      diagonal) unless ``diag_reg_absolute_scale=True``, when it is ``diag_reg`` itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError, check_positive

__all__ = [
    "GPPosterior",
    "GradientDescentPrediction",
    "NTKPredictor",
    "gp_inference",
    "gradient_descent_mse",
]

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequence of numbers

#: Kernels may be asymmetric by this much relative to their largest entry (float32-computed kernels) before raising.
ASYM_RTOL = 1e-6
#: Eigenvalues of the NTK down to ``-NEG_EIG_RTOL * lambda_max`` are rounding and are clipped to 0; below, raise.
NEG_EIG_RTOL = 1e-6
#: A Cholesky pivot L_ii^2 below ``N * eps * max(diag)`` means the matrix is numerically singular.
_SINGULAR_RTOL = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GPPosterior:
    """Posterior of a GP at test points.

    ``mean``: (N_test,) if ``y_train`` was 1-D, else (N_test, d_out).
    ``covariance``: (N_test, N_test), shared by all outputs; None when no ``k_test_test`` was given.
    """

    mean: torch.Tensor
    covariance: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class GradientDescentPrediction:
    """Outputs of the linearised network trained for time(s) ``t``.

    With an array ``t`` of length T every field has a leading time axis of length T; with a scalar ``t`` none.

    * ``t``: the times, float64 (``inf`` allowed), shape () or (T,).
    * ``train_mean``: outputs on the training inputs, ([T,] N, d_out) or ([T,] N) if ``y_train`` was 1-D.
    * ``test_mean``: outputs on the test inputs, ([T,] N_test[, d_out]); None without ``ntk_test_train``.
    * ``test_covariance``: covariance over random initialisations f0 ~ GP(0, NNGP) of the test outputs (Lee et al.
      2019 eq. (16)), ([T,] N_test, N_test), shared by all outputs; None without the NNGP kernels.
    """

    t: torch.Tensor
    train_mean: torch.Tensor
    test_mean: torch.Tensor | None
    test_covariance: torch.Tensor | None


# ----------------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------------
def _as_f64(name: str, x: ArrayLike, ndims: tuple[int, ...], expected: str) -> torch.Tensor:
    """``x`` as a finite float64 CPU tensor (a copy) with ``x.ndim in ndims``, else raise naming ``name``."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise SphericalCowError(f"{name} has dtype {x.dtype}; expected real numbers")
        out = x.detach().to(device="cpu", dtype=torch.float64).clone()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError):
            raise SphericalCowError(f"{name}={x!r} is not an array; expected {expected}") from None
        if arr.dtype.kind not in "iuf":
            raise SphericalCowError(f"{name} has dtype {arr.dtype}; expected real numbers ({expected})")
        out = torch.from_numpy(np.array(arr, dtype=np.float64))
    if out.ndim not in ndims:
        raise SphericalCowError(f"{name} has shape {tuple(out.shape)}; expected {expected}")
    if not bool(torch.isfinite(out).all()):
        raise SphericalCowError(f"{name} contains NaN or inf; expected finite values")
    return out


def _kernel(name: str, k: ArrayLike, rows: int | None = None, cols: int | None = None, *, psd: bool = False):
    """A (rows, cols) kernel block; ``psd=True``: square, symmetric (then symmetrised), non-negative diagonal."""
    row_txt = ("N" if psd else "N_test") if rows is None else rows
    shape_txt = f"({row_txt}, {'N' if cols is None else cols})"
    k = _as_f64(name, k, (2,), f"a 2-D kernel matrix of shape {shape_txt}")
    r, c = k.shape
    if (rows is not None and r != rows) or (cols is not None and c != cols):
        raise SphericalCowError(f"{name} has shape {tuple(k.shape)}; expected {shape_txt}")
    if psd and r != c:
        raise SphericalCowError(f"{name} has shape {tuple(k.shape)}; expected a square (N, N) kernel matrix")
    if psd:
        if r == 0:
            raise SphericalCowError(f"{name} has shape {tuple(k.shape)}; expected at least one point")
        scale = float(k.abs().max())
        asym = float((k - k.T).abs().max())
        if asym > ASYM_RTOL * scale:
            raise SphericalCowError(
                f"{name} is not symmetric (max |K - K^T| = {asym:.3g}, max |K| = {scale:.3g}); "
                "expected a symmetric kernel matrix"
            )
        d = torch.diagonal(k)
        if bool((d < 0).any()):
            i = int(torch.argmin(d))
            raise SphericalCowError(
                f"{name} has a negative diagonal entry [{i}, {i}] = {float(d[i]):.6g}; expected a covariance (>= 0)"
            )
        k = 0.5 * (k + k.T)
    return k


def _targets(name: str, y: ArrayLike, n: int | None = None, d_out: int | None = None) -> torch.Tensor:
    """Targets/outputs as (n, d_out); 1-D input becomes one column."""
    y = _as_f64(name, y, (1, 2), "shape (N,) or (N, d_out)")
    y2 = y[:, None] if y.ndim == 1 else y
    if (n is not None and y2.shape[0] != n) or (d_out is not None and y2.shape[1] != d_out):
        want = f"({n},) or ({n}, d_out)" if d_out is None else f"({n}, {d_out})"
        raise SphericalCowError(f"{name} has shape {tuple(y.shape)}; expected {want} to match the kernels and y_train")
    return y2


def _regulariser(k: torch.Tensor, diag_reg: float, absolute: bool) -> float:
    """Ridge added to the diagonal: ``diag_reg`` (absolute) or ``diag_reg * trace(k) / N`` (neural-tangents)."""
    r = check_positive("diag_reg", diag_reg, allow_zero=True)
    if not absolute:
        r *= float(torch.trace(k)) / k.shape[0]
    return r


def _cholesky(name: str, k: torch.Tensor, reg: float) -> torch.Tensor:
    """Lower Cholesky factor of ``k + reg I``; raise suggesting ``diag_reg`` if not (numerically) positive definite."""
    n = k.shape[0]
    a = k + reg * torch.eye(n, dtype=torch.float64)
    factor, info = torch.linalg.cholesky_ex(a)
    what = f"{name}" if reg == 0 else f"{name} + {reg:.3g} I"
    if int(info) != 0:
        raise SphericalCowError(
            f"{what} is not positive definite (Cholesky failed at row {int(info) - 1}); "
            "pass diag_reg > 0 (e.g. diag_reg=1e-10, relative to the mean diagonal)"
        )
    pivots = torch.diagonal(factor) ** 2
    floor = n * _SINGULAR_RTOL * float(torch.diagonal(a).max())
    if float(pivots.min()) <= floor:
        raise SphericalCowError(
            f"{what} is numerically singular (smallest Cholesky pivot {float(pivots.min()):.3g} <= {floor:.3g}); "
            "pass diag_reg > 0 (e.g. diag_reg=1e-10, relative to the mean diagonal)"
        )
    return factor


def _times(t: ArrayLike, *, integer: bool) -> tuple[torch.Tensor, bool]:
    """``t`` as a 1-D float64 tensor and whether it was a scalar; entries >= 0, finite or +inf."""
    allowed = "integers >= 0 or inf (gradient_flow=False)" if integer else "times >= 0, finite or inf"
    if isinstance(t, bool):
        raise SphericalCowError(f"t={t!r} is not a number; expected {allowed}")
    if isinstance(t, torch.Tensor):
        if t.is_complex() or t.dtype == torch.bool:
            raise SphericalCowError(f"t has dtype {t.dtype}; expected {allowed}")
        tt = t.detach().to(device="cpu", dtype=torch.float64).clone()
    else:
        try:
            arr = np.asarray(t)
        except (TypeError, ValueError):
            raise SphericalCowError(f"t={t!r} is not a number; expected {allowed}") from None
        if arr.dtype.kind not in "iuf":
            raise SphericalCowError(f"t={t!r} is not a number; expected {allowed}")
        tt = torch.from_numpy(np.array(arr, dtype=np.float64))
    if tt.ndim > 1:
        raise SphericalCowError(f"t has shape {tuple(tt.shape)}; expected a scalar or a 1-D array of {allowed}")
    scalar = tt.ndim == 0
    tt = tt.reshape(-1)
    bad = torch.isnan(tt) | (tt < 0)
    if integer:
        fin = torch.isfinite(tt)
        bad |= fin & (tt != torch.round(tt))
    if bool(bad.any()):
        v = float(tt[bad][0])
        raise SphericalCowError(f"t={v!r} is not allowed; expected {allowed}")
    return tt, scalar


# ----------------------------------------------------------------------------------------------------------------
# GP inference
# ----------------------------------------------------------------------------------------------------------------
def gp_inference(
    k_train_train: ArrayLike,
    y_train: ArrayLike,
    k_test_train: ArrayLike,
    k_test_test: ArrayLike | None = None,
    diag_reg: float = 0.0,
    *,
    diag_reg_absolute_scale: bool = False,
) -> GPPosterior:
    """Exact GP posterior at test points (noise-free, or with a diagonal ridge).

    Rasmussen & Williams (2006) eqs. (2.25)-(2.26), with ``K = k_train_train``, ``k_* = k_test_train``,
    ``k_** = k_test_test`` and ridge ``r``::

        mean       = k_* (K + r I)^{-1} y
        covariance = k_** - k_* (K + r I)^{-1} k_*^T

    computed as in their Algorithm 2.1 with the Cholesky factor L L^T = K + r I (``cov = k_** - V^T V`` with
    ``V = L^{-1} k_*^T``).  ``r = diag_reg * trace(K) / N`` (the neural-tangents convention: relative to the mean
    diagonal) or ``r = diag_reg`` with ``diag_reg_absolute_scale=True``.  With the NNGP kernel this is the infinite
    Bayesian network; with the NTK the mean is the t = inf limit of gradient descent (Lee et al. 2019 eq. (15)).

    Args:
        k_train_train: (N, N) symmetric positive (semi-)definite kernel on the training inputs.
        y_train: (N,) or (N, d_out) targets; a 1-D ``y_train`` gives a 1-D mean.
        k_test_train: (N_test, N) kernel between test and training inputs.
        k_test_test: optional (N_test, N_test) prior kernel on the test inputs; without it ``covariance`` is None.
        diag_reg: ridge strength >= 0 (see above).
        diag_reg_absolute_scale: if True, ``diag_reg`` is added as is.

    Raises:
        SphericalCowError: bad shapes, NaN/inf, asymmetric kernels, negative ``diag_reg``, or ``K + r I`` not
            numerically positive definite (then pass ``diag_reg > 0``).
    """
    k = _kernel("k_train_train", k_train_train, psd=True)
    n = k.shape[0]
    y1 = _as_f64("y_train", y_train, (1, 2), "shape (N,) or (N, d_out)")
    y = _targets("y_train", y1, n)
    ks = _kernel("k_test_train", k_test_train, cols=n)
    m = ks.shape[0]
    kss = None if k_test_test is None else _kernel("k_test_test", k_test_test, m, m, psd=m > 0)
    reg = _regulariser(k, diag_reg, diag_reg_absolute_scale)
    factor = _cholesky("k_train_train", k, reg)
    mean = ks @ torch.cholesky_solve(y, factor)
    if y1.ndim == 1:
        mean = mean[:, 0]
    cov = None
    if kss is not None:
        v = torch.linalg.solve_triangular(factor, ks.T, upper=False)
        cov = kss - v.T @ v
        cov = 0.5 * (cov + cov.T)
    return GPPosterior(mean=mean, covariance=cov)


# ----------------------------------------------------------------------------------------------------------------
# Gradient descent on the MSE loss
# ----------------------------------------------------------------------------------------------------------------
class NTKPredictor:
    """Outputs of an infinitely wide (linearised) network trained on the MSE loss, at any training time(s).

    Build once, call with times: ``NTKPredictor(ntk, y, lr, ntk_test_train=ks)(t=[0, 10, 100, math.inf])``.
    The eigendecomposition of the NTK (for finite times) and the Cholesky factor (for ``t = inf``) are computed on
    first use and cached, so later calls cost only matrix products.

    Loss and time.  ``L = 1/(2N) sum_i ||f(x_i) - y_i||^2``.  For a linearised network (Lee et al. 2019 eqs. (9)-(10))
    gradient flow with learning rate ``lr`` moves the training outputs as ``df/dt = -(lr/N) Theta (f - y)`` with the
    NTK ``Theta = ntk_train_train``; ``t`` is measured in steps of size ``lr``.  (Lee et al. absorb the 1/N into
    their eta: their ``eta`` is our ``lr / N``.  For a sum loss ``1/2 sum_i ||f - y||^2`` pass ``lr * N``.)
    Write ``a = lr / N``, ``Theta_r = Theta + r I`` (ridge ``r``, see ``diag_reg``), ``Theta_* = ntk_test_train``,
    ``f0 = f0_train``, ``f0_* = f0_test`` (default 0: the mean over random initialisations) and

        gradient flow (``gradient_flow=True``):       D(t) = exp(-a Theta_r t)
        gradient descent (``gradient_flow=False``):   D(t) = (I - a Theta_r)^t,   t = number of steps (integer)

    Then (Lee et al. 2019 eqs. (11)-(12); eq. (15) for the ensemble mean)::

        train_mean(t) = f0   + Theta   Theta_r^{-1} (I - D(t)) (y - f0)      ( = y + D(t) (f0 - y) when r = 0 )
        test_mean(t)  = f0_* + Theta_* Theta_r^{-1} (I - D(t)) (y - f0)

    and, for an ensemble of networks with f0 ~ GP(0, K) (K = NNGP kernel; ``M(t) = Theta_* Theta_r^{-1} (I - D(t))``),
    the covariance of the test outputs over initialisations (Lee et al. 2019 eq. (16))::

        test_covariance(t) = K_** + M K M^T - M K_{X*} - K_{*X} M^T

    with ``K = nngp_train_train``, ``K_{*X} = nngp_test_train``, ``K_** = nngp_test_test``.  It equals ``K_**`` at
    t = 0 and, when NNGP = NTK, the GP posterior covariance :func:`gp_inference` at t = inf.

    Numerics.  Finite t: one symmetric eigendecomposition ``Theta = V diag(lambda) V^T`` (``torch.linalg.eigh``,
    float64; eigenvalues in ``[-NEG_EIG_RTOL * lambda_max, 0)`` are rounding and are clipped to 0, more negative
    ones raise), vectorised over all t::

        Theta_* Theta_r^{-1} (I - D(t)) = Theta_* V diag(g(lambda + r, t)) V^T,
        g(mu, t) = -expm1(-a mu t) / mu  (flow)   or   (1 - (1 - a mu)^t) / mu  (steps; via expm1(t log1p(-a mu))),

    with the mu -> 0 limit ``g = a t`` (flat directions of the kernel do not move the outputs at finite t).
    ``t = inf``: ``D = 0`` (the limit, assuming a stable step ``lr < 2N / (lambda_max + r)`` for gradient descent;
    see :attr:`max_learning_rate`) via a Cholesky solve with ``Theta_r``, without the eigendecomposition; a singular
    ``Theta_r`` raises, suggesting ``diag_reg``.

    Args:
        ntk_train_train: (N, N) NTK on the training inputs (symmetric PSD).
        y_train: (N,) or (N, d_out) targets; 1-D targets give outputs without the d_out axis.
        lr: learning rate > 0.
        ntk_test_train: (N_test, N) NTK between test and training inputs; needed for ``test_mean``.
        nngp_train_train, nngp_test_train, nngp_test_test: NNGP kernels (N, N), (N_test, N), (N_test, N_test);
            all three (and ``ntk_test_train``) are needed for ``test_covariance``.
        ntk_test_test: (N_test, N_test) NTK on the test inputs.  Optional and validated, but eq. (16) does not
            contain it, so it does not change any output.
        f0_train, f0_test: outputs of one network at initialisation, shaped like ``y_train`` on the training and
            test inputs (give both when test kernels are given).  They describe one network, so they cannot be
            combined with the ensemble covariance (NNGP kernels).
        diag_reg: ridge strength >= 0; ``r = diag_reg * trace(Theta) / N`` (neural-tangents convention) or
            ``r = diag_reg`` if ``diag_reg_absolute_scale``.  Applied at every t (as in neural-tangents), so t = inf
            is the kernel ridge regression ``gp_inference(ntk_train_train, y, ntk_test_train, diag_reg=diag_reg)``.
        diag_reg_absolute_scale: see ``diag_reg``.
        gradient_flow: continuous-time flow (True) or discrete steps of size ``lr`` (False; integer ``t``).

    Raises:
        SphericalCowError: with a one-line message naming the bad value: shapes, NaN/inf, ``lr <= 0``,
            ``diag_reg < 0``, asymmetric or non-PSD NTK, inconsistent optional arguments, bad times.
    """

    def __init__(
        self,
        ntk_train_train: ArrayLike,
        y_train: ArrayLike,
        lr: float,
        *,
        ntk_test_train: ArrayLike | None = None,
        nngp_train_train: ArrayLike | None = None,
        nngp_test_train: ArrayLike | None = None,
        nngp_test_test: ArrayLike | None = None,
        ntk_test_test: ArrayLike | None = None,
        f0_train: ArrayLike | None = None,
        f0_test: ArrayLike | None = None,
        diag_reg: float = 0.0,
        diag_reg_absolute_scale: bool = False,
        gradient_flow: bool = True,
    ) -> None:
        theta = _kernel("ntk_train_train", ntk_train_train, psd=True)
        n = theta.shape[0]
        y1 = _as_f64("y_train", y_train, (1, 2), "shape (N,) or (N, d_out)")
        y = _targets("y_train", y1, n)
        d_out = y.shape[1]
        self.lr = check_positive("lr", lr)
        self.gradient_flow = bool(gradient_flow)
        self.reg = _regulariser(theta, diag_reg, diag_reg_absolute_scale)
        self._squeeze = y1.ndim == 1
        self._theta, self._y, self._n = theta, y, n

        nngp = {
            "nngp_train_train": nngp_train_train,
            "nngp_test_train": nngp_test_train,
            "nngp_test_test": nngp_test_test,
        }
        given = [k for k, v in nngp.items() if v is not None]
        if given and len(given) < 3:
            missing = ", ".join(k for k in nngp if k not in given)
            raise SphericalCowError(
                f"{', '.join(given)} given without {missing}; the test covariance needs all three NNGP kernels"
            )
        tests = [k for k, v in (("ntk_test_test", ntk_test_test), ("f0_test", f0_test)) if v is not None]
        if ntk_test_train is None and (given or tests):
            raise SphericalCowError(f"{(given + tests)[0]} given without ntk_test_train; test outputs need it")
        if given and (f0_train is not None or f0_test is not None):
            raise SphericalCowError(
                "f0_train/f0_test describe one network, but the NNGP kernels ask for the covariance over random "
                "initialisations; omit f0_train/f0_test or the NNGP kernels"
            )
        if ntk_test_train is not None and (f0_train is None) != (f0_test is None):
            have, lack = ("f0_train", "f0_test") if f0_test is None else ("f0_test", "f0_train")
            raise SphericalCowError(f"{have} given without {lack}; give both (or neither: f0 = 0)")

        self._f0 = None if f0_train is None else _targets("f0_train", f0_train, n, d_out)
        self._f0_test = None
        self._theta_s = self._k = self._k_sx = self._k_ss = None
        self.n_test: int | None = None
        if ntk_test_train is not None:
            ts = _kernel("ntk_test_train", ntk_test_train, cols=n)
            m = ts.shape[0]
            self._theta_s, self.n_test = ts, m
            if ntk_test_test is not None:
                _kernel("ntk_test_test", ntk_test_test, m, m, psd=m > 0)
            if f0_test is not None:
                self._f0_test = _targets("f0_test", f0_test, m, d_out)
            if given:
                self._k = _kernel("nngp_train_train", nngp_train_train, n, n, psd=True)
                self._k_sx = _kernel("nngp_test_train", nngp_test_train, m, n)
                self._k_ss = _kernel("nngp_test_test", nngp_test_test, m, m, psd=m > 0)
        self._eig: tuple[torch.Tensor, torch.Tensor] | None = None
        self._chol: torch.Tensor | None = None

    # -- cached factorisations ------------------------------------------------------------------------------------
    def _eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lambda, V) of the NTK, tiny negative eigenvalues clipped to 0; raise if clearly not PSD."""
        if self._eig is None:
            lam, vecs = torch.linalg.eigh(self._theta)
            lam_max = max(float(lam[-1]), 0.0)
            if float(lam[0]) < -NEG_EIG_RTOL * lam_max or (lam_max == 0.0 and float(lam[0]) < 0):
                raise SphericalCowError(
                    f"ntk_train_train has eigenvalue {float(lam[0]):.3g} < 0 (largest {lam_max:.3g}); "
                    "expected a positive semi-definite kernel"
                )
            self._eig = (lam.clamp_min(0.0), vecs)
        return self._eig

    def _factor(self) -> torch.Tensor:
        if self._chol is None:
            self._chol = _cholesky("ntk_train_train", self._theta, self.reg)
        return self._chol

    @property
    def max_learning_rate(self) -> float:
        """``2 N / (lambda_max + r)``: gradient descent (``gradient_flow=False``) converges for ``lr`` below it."""
        lam, _ = self._eigh()
        top = float(lam[-1]) + self.reg
        return math.inf if top <= 0 else 2.0 * self._n / top

    # -- the predictions ------------------------------------------------------------------------------------------
    def _g(self, t: torch.Tensor) -> torch.Tensor:
        """g(lambda + r, t) of shape (T, N): the eigenvalues of Theta_r^{-1} (I - D(t))."""
        lam, _ = self._eigh()
        mu = (lam + self.reg)[None, :]
        t = t[:, None]
        a = self.lr / self._n
        pos = mu > 0
        mu_safe = torch.where(pos, mu, torch.ones_like(mu))
        if self.gradient_flow:
            one_minus_d = -torch.expm1(-a * mu * t)
        else:
            x = a * mu
            small = x < 0.5  # log1p/expm1 are accurate here; elsewhere |1 - x| >= 1/2 and the power is harmless
            x_small = torch.where(small, x, torch.zeros_like(x))
            one_minus_d = torch.where(small, -torch.expm1(t * torch.log1p(-x_small)), 1.0 - torch.pow(1.0 - x, t))
        return torch.where(pos, one_minus_d / mu_safe, a * t.expand(-1, mu.shape[1]))

    def _finite(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        lam, vecs = self._eigh()
        g = self._g(t)  # (T, N)
        f0 = self._f0
        resid = self._y if f0 is None else self._y - f0
        z = vecs.T @ resid  # (N, d)
        train = torch.einsum("ij,tj,jd->tid", vecs, lam[None, :] * g, z)
        if f0 is not None:
            train = train + f0
        test = cov = None
        if self._theta_s is not None:
            a_mat = self._theta_s @ vecs  # (M, N)
            test = torch.einsum("ij,tj,jd->tid", a_mat, g, z)
            if self._f0_test is not None:
                test = test + self._f0_test
            if self._k is not None:
                b = vecs.T @ self._k @ vecs  # (N, N)
                c = vecs.T @ self._k_sx.T  # (N, M)
                ag = a_mat[None, :, :] * g[:, None, :]  # (T, M, N) = M(t) V
                cross = ag @ c
                cov = self._k_ss + ag @ b @ ag.transpose(1, 2) - cross - cross.transpose(1, 2)
                cov = 0.5 * (cov + cov.transpose(1, 2))
        return train, test, cov

    def _infinite(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        factor = self._factor()
        f0 = self._f0
        resid = self._y if f0 is None else self._y - f0
        alpha = torch.cholesky_solve(resid, factor)  # Theta_r^{-1} (y - f0)
        if self.reg == 0:
            train = self._y.clone()
        else:
            train = self._theta @ alpha if f0 is None else f0 + self._theta @ alpha
        test = cov = None
        if self._theta_s is not None:
            test = self._theta_s @ alpha
            if self._f0_test is not None:
                test = test + self._f0_test
            if self._k is not None:
                w = torch.cholesky_solve(self._theta_s.T, factor)  # (N, M) = M^T
                cross = w.T @ self._k_sx.T
                cov = self._k_ss + w.T @ self._k @ w - cross - cross.T
                cov = 0.5 * (cov + cov.T)
        return train, test, cov

    def __call__(self, t: ArrayLike) -> GradientDescentPrediction:
        """Predictions at time(s) ``t`` (scalar, or 1-D array of times >= 0; ``inf`` allowed anywhere).

        With ``gradient_flow=False`` the finite times must be integers (numbers of steps).
        """
        tt, scalar = _times(t, integer=not self.gradient_flow)
        n_t, n, d = tt.shape[0], self._n, self._y.shape[1]
        m = self.n_test
        train = torch.empty((n_t, n, d), dtype=torch.float64)
        test = None if m is None else torch.empty((n_t, m, d), dtype=torch.float64)
        cov = None if self._k is None or m is None else torch.empty((n_t, m, m), dtype=torch.float64)
        inf = torch.isinf(tt)
        for mask, parts in ((~inf, lambda: self._finite(tt[~inf])), (inf, self._infinite)):
            if not bool(mask.any()):
                continue
            tr, te, co = parts()
            train[mask] = tr
            if test is not None:
                test[mask] = te
            if cov is not None:
                cov[mask] = co
        if self._squeeze:
            train = train[..., 0]
            test = None if test is None else test[..., 0]
        if scalar:
            train = train[0]
            test = None if test is None else test[0]
            cov = None if cov is None else cov[0]
            tt = tt[0]
        return GradientDescentPrediction(t=tt, train_mean=train, test_mean=test, test_covariance=cov)


def gradient_descent_mse(
    ntk_train_train: ArrayLike,
    y_train: ArrayLike,
    lr: float,
    t: ArrayLike,
    *,
    ntk_test_train: ArrayLike | None = None,
    nngp_train_train: ArrayLike | None = None,
    nngp_test_train: ArrayLike | None = None,
    nngp_test_test: ArrayLike | None = None,
    ntk_test_test: ArrayLike | None = None,
    f0_train: ArrayLike | None = None,
    f0_test: ArrayLike | None = None,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    gradient_flow: bool = True,
) -> GradientDescentPrediction:
    """Outputs of the linearised network after training time(s) ``t`` on ``L = 1/(2N) sum_i ||f(x_i) - y_i||^2``.

    ``NTKPredictor(...)(t)``: see :class:`NTKPredictor` for the formulas (Lee et al. 2019 eqs. (11)-(12), (15)-(16);
    gradient flow ``train_mean(t) = y + exp(-lr Theta t / N) (f0 - y)``, test
    ``f0_* + Theta_* Theta^{-1} (I - exp(-lr Theta t / N)) (y - f0)``; ``(I - lr Theta / N)^t`` for
    ``gradient_flow=False``), the conventions (loss, ``diag_reg``) and the arguments.  Use :class:`NTKPredictor`
    directly to reuse its cached eigendecomposition across calls.
    """
    return NTKPredictor(
        ntk_train_train,
        y_train,
        lr,
        ntk_test_train=ntk_test_train,
        nngp_train_train=nngp_train_train,
        nngp_test_train=nngp_test_train,
        nngp_test_test=nngp_test_test,
        ntk_test_test=ntk_test_test,
        f0_train=f0_train,
        f0_test=f0_test,
        diag_reg=diag_reg,
        diag_reg_absolute_scale=diag_reg_absolute_scale,
        gradient_flow=gradient_flow,
    )(t)
