"""The ``cow ode`` command: the teacher-student ODEs of online SGD (Saad & Solla 1995; Goldt et al. 2019) for a
soft committee machine; :func:`register` adds it to the ``cow`` typer app.

Bad input raises :class:`~sphericalcow.errors.SphericalCowError` (``cli.main`` prints it as one line, exit 2).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from .errors import SphericalCowError, check_int, check_positive

__all__ = ["ode_cmd", "ode_summary", "register"]

_out = Console()

MAX_T = 10_000.0
"""Largest integration time t_max = steps / N allowed (LSODA needs ~7 s for t = 10^4 at K = M = 2; growing linearly)."""
MAX_STEPS = 10**10
"""Largest --steps allowed."""


def _symmetric_plateau(K: int, lr: float, lr_v: float, *, noise: float, train: str):
    """:func:`~sphericalcow.theory.teacher_student.symmetric_plateau` at a second-layer rate ``lr_v`` of its own.

    That function takes eta_v = eta. dv/dt is eta_v times a function of (Q, R, v), so for eta_v > 0 the fixed point
    (hence Q, C, R, v and eps_g) does not depend on eta_v, but its stability does: the eigenvalues (escape rate) are
    recomputed from the Jacobian of the full ODE at the real eta_v. eta_v = 0 leaves v at 1: the first-layer
    plateau."""
    import dataclasses

    import numpy as np

    from .theory.teacher_student import _jacobian, symmetric_plateau

    if train == "first" or lr_v == 0:
        return symmetric_plateau(K, lr, noise=noise, train="first")
    p = symmetric_plateau(K, lr, noise=noise, train="both")
    if lr_v == lr:
        return p
    Q, R, T, v, v_star = p.order_parameters()
    y = np.concatenate([Q.ravel(), R.ravel(), v])
    return dataclasses.replace(p, eigenvalues=np.linalg.eigvals(_jacobian(y, K, K, T, v_star, lr, lr_v, noise, train)))


def ode_summary(
    *,
    K: int,
    M: int,
    lr: float,
    steps: int,
    N: int = 1000,
    lr_v: float | None = None,
    noise: float = 0.0,
    train: str = "both",
    seed: int = 0,
    init_std: float = 0.3,
    n_points: int = 201,
) -> dict[str, Any]:
    """Integrate the ODEs from seeded initial order parameters (``random_order_parameters``) against an
    orthonormal teacher (T = I, v* = 1, v(0) = 1) and summarise: eps_g(t), the symmetric plateau (K = M >= 2),
    plateau stretch, specialisation time (first t with eps_g below half the plateau), final error, and for
    first-layer training with noise the asymptotic error eps_g* = K eta sigma^2 / (2 sqrt(3) pi)."""
    import numpy as np

    from .theory.teacher_student import (
        asymptotic_error_first_layer,
        integrate_ode,
        random_order_parameters,
    )

    K = check_int("--K", K, minimum=1)
    M = check_int("--M", M, minimum=1)
    if K > 20 or M > 20:
        raise SphericalCowError(f"--K={K}, --M={M} is not allowed; expected at most 20 units each")
    steps = check_int("--steps", steps, minimum=1)
    if steps > MAX_STEPS:
        raise SphericalCowError(f"--steps={steps} is not allowed; expected at most {MAX_STEPS:.0e}")
    N = check_int("--N", N, minimum=1)
    seed = check_int("--seed", seed, minimum=0)
    lr = check_positive("--lr", lr)
    lr_v = lr if lr_v is None else check_positive("--lr-v", lr_v, allow_zero=True)
    noise = check_positive("--noise", noise, allow_zero=True)
    init_std = check_positive("--init-std", init_std)
    n_points = check_int("--points", n_points, minimum=2)
    if train not in ("first", "both"):
        raise SphericalCowError(f"--train={train!r} is not allowed; expected 'first' or 'both'")
    t_max = steps / N
    if t_max > MAX_T:
        raise SphericalCowError(
            f"--steps / --N = {steps} / {N} = {t_max:g} is too long to integrate; expected t_max = steps / N <= "
            f"{MAX_T:g}"
        )
    Q0, R0, T = random_order_parameters(K, M, seed=seed, init_std=init_std)
    curve = integrate_ode(
        Q0, R0, T, np.ones(K), np.ones(M), lr=lr, lr_v=lr_v, noise=noise, train=train, t_max=t_max, n_points=n_points
    )
    out: dict[str, Any] = {
        "K": K,
        "M": M,
        "lr": lr,
        "lr_v": lr_v if train == "both" else None,
        "noise": noise,
        "train": train,
        "N": N,
        "steps": steps,
        "t_max": t_max,
        "seed": seed,
        "init_std": init_std,
        "time_unit": "t = SGD steps / N; first layer eta/sqrt(N) per step on w, second eta_v/N (Goldt et al. 2019)",
        "seconds": round(curve.seconds, 4),
        "eps_g_initial": float(curve.eps_g[0]),
        "eps_g_final": float(curve.eps_g[-1]),
        "plateau": None,
        "curve": {"t": curve.t, "steps": np.round(curve.t * N).astype(int), "eps_g": curve.eps_g},
        "_curve": curve,
    }
    if K == M and K >= 2:
        try:
            p = _symmetric_plateau(K, lr, lr_v, noise=noise, train=train)
        except SphericalCowError:
            p = None
        if p is not None:
            start, end, length = curve.plateau(p.eps_g)
            t_spec = curve.time_below(p.eps_g / 2)
            out["plateau"] = {
                **p.to_dict(),
                "start_t": start,
                "end_t": end,
                "length_t": length,
                "specialisation_t": t_spec,
                "specialisation_steps": None if math.isnan(t_spec) else round(t_spec * N),
            }
    if train == "first" and noise > 0 and K == M:
        out["asymptotic_eps_g_leading_order"] = asymptotic_error_first_layer(lr, noise, K)
    return out


def ode_cmd(
    K: Annotated[int, typer.Option("--K", help="student hidden units")] = 2,
    M: Annotated[int, typer.Option("--M", help="teacher hidden units")] = 2,
    lr: Annotated[float, typer.Option("--lr", help="first-layer learning rate eta (eta/sqrt(N) per step)")] = 0.5,
    steps: Annotated[int, typer.Option("--steps", help="SGD steps to integrate (t_max = steps / N)")] = 50_000,
    lr_v: Annotated[float | None, typer.Option("--lr-v", help="second-layer learning rate (default --lr)")] = None,
    noise: Annotated[float, typer.Option("--noise", help="teacher output-noise std sigma")] = 0.0,
    train: Annotated[str, typer.Option("--train", help="first (v fixed) or both layers")] = "both",
    N: Annotated[int, typer.Option("--N", help="input dimension: the time unit (t = steps / N)")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the initial order parameters")] = 0,
    init_std: Annotated[float, typer.Option("--init-std", help="initial weight scale (Q0 ~ init_std^2)")] = 0.3,
    points: Annotated[int, typer.Option("--points", help="time points in the curve")] = 201,
    out: Annotated[Path | None, typer.Option("--out", help="CSV file for the curve (not overwritten)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Teacher-student ODEs of online SGD for a soft committee machine: eps_g(t), plateau, specialisation."""
    if out is not None:
        if out.suffix.lower() != ".csv":
            raise SphericalCowError(f"--out={str(out)!r} must end in .csv")
        if out.exists():
            raise SphericalCowError(f"--out={str(out)!r} already exists; choose a new file (nothing is overwritten)")
        if not out.parent.exists():
            raise SphericalCowError(f"--out={str(out)!r}: folder {str(out.parent)!r} does not exist")
    s = ode_summary(
        K=K,
        M=M,
        lr=lr,
        steps=steps,
        N=N,
        lr_v=lr_v,
        noise=noise,
        train=train,
        seed=seed,
        init_std=init_std,
        n_points=points,
    )
    curve = s.pop("_curve")
    if out is not None:
        with open(out, "x", newline="") as f:
            w = csv.writer(f)
            K_, M_ = curve.R.shape[1:]
            qcols = [f"Q{i}{j}" for i in range(K_) for j in range(K_) if j >= i]
            rcols = [f"R{i}{n}" for i in range(K_) for n in range(M_)]
            w.writerow(["t", "steps", "eps_g", *qcols, *rcols, *(f"v{i}" for i in range(K_))])
            for j, t in enumerate(curve.t):
                q = [curve.Q[j, a, b] for a in range(K_) for b in range(K_) if b >= a]
                w.writerow([t, round(t * N), curve.eps_g[j], *q, *curve.R[j].ravel(), *curve.v[j]])
    if as_json:
        from .report.jsonio import to_jsonable

        sys.stdout.write(json.dumps(to_jsonable(s), indent=2, allow_nan=False) + "\n")
        return
    t = RichTable(title=f"eps_g(t): K={s['K']} students, M={s['M']} teachers, eta={s['lr']:g}, train {s['train']}")
    for col in ("t", "steps", "eps_g"):
        t.add_column(col, justify="right")
    n = len(curve.t)
    for j in sorted({round(i * (n - 1) / 12) for i in range(13)}):
        t.add_row(f"{curve.t[j]:.4g}", str(round(curve.t[j] * N)), f"{curve.eps_g[j]:.6g}")
    _out.print(t)
    p = s["plateau"]
    if p is not None:
        _out.print(
            f"symmetric plateau: eps_g = {p['eps_g']:.6g} (Q = {p['Q']:.4g}, C = {p['C']:.4g}, R = {p['R']:.4g}), "
            f"escape rate {p['escape_rate']:.4g}; curve within 10% of it for t in [{p['start_t']:.4g}, "
            f"{p['end_t']:.4g}] (length {p['length_t']:.4g}); specialisation (eps_g < plateau/2) at t = "
            f"{p['specialisation_t']:.4g}",
            highlight=False,
        )
    if "asymptotic_eps_g_leading_order" in s:
        _out.print(f"asymptotic eps_g* ~ K eta sigma^2/(2 sqrt3 pi) = {s['asymptotic_eps_g_leading_order']:.6g}")
    _out.print(f"final eps_g = {s['eps_g_final']:.6g}; integrated in {s['seconds']:.3f} s", highlight=False)
    if out is not None:
        _out.print(f"wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``cow ode`` to ``app``."""
    app.command("ode")(ode_cmd)
