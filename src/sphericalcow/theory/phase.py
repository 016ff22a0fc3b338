"""Phase diagram over (C_W, C_b): order-chaos boundary and depth-scale map for any activation.

For every grid point the fixed point K* reached from K^{(1)} = C_b + C_W q0 is found (:func:`fixed_point`) and
chi_perp(K*) = C_W <sigma'^2>_{K*} evaluated (Roberts & Yaida 2022, eq. 5.10). The boundary chi_perp = 1 is the
order-to-chaos transition of Poole et al. (2016) and Schoenholz et al. (2017, Fig. 1); the critical line is also
traced directly, point by point, by :func:`critical_init` (roots of h(K*) = C_b, an independent route to the same
curve). Where the boundary is a jump rather than a critical line (GELU and SiLU below their critical C_b, where K*
runs off to infinity instead of crossing chi_perp = 1 continuously) no line is drawn.
Where K grows without bound the susceptibilities are evaluated at K = 1e4 (their large-K value) and the point is
flagged as diverging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..activations import Activation, activation
from ..errors import SphericalCowError, check_int, check_positive
from .criticality import (
    chi_parallel,
    chi_perpendicular,
    critical_init,
    critical_point,
    fixed_point,
)

_K_DIVERGED_EVAL = 1e4


@dataclass(frozen=True)
class PhaseDiagram:
    """Grids are indexed [i_cb, i_cw]."""

    activation: str
    cw: np.ndarray
    cb: np.ndarray
    q0: float
    K_star: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    diverged: np.ndarray
    line_cb: np.ndarray  # critical line traced directly: C_b values ...
    line_cw: np.ndarray  # ... and the C_W on the line (nan where none)

    @property
    def xi_perp(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / np.abs(np.log(self.chi_perp))

    def to_dict(self) -> dict:
        return {
            "activation": self.activation,
            "cw": self.cw,
            "cb": self.cb,
            "q0": self.q0,
            "K_star": self.K_star,
            "chi_par": self.chi_par,
            "chi_perp": self.chi_perp,
            "diverged": self.diverged,
            "critical_line": {"cb": self.line_cb, "cw": self.line_cw},
        }


def default_ranges(act: Activation) -> tuple[float, float]:
    """(C_W max, C_b max) that frame the activation's critical point."""
    try:
        cp = critical_point(act)
        return 2.5 * cp.cw, max(0.5, 2.5 * cp.cb)
    except SphericalCowError:
        return 4.0, 0.5


def phase_diagram(
    act: str | Activation,
    cw: Sequence[float] | np.ndarray | None = None,
    cb: Sequence[float] | np.ndarray | None = None,
    *,
    n: int = 41,
    q0: float = 1.0,
    n_line: int = 21,
) -> PhaseDiagram:
    """Evaluate K*, chi_par, chi_perp on a (C_b, C_W) grid and trace the critical line chi_perp = 1.

    Each grid point starts from the first-layer kernel of inputs with |x|^2 / n_0 = ``q0``:
    K^{(1)} = C_b + C_W q0 (Roberts & Yaida eq. 4.117), which selects the fixed point where there are several.
    """
    act = act if isinstance(act, Activation) else activation(act)
    n = check_int("n", n, minimum=2)
    q0 = check_positive("q0", q0)
    cw_max, cb_max = default_ranges(act)
    cw = np.linspace(cw_max / n, cw_max, n) if cw is None else np.asarray(cw, dtype=np.float64)
    cb = np.linspace(0.0, cb_max, n) if cb is None else np.asarray(cb, dtype=np.float64)
    for name, arr, zero_ok in (("cw", cw, False), ("cb", cb, True)):
        if (
            arr.ndim != 1
            or arr.size < 2
            or not np.isfinite(arr).all()
            or (arr < 0).any()
            or (not zero_ok and (arr <= 0).any())
        ):
            raise SphericalCowError(
                f"{name} grid {arr!r} is not allowed; expected >= 2 finite values {'>= 0' if zero_ok else '> 0'}"
            )
    CB, CW = np.meshgrid(cb, cw, indexing="ij")
    K_star, status = fixed_point(act, CW, CB, CB + CW * q0)
    diverged = status == 1
    K_eval = np.where(diverged, _K_DIVERGED_EVAL, np.nan_to_num(K_star, nan=1.0))
    chi_par = chi_parallel(act, CW, K_eval)
    chi_perp = chi_perpendicular(act, CW, K_eval)
    chi_perp = np.where(status == 2, np.nan, chi_perp)
    line_cb = np.linspace(cb.min(), cb.max(), n_line)
    line_cw = np.full(n_line, np.nan)
    for i, b in enumerate(line_cb):
        try:  # attracting critical points only: a repelling chi_perp = 1 point is no phase boundary
            line_cw[i] = critical_init(act, float(b))[0]
        except SphericalCowError:
            pass
    return PhaseDiagram(act.spec, cw, cb, q0, K_star, chi_par, chi_perp, diverged, line_cb, line_cw)


def plot_phase_diagram(pd: PhaseDiagram, marks: Sequence[tuple[float, float, str]] = (), *, title: str | None = None):
    """Two panels: log chi_perp (blue ordered, red chaotic) and the depth scale xi_perp, with the boundary.

    ``marks`` are (C_W, C_b, label) points, e.g. the networks a study measured.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, TwoSlopeNorm

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    extent = (pd.cw[0], pd.cw[-1], pd.cb[0], pd.cb[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        logchi = np.log(pd.chi_perp)
    # each side saturates at its own extreme (clipped to +-2), so a weakly chaotic side stays visible
    finite = logchi[np.isfinite(logchi)]
    lo = min(-1e-3, max(-2.0, float(finite.min()) if finite.size else -1.0))
    hi = max(1e-3, min(2.0, float(finite.max()) if finite.size else 1.0))
    im = axes[0].imshow(
        np.clip(logchi, lo, hi),
        origin="lower",
        extent=extent,
        aspect="auto",
        cmap="RdBu_r",
        norm=TwoSlopeNorm(0.0, lo, hi),
    )
    fig.colorbar(im, ax=axes[0], label=r"$\log \chi_\perp$  (ordered < 0 < chaotic)")
    xi = np.clip(pd.xi_perp, 1e-1, 1e4)
    im2 = axes[1].imshow(
        xi,
        origin="lower",
        extent=extent,
        aspect="auto",
        cmap="viridis",
        norm=LogNorm(vmin=max(float(np.nanmin(xi)), 0.1), vmax=float(np.nanmax(xi))),
    )
    fig.colorbar(im2, ax=axes[1], label=r"depth scale $\xi_\perp = 1/|\log\chi_\perp|$")
    for ax in axes:
        if np.isfinite(logchi).any() and np.nanmin(logchi) < 0 < np.nanmax(logchi):
            ax.contour(pd.cw, pd.cb, logchi, levels=[0.0], colors="k", linewidths=1.5)
        ok = np.isfinite(pd.line_cw)
        ax.plot(pd.line_cw[ok], pd.line_cb[ok], "w--", lw=1.2, label=r"critical line ($\chi_\perp=1$, traced)")
        if pd.diverged.any():
            ax.contourf(pd.cw, pd.cb, pd.diverged.astype(float), levels=[0.5, 1.5], colors="none", hatches=["//"])
        for cw, cb, label in marks:
            ax.plot(cw, cb, "o", ms=8, mfc="gold", mec="k")
            ax.annotate(
                label,
                (cw, cb),
                textcoords="offset points",
                xytext=(6, 5),
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.75, "lw": 0},
            )
        ax.set_xlim(pd.cw[0], pd.cw[-1])
        ax.set_ylim(pd.cb[0], pd.cb[-1])
        ax.set_xlabel(r"$C_W$")
        ax.set_ylabel(r"$C_b$")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(
        title
        or f"Phase diagram of {pd.activation} (fixed point from $K^{{(1)}}=C_b+C_W"
        + ("" if pd.q0 == 1 else f"\\,{pd.q0:g}")
        + "$; hatched: K diverges)"
    )
    return fig
