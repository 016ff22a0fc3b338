"""Study ``landscape``: three claims about the loss landscape of trained networks, measured with the Hessian tools.

1. **Concentration of minima with width** (Choromanska, Henaff, Mathieu, Ben Arous & LeCun 2015, "The loss surfaces
   of multilayer networks", AISTATS, sec. 6 and the histograms of final losses for growing numbers of hidden units on
   downscaled MNIST): for larger networks the losses of the minima reached from different random initialisations
   spread less, concentrating in a band above the global minimum, while their mean falls. Choromanska et al. make the
   claim for UNDER-parameterised networks (hidden units 25..500, 60 000 points) trained to the end of SGD. Measured
   in that regime: one-hidden-layer tanh students of widths 8..32 (at most 321 parameters for 2000 points) on a
   task no student can represent (a tanh teacher of width 512 with pre-activation std 2, noiseless, so no label
   noise is fitted and no loss goes to zero), ``n_seeds`` initialisations per width trained together as batched
   matrices with full-batch Adam (cosine-decayed to 0) until the loss plateaus. Convergence is checked and reported:
   no member's loss may fall by more than half the between-seed std over the last quarter of training, and the final
   gradient norm is given against the initial one. Graded: the least-squares slope of log(std over seeds) against
   log(width) of the final train and test losses, with a percentile bootstrap over seeds; the claim holds if the CI
   lies below 0 and training converged. Reported: IQR and relative spread (std/mean) slopes, per-width spreads with
   CIs, and the slope of the mean loss (a third verdict: it must fall).
2. **Bulk and outliers** (Sagun, Evci, Guney, Dauphin & Bottou 2017, "Empirical analysis of the Hessian of
   over-parametrized neural networks", sec. 3; Papyan 2019, "Measurements of three-level hierarchical structure in
   the outliers in the spectrum of deepnet Hessians", ICML; Papyan 2020, JMLR 21, sec. 3): the Hessian of a
   classifier trained with cross-entropy on C classes has a bulk near zero and a few large outliers that come from
   the class structure of the gradients. The outliers are the class-mean part of the Gauss-Newton term, G_class =
   sum_c p_c J_c^T H_out J_c (J_c the mean Jacobian of class c); the output Hessian of softmax cross-entropy,
   diag(p) - p p^T, annihilates the all-ones logit direction, so this part has rank at most C - 1: we predict
   exactly C - 1 outliers (Sagun et al. report "about C"). Counted: the position of the largest ratio
   lambda_i / lambda_{i+1} among the top 3C eigenvalues (Lanczos), at the end of training, for two class counts.
3. **Edge of stability** (Cohen, Kaur, Li, Kolter & Talwalkar 2021, "Gradient descent on neural networks typically
   occurs at the edge of stability", ICLR, sec. 3): full-batch gradient descent with step eta on MSE first
   sharpens (the top Hessian eigenvalue grows) until the sharpness reaches the stability limit 2/eta of the
   quadratic model, then hovers at 2/eta while the loss keeps decreasing non-monotonically. Measured: the sharpness
   (top eigenvalue by Lanczos) every few steps for two step sizes chosen so that 2/eta is 1.5x and 2x the
   initial sharpness; the claim holds if the sharpness rises to >= 0.9 (2/eta) and its mean over the second half
   of training lies within 10% of 2/eta.

Finding (2026-11): part 1 reproduces on the training loss, more weakly on the test loss, and only for the absolute
spread. Defaults (8 seeds, 2000 points, widths 8, 16, 32): the std of the final training MSE is 2.18e-3, 9.1e-4,
4.5e-4 (log-log slope -1.14, 95% CI [-1.64, -0.43]) while the mean falls 0.061, 0.037, 0.021 (slope -0.78); the test
std slope is -0.59 [-1.0, -0.30]. With 16 seeds at widths 8 and 32 the train slope is -0.98 [-1.20, -0.75], the test
slope -0.37 [-0.84, -0.03]. On a larger draw (the slow test: 16 seeds, 4000 points, widths 8..64, 4000 steps) the
train spread still shrinks (std 1.19e-3, 6.5e-4, 5.8e-4, 2.9e-4: slope -0.62 [-1.05, -0.26]; IQR slope -0.78 [-1.30,
-0.11]) but more slowly than the mean (slope -0.87), so the relative spread std/mean does not shrink (slope +0.25
[-0.18, 0.60]), and the test spread does not resolve (slope -0.22 [-0.51, 0.11]; the test verdict FAILS there): the
test loss adds the seed-dependent estimation error of a fit with 6..50 points per parameter. At 2500 steps the
width-64 students had not plateaued by the criterion above (0.63 x std in the last quarter; 0.35 at 4000 steps). The
claim is about large networks: below the default widths the spread first RISES (widths 2, 4, 8 at 3000 steps: std
5e-9, 2.0e-3, 2.2e-3; every width-2 student reaches the same minimum), so the graded widths start past that peak. With
label noise (an earlier version: 2000 noisy points, widths 2..128) the spread did not shrink, consistent with wide
students fitting a seed-dependent part of the noise, a fluctuation of order noise^2 sqrt(2 parameters) / points that
grows with width. Resolving the test-loss and relative-spread trends needs, by our estimate (not measured), >= 50
points per parameter at every width (30 000 points for widths up to 64) and >= 32 seeds.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import SphericalCowError
from ..measure.hessian import HessianOperator, lanczos, spectral_density
from ..measure.stats import Estimate, bootstrap_ci
from ..progress import progress_bar
from ..report import FigureSpec, Result, Table, Verdict
from .base import Study, StudyConfig, register


class LandscapeConfig(StudyConfig):
    seed: int = Field(0, ge=0)
    d_in: int = Field(10, ge=1, le=10_000, description="input dimension of the data of parts 2 and 3")
    level: float = Field(0.95, gt=0.5, lt=1)
    # 1. concentration of minima
    task: Literal["teacher", "digits"] = Field(
        "teacher",
        description="part 1 data: 'teacher' (a tanh teacher much wider than every student, Gaussian inputs) or "
        "'digits' (scikit-learn's 8x8 digits, MSE on one-hot labels)",
    )
    widths: list[int] = Field(default_factory=lambda: [8, 16, 32], min_length=2)
    n_seeds: int = Field(8, ge=3, le=1000, description="initialisations per width (part 1)")
    concentration_d_in: int = Field(8, ge=1, le=10_000, description="input dimension of the 'teacher' task (part 1)")
    concentration_n_train: int = Field(2000, ge=4, le=1_000_000, description="training points ('teacher' task)")
    concentration_n_test: int = Field(2000, ge=4, le=1_000_000, description="test points ('teacher' task)")
    concentration_teacher_width: int = Field(512, ge=1, le=100_000, description="hidden units of the wide teacher")
    teacher_gain: float = Field(
        2.0, gt=0, allow_inf_nan=False, description="std of the wide teacher's pre-activations (its roughness)"
    )
    label_noise: float = Field(0.0, ge=0, allow_inf_nan=False, description="std of Gaussian label noise (part 1)")
    digits_pool: Literal[1, 2, 4] = Field(1, description="average-pool the 8x8 digits to (8/pool)^2 pixels")
    train_steps: int = Field(2000, ge=10, le=1_000_000, description="full-batch Adam steps, cosine-decayed (part 1)")
    adam_lr: float = Field(0.03, gt=0, allow_inf_nan=False, description="initial Adam step (part 1)")
    plateau_tolerance: float = Field(
        0.5,
        gt=0,
        allow_inf_nan=False,
        description="converged if no member's loss fell by more than this times the between-seed std over the last "
        "quarter of training (part 1)",
    )
    # 2. bulk and outliers
    classes: list[int] = Field(default_factory=lambda: [4, 6], min_length=1)
    n_per_class: int = Field(100, ge=2, le=100_000)
    separation: float = Field(3.0, gt=0, allow_inf_nan=False, description="|class mean| / noise std")
    spectrum_width: int = Field(64, ge=2, le=100_000, description="width of the two hidden ReLU layers (part 2)")
    spectrum_steps: int = Field(200, ge=1, le=1_000_000, description="full-batch SGD steps (part 2)")
    spectrum_lr: float = Field(0.05, gt=0, allow_inf_nan=False)
    # 3. edge of stability
    n_train: int = Field(200, ge=4, le=100_000, description="teacher-labelled training points (part 3)")
    teacher_width: int = Field(32, ge=1, le=10_000, description="hidden units of the part 3 teacher")
    eos_factors: list[float] = Field(
        default_factory=lambda: [1.5, 2.0], min_length=1, description="2/eta as multiples of the initial sharpness"
    )
    eos_width: int = Field(32, ge=2, le=100_000, description="width of the two hidden tanh layers (part 3)")
    eos_steps: int = Field(1000, ge=10, le=1_000_000)
    eos_every: int = Field(25, ge=1, le=100_000, description="steps between sharpness measurements")

    @model_validator(mode="after")
    def _check(self) -> LandscapeConfig:
        if any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be >= 1; got {self.widths}")
        if sorted(set(self.widths)) != self.widths:
            raise ValueError(f"widths must be strictly increasing; got {self.widths}")
        if any(c < 2 for c in self.classes):
            raise ValueError(f"classes must be >= 2; got {self.classes}")
        if any(not (f > 1.0 and math.isfinite(f)) for f in self.eos_factors):
            raise ValueError(f"eos_factors must be > 1 (2/eta above the initial sharpness); got {self.eos_factors}")
        return self


# ------------------------------------------------------------------------------------------------------- data


def teacher_data(cfg: LandscapeConfig, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (default ``n_train``) Gaussian inputs and targets of a random one-hidden-layer tanh teacher, normalised to
    unit variance (part 3)."""
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.n_train if n is None else n, cfg.d_in, generator=g)
    w1 = torch.randn(cfg.d_in, cfg.teacher_width, generator=g) / math.sqrt(cfg.d_in)
    w2 = torch.randn(cfg.teacher_width, 1, generator=g) / math.sqrt(cfg.teacher_width)
    y = torch.tanh(x @ w1) @ w2
    return x, y / y.std()


def concentration_data(cfg: LandscapeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test sets of part 1, ``(x_train, y_train, x_test, y_test)``, float32, targets of shape ``(n, k)``.

    'teacher': Gaussian inputs in ``concentration_d_in`` dimensions, targets ``a . tanh(W x + b)`` of a teacher with
    ``concentration_teacher_width`` hidden units (``W x + b`` has std ``teacher_gain`` per unit), centred and scaled to
    unit variance, plus Gaussian noise of std ``label_noise``: no student narrower than the teacher can represent it,
    so every student's global minimum lies above zero. 'digits': :func:`sphericalcow.data.digits` (1437 train, 360
    test, standardised), optionally average-pooled by ``digits_pool``, targets one-hot over the 10 classes."""
    if cfg.task == "digits":
        from ..data import digits

        tr, te = digits(seed=cfg.seed)

        def prep(x: torch.Tensor) -> torch.Tensor:
            if cfg.digits_pool > 1:
                x = nn.functional.avg_pool2d(x.view(-1, 1, 8, 8), cfg.digits_pool).flatten(1)
            return x

        xtr, xte = prep(tr.x), prep(te.x)
        mu, sd = xtr.mean(0), xtr.std(0)
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        eye = torch.eye(10)
        return (xtr - mu) / sd, eye[tr.y], (xte - mu) / sd, eye[te.y]
    g = torch.Generator().manual_seed(cfg.seed + 104_729)
    n, n_test, k = cfg.concentration_n_train, cfg.concentration_n_test, cfg.concentration_teacher_width
    d = cfg.concentration_d_in
    x = torch.randn(n + n_test, d, generator=g, dtype=torch.float64)
    w1 = torch.randn(d, k, generator=g, dtype=torch.float64) * (cfg.teacher_gain / math.sqrt(d + 1))
    b1 = torch.randn(k, generator=g, dtype=torch.float64) * (cfg.teacher_gain / math.sqrt(d + 1))
    a = torch.randn(k, 1, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ w1 + b1) @ a
    y = (y - y.mean()) / y.std()
    y = y + cfg.label_noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    x, y = x.float(), y.float()
    return x[:n], y[:n], x[n:], y[n:]


def mixture_data(cfg: LandscapeConfig, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C Gaussian classes, unit noise, means at distance ``separation`` from the origin in random directions."""
    g = torch.Generator().manual_seed(cfg.seed * 1000 + C)
    mu = torch.randn(C, cfg.d_in, generator=g)
    mu = mu / mu.norm(dim=1, keepdim=True) * cfg.separation
    labels = torch.arange(C * cfg.n_per_class) % C
    return mu[labels] + torch.randn(len(labels), cfg.d_in, generator=g), labels


# ----------------------------------------------------------------------------------------------------- part 1


def student_seed(cfg: LandscapeConfig, width: int, s: int) -> int:
    """Torch seed of member ``s`` of the width-``width`` ensemble (its PyTorch-default initialisation)."""
    return cfg.seed * 100_003 + width * 1009 + s


def cosine_lr(step: int, total: int) -> float:
    """Multiplier of the initial step at ``step``: ``(1 + cos(pi step / total)) / 2``, from 1 down to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * step / total))


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member loss: squared error summed over outputs, averaged over points; ``out`` is (members, n, k)."""
    return ((out - y) ** 2).sum(-1).mean(-1)


def train_ensemble(
    cfg: LandscapeConfig,
    width: int,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Train ``n_seeds`` one-hidden-layer tanh networks ``d -> width -> k`` (PyTorch default init, member ``s`` seeded
    by :func:`student_seed`) on the full batch ``(x, y)`` with Adam (step ``adam_lr`` decayed by :func:`cosine_lr` to 0
    over ``train_steps``), all members at once as batched matrices. The loss minimised is the sum of the members'
    losses, and Adam is element-wise, so every member follows exactly its own independent trajectory.

    Returns float64 arrays over members: ``train`` and ``test`` (final losses), ``grad_norm`` and ``grad_norm0``
    (full-batch gradient norm at the end and at the start), ``curve`` (losses at ``curve_steps``, 41 points)."""
    d, k, S = x.shape[1], y.shape[1], cfg.n_seeds
    w1, b1 = torch.empty(S, d, width), torch.empty(S, 1, width)
    w2, b2 = torch.empty(S, width, k), torch.empty(S, 1, k)
    with torch.no_grad():
        for s in range(S):
            torch.manual_seed(student_seed(cfg, width, s))
            l1, l2 = nn.Linear(d, width), nn.Linear(width, k)
            w1[s], b1[s, 0], w2[s], b2[s, 0] = l1.weight.T, l1.bias, l2.weight.T, l2.bias
    params = [p.requires_grad_(True) for p in (w1, b1, w2, b2)]

    def losses(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.matmul(xx, params[0]) + params[1])
        return _mse(torch.baddbmm(params[3], h, params[2]), yy)

    def grad_norm() -> torch.Tensor:
        for p in params:
            p.grad = None
        losses(x, y).sum().backward()
        return torch.sqrt(sum((p.grad.detach() ** 2).flatten(1).sum(1) for p in params))

    g0 = grad_norm()
    opt = torch.optim.Adam(params, lr=cfg.adam_lr)
    T = cfg.train_steps
    marks = {round(T * i / 40) for i in range(41)}
    curve_steps, curve = [], []
    for t in range(T):
        for group in opt.param_groups:
            group["lr"] = cfg.adam_lr * cosine_lr(t, T)
        opt.zero_grad()
        loss = losses(x, y)
        if t in marks:
            curve_steps.append(t)
            curve.append(loss.detach().double().numpy().copy())
        loss.sum().backward()
        opt.step()
    g = grad_norm()
    with torch.no_grad():
        final = losses(x, y).double().numpy()
        test = losses(x_test, y_test).double().numpy() if x_test is not None else np.full(S, np.nan)
    curve_steps.append(T)
    curve.append(final)
    return {
        "train": final,
        "test": test,
        "grad_norm": g.double().numpy(),
        "grad_norm0": g0.double().numpy(),
        "curve_steps": np.array(curve_steps),
        "curve": np.stack(curve, axis=1),
    }


def spread(losses: np.ndarray, kind: str = "std") -> np.ndarray:
    """Spread over seeds along axis -2 (losses ``(..., n_seeds, n_widths)``): ``std`` (ddof 1), ``iqr``
    (75th - 25th percentile) or ``rel`` (std / mean)."""
    if kind == "std":
        return losses.std(axis=-2, ddof=1)
    if kind == "iqr":
        q75, q25 = np.percentile(losses, [75, 25], axis=-2)
        return q75 - q25
    if kind == "rel":
        return losses.std(axis=-2, ddof=1) / losses.mean(axis=-2)
    raise SphericalCowError(f"kind={kind!r} is not a spread; allowed: 'std', 'iqr', 'rel'")


def log_slope(widths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``log(values)`` against ``log(widths)`` along the last axis (values clipped at 1e-300
    so that a zero spread in a bootstrap replicate counts as very small, not as an error)."""
    lx = np.log(np.asarray(widths, dtype=np.float64))
    lx = lx - lx.mean()
    ly = np.log(np.maximum(values, 1e-300))
    return (ly * lx).sum(-1) / (lx**2).sum()


def spread_slope(
    losses: np.ndarray, widths: list[int], kind: str = "std", *, level: float = 0.95, seed: int = 0
) -> Estimate:
    """Slope of log(spread over seeds) vs log(width), ``losses`` of shape ``(n_seeds, n_widths)`` (member ``s`` of
    every width in row ``s``; the widths' seeds are independent, so resampling rows resamples each width's seeds).
    Percentile bootstrap over seeds (:func:`~sphericalcow.measure.stats.bootstrap_ci`, 4000 replicates)."""
    w = np.asarray(widths, dtype=np.float64)
    return bootstrap_ci(
        np.asarray(losses, dtype=np.float64),
        lambda a: log_slope(w, spread(a, kind)),
        n_boot=4000,
        level=level,
        seed=seed,
        vectorized=True,
    )


def spread_ci(losses: np.ndarray, kind: str, *, level: float, seed: int) -> Estimate:
    """Per-width spread (``losses`` ``(n_seeds, n_widths)``) with a percentile-bootstrap CI over seeds."""
    return bootstrap_ci(
        np.asarray(losses, dtype=np.float64),
        lambda a: spread(a, kind),
        n_boot=4000,
        level=level,
        seed=seed,
        vectorized=True,
    )


def concentration(cfg: LandscapeConfig, *, progress: bool = False) -> dict[str, Any]:
    """Part 1: train ``n_seeds`` students of every width on :func:`concentration_data`, measure the spread of their
    final train and test losses, grade the spread's log-log slope against width, and report convergence.

    Returns ``verdicts``, ``tables`` and ``data`` (losses ``(n_seeds, n_widths)``, gradient norms, curves, slopes)."""
    x, y, xt, yt = concentration_data(cfg)
    n, d, k = x.shape[0], x.shape[1], y.shape[1]
    runs = []
    with progress_bar(len(cfg.widths), "landscape: training ensembles", enabled=progress) as adv:
        for w in cfg.widths:
            runs.append(train_ensemble(cfg, w, x, y, xt, yt))
            adv(1)
    train = np.stack([r["train"] for r in runs], axis=1)
    test = np.stack([r["test"] for r in runs], axis=1)
    lv, sd = cfg.level, cfg.seed
    n_params = [(d + 1) * w + (w + 1) * k for w in cfg.widths]
    # convergence: how much each member's loss still fell over the last quarter of training (the step is still
    # 15% of the initial one at its start), against the spread between members; and the final gradient norm
    quarter = [int(np.searchsorted(r["curve_steps"], (3 * cfg.train_steps) // 4)) for r in runs]
    drop = np.array([float(np.max(r["curve"][:, q] - r["train"])) for r, q in zip(runs, quarter, strict=True)])
    stds = spread(train, "std")
    drop_ratio = drop / stds
    converged = bool(np.all(drop_ratio <= cfg.plateau_tolerance))
    grad_rel = np.array([float(np.max(r["grad_norm"] / r["grad_norm0"])) for r in runs])

    slopes: dict[str, dict[str, Estimate]] = {}
    per_width: dict[str, dict[str, Estimate]] = {}
    for name, losses in (("train", train), ("test", test)):
        slopes[name] = {
            kind: spread_slope(losses, cfg.widths, kind, level=lv, seed=sd) for kind in ("std", "iqr", "rel")
        }
        per_width[name] = {kind: spread_ci(losses, kind, level=lv, seed=sd) for kind in ("std", "iqr")}
        slopes[name]["mean"] = bootstrap_ci(
            losses,
            lambda a: log_slope(np.asarray(cfg.widths, float), a.mean(axis=-2)),
            n_boot=4000,
            level=lv,
            seed=sd,
            vectorized=True,
        )
    rows = []
    for i, w in enumerate(cfg.widths):
        row: dict[str, Any] = {"width": w, "parameters": n_params[i], "points / parameters": n / n_params[i]}
        for name, losses in (("train", train), ("test", test)):
            st, iq = per_width[name]["std"], per_width[name]["iqr"]
            row[f"{name} mean"] = float(losses[:, i].mean())
            row[f"{name} std"] = float(st.mean[i])
            row[f"{name} std CI"] = f"[{st.lo[i]:.3g}, {st.hi[i]:.3g}]"
            row[f"{name} IQR"] = float(iq.mean[i])
            row[f"{name} std / mean"] = float(st.mean[i] / losses[:, i].mean())
        row["last-quarter drop / train std"] = float(drop_ratio[i])
        row["final |grad| / initial (max)"] = float(grad_rel[i])
        rows.append(row)

    def fmt(e: Estimate) -> str:
        return f"{e.mean:.3g} [{e.lo:.3g}, {e.hi:.3g}]"

    conv_text = (
        f"convergence: the largest loss decrease of any member over the last quarter of training is "
        f"{', '.join(f'{r:.2g}' for r in drop_ratio)} x the between-seed std (widths {cfg.widths}; converged if "
        f"<= {cfg.plateau_tolerance:g}: {'yes' if converged else 'NO'}), final gradient norm <= "
        f"{grad_rel.max():.2g} x the initial one"
    )
    task = (
        f"{n} points of a width-{cfg.concentration_teacher_width} tanh teacher (d = {d}, gain {cfg.teacher_gain:g}, "
        f"label noise {cfg.label_noise:g})"
        if cfg.task == "teacher"
        else f"{n} scikit-learn digits ({d} pixels, MSE on one-hot labels)"
    )
    verdicts = []
    for name in ("train", "test"):
        sl = slopes[name]
        verdicts.append(
            Verdict(
                claim=f"Minima concentrate with width: the spread over {cfg.n_seeds} seeds of the final {name} loss "
                f"shrinks as the width grows from {cfg.widths[0]} to {cfg.widths[-1]} (Choromanska et al. 2015)",
                passed=bool(sl["std"].hi < 0) and converged,
                detail=f"slope of log(std) vs log(width) {fmt(sl['std'])} ({lv:.0%} bootstrap over seeds; passes if "
                f"the CI is below 0 and training converged); std per width "
                f"{', '.join(f'{v:.3g}' for v in per_width[name]['std'].mean)}; IQR slope {fmt(sl['iqr'])}; "
                f"relative spread (std/mean) slope {fmt(sl['rel'])}; mean loss "
                f"{', '.join(f'{v:.4g}' for v in (train if name == 'train' else test).mean(axis=0))} (log-log slope "
                f"{fmt(sl['mean'])}); {conv_text}. Students: {task}, {min(n / np.array(n_params)):.3g} or more "
                "points per parameter.",
            )
        )
    verdicts.append(
        Verdict(
            claim="The mean final training loss falls with width (towards the band above the global minimum; "
            "Choromanska et al. 2015)",
            passed=bool(slopes["train"]["mean"].hi < 0),
            detail=f"slope of log(mean train loss) vs log(width) {fmt(slopes['train']['mean'])}; test "
            f"{fmt(slopes['test']['mean'])}.",
        )
    )
    table = Table(
        "final_losses",
        list(rows[0]),
        rows,
        f"Final losses of {cfg.n_seeds} one-hidden-layer tanh students per width on {task}, after {cfg.train_steps} "
        f"full-batch Adam steps (lr {cfg.adam_lr} cosine-decayed to 0); spreads over seeds with {lv:.0%} bootstrap "
        "CIs.",
    )
    data = {
        "widths": list(cfg.widths),
        "n_params": n_params,
        "train": train,
        "test": test,
        "grad_norm": np.stack([r["grad_norm"] for r in runs], axis=1),
        "grad_norm0": np.stack([r["grad_norm0"] for r in runs], axis=1),
        "curve_steps": runs[0]["curve_steps"],
        "curves": {str(w): r["curve"] for w, r in zip(cfg.widths, runs, strict=True)},
        "drop_over_std": drop_ratio,
        "converged": converged,
        "slopes": {nm: {kd: e.to_dict() for kd, e in v.items()} for nm, v in slopes.items()},
    }
    return {"verdicts": verdicts, "tables": [table], "data": data}


# ----------------------------------------------------------------------------------------------------- part 2


def count_outliers(top: np.ndarray) -> int:
    """Outliers among descending positive eigenvalues: the i maximising lambda_i / lambda_{i+1} (the largest
    multiplicative gap between the outliers and the bulk)."""
    t = np.asarray(top, dtype=np.float64)
    t = t[t > 0]
    if len(t) < 2:
        return len(t)
    return int(np.argmax(t[:-1] / t[1:])) + 1


def spectrum_case(cfg: LandscapeConfig, C: int) -> dict[str, Any]:
    x, y = mixture_data(cfg, C)
    torch.manual_seed(cfg.seed * 7919 + C)
    w = cfg.spectrum_width
    model = nn.Sequential(nn.Linear(cfg.d_in, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, C))
    k = 3 * C

    def top_eigs() -> np.ndarray:
        op = HessianOperator(model, "cross_entropy", (x, y))
        return lanczos(op, k, which="top", tol=1e-4, seed=cfg.seed).top

    init = top_eigs()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.spectrum_lr)
    for _ in range(cfg.spectrum_steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    final = top_eigs()
    op = HessianOperator(model, "cross_entropy", (x, y))
    sd = spectral_density(op, n_probes=8, n_iter=min(60, op.size), seed=cfg.seed)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
        final_loss = float(nn.functional.cross_entropy(model(x), y))
    return {
        "C": C,
        "n_params": op.size,
        "top_init": init,
        "top_final": final,
        "outliers_init": count_outliers(init),
        "outliers_final": count_outliers(final),
        "final_loss": final_loss,
        "train_accuracy": acc,
        "density": sd,
    }


# ----------------------------------------------------------------------------------------------------- part 3


def eos_student(cfg: LandscapeConfig) -> nn.Module:
    torch.manual_seed(cfg.seed * 31 + 17)
    w = cfg.eos_width
    return nn.Sequential(nn.Linear(cfg.d_in, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 1))


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """Top eigenvalue of the MSE Hessian (Lanczos, relative residual 1e-4; no multiplicity check needed)."""
    op = HessianOperator(model, "mse", (x, y))
    return float(lanczos(op, 1, which="top", tol=1e-4, max_iter=80, verify=False, seed=seed).top[0])


def eos_run(cfg: LandscapeConfig, lr: float, x: torch.Tensor, y: torch.Tensor, adv) -> dict[str, Any]:
    model = eos_student(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    steps, sharp, losses = [], [], []
    for t in range(cfg.eos_steps + 1):
        if t % cfg.eos_every == 0 or t == cfg.eos_steps:
            steps.append(t)
            sharp.append(sharpness(model, x, y, cfg.seed))
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        losses.append(float(loss.detach()))
        if t == cfg.eos_steps:
            break
        loss.backward()
        opt.step()
        adv(1)
    return {"lr": lr, "steps": np.array(steps), "sharpness": np.array(sharp), "loss": np.array(losses)}


# -------------------------------------------------------------------------------------------------------- run


def run(config: LandscapeConfig, *, progress: bool = True) -> Result:
    cfg = config
    timings: dict[str, float] = {}
    verdicts: list[Verdict] = []
    tables: list[Table] = []
    data: dict[str, Any] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: threading costs more than it saves
    try:
        # 1. concentration of minima
        t0 = time.perf_counter()
        conc = concentration(cfg, progress=progress)
        verdicts.extend(conc["verdicts"])
        tables.extend(conc["tables"])
        data["concentration"] = conc["data"]
        timings["concentration"] = round(time.perf_counter() - t0, 3)

        # 2. bulk and outliers
        t0 = time.perf_counter()
        cases = []
        with progress_bar(len(cfg.classes), "landscape: Hessian spectra", enabled=progress) as adv:
            for C in cfg.classes:
                cases.append(spectrum_case(cfg, C))
                adv(1)
        rows2 = []
        for c in cases:
            C, top = c["C"], c["top_final"]
            n_out = c["outliers_final"]
            gap = float(top[n_out - 1] / top[n_out]) if n_out < len(top) else float("nan")
            bulk_mass = c["density"].count_below(float(top[n_out]) * 1.0001).mean / c["n_params"]
            rows2.append(
                {
                    "classes C": C,
                    "parameters": c["n_params"],
                    "train accuracy": c["train_accuracy"],
                    "final loss": c["final_loss"],
                    "outliers at init": c["outliers_init"],
                    "outliers after training": n_out,
                    "predicted (C - 1)": C - 1,
                    "gap ratio": gap,
                    "top eigenvalue": float(top[0]),
                    "bulk fraction (SLQ)": float(bulk_mass),
                }
            )
            verdicts.append(
                Verdict(
                    claim=f"C = {C} classes: the trained Hessian has C - 1 = {C - 1} outliers above the bulk "
                    "(Papyan 2019/2020; Sagun et al. 2017)",
                    passed=n_out == C - 1,
                    detail=f"top {3 * C} eigenvalues {np.array2string(top, precision=3, max_line_width=400)}; "
                    f"largest ratio gap after eigenvalue {n_out} (ratio {gap:.2f}); {n_out} outliers at the end, "
                    f"{c['outliers_init']} by the same rule at initialisation; SLQ puts a fraction "
                    f"{bulk_mass:.4f} of all {c['n_params']} eigenvalues below the bulk edge.",
                )
            )
        tables.append(
            Table(
                "outliers",
                list(rows2[0]),
                rows2,
                f"Hessian of cross-entropy on C Gaussian classes (separation {cfg.separation}), two hidden ReLU "
                f"layers of width {cfg.spectrum_width}, {cfg.spectrum_steps} full-batch SGD steps (lr "
                f"{cfg.spectrum_lr}). Outliers: the largest ratio gap among the top 3C eigenvalues (Lanczos).",
            )
        )
        data["spectra"] = [
            {k: (v.to_dict() if k == "density" else v) for k, v in c.items() if k != "density"} for c in cases
        ]
        timings["outliers"] = round(time.perf_counter() - t0, 3)

        # 3. edge of stability
        t0 = time.perf_counter()
        x, y = teacher_data(cfg)
        lam0 = sharpness(eos_student(cfg), x, y, cfg.seed)
        runs = []
        with progress_bar(len(cfg.eos_factors) * cfg.eos_steps, "landscape: edge of stability", enabled=progress) as a:
            for f in cfg.eos_factors:
                runs.append(eos_run(cfg, 2.0 / (f * lam0), x, y, a))
        rows3 = []
        for r in runs:
            lim = 2.0 / r["lr"]
            s, steps = r["sharpness"], r["steps"]
            late = s[steps >= cfg.eos_steps / 2]
            reached = float(s.max() / lim)
            late_mean = float(late.mean() / lim)
            ups = float(np.mean(np.diff(r["loss"]) > 0))
            first = int(steps[np.argmax(s >= 0.9 * lim)]) if reached >= 0.9 else None
            rows3.append(
                {
                    "eta": r["lr"],
                    "2/eta": lim,
                    "initial sharpness": float(s[0]),
                    "max sharpness / (2/eta)": reached,
                    "late mean / (2/eta)": late_mean,
                    "late std / (2/eta)": float(late.std() / lim),
                    "first step at 0.9 (2/eta)": first,
                    "loss increases (fraction of steps)": ups,
                    "final loss": float(r["loss"][-1]),
                }
            )
            verdicts.append(
                Verdict(
                    claim=f"Edge of stability at eta = {r['lr']:.4g}: the sharpness rises from {s[0]:.3g} to 2/eta = "
                    f"{lim:.3g} and then hovers there (Cohen et al. 2021)",
                    passed=reached >= 0.9 and abs(late_mean - 1) <= 0.1,
                    detail=f"max sharpness {reached:.3f} x (2/eta) (first >= 0.9 at step {first}); mean over the "
                    f"second half {late_mean:.3f} x (2/eta) (passes within 10%); the loss rose on {ups:.1%} of the "
                    f"steps (non-monotone descent) and ended at {r['loss'][-1]:.3g}.",
                )
            )
        tables.append(
            Table(
                "edge_of_stability",
                list(rows3[0]),
                rows3,
                f"Full-batch GD on MSE, two hidden tanh layers of width {cfg.eos_width}, {cfg.eos_steps} steps; "
                f"sharpness (top Hessian eigenvalue) every {cfg.eos_every} steps; 2/eta set to "
                f"{', '.join(f'{f:g}' for f in cfg.eos_factors)} x the initial sharpness {lam0:.4g}.",
            )
        )
        data["edge_of_stability"] = [{k: v for k, v in r.items()} for r in runs]
        timings["edge_of_stability"] = round(time.perf_counter() - t0, 3)
    finally:
        torch.set_num_threads(before)

    figures = _figures(data["concentration"], cases, runs)
    n_ok = sum(bool(v.passed) for v in verdicts)
    sl = data["concentration"]["slopes"]["train"]["std"]
    summary = (
        f"Three claims about trained networks' loss landscapes; **{n_ok} of {len(verdicts)}** checks agree. "
        f"(1) Final training losses of one-hidden-layer networks over {cfg.n_seeds} seeds, widths {cfg.widths[0]}.."
        f"{cfg.widths[-1]}: their std scales as width^{sl['mean']:.2f} ({cfg.level:.0%} CI [{sl['lo']:.2f}, "
        f"{sl['hi']:.2f}]), converged: {'yes' if data['concentration']['converged'] else 'no'}. (2) Cross-entropy "
        "Hessians after training: "
        + ", ".join(f"{r['outliers after training']} outliers for C = {r['classes C']}" for r in rows2)
        + " (predicted C - 1). (3) Full-batch GD: the sharpness settles at "
        + ", ".join(f"{r['late mean / (2/eta)']:.3f}" for r in rows3)
        + " x 2/eta in the second half of training."
    )
    return Result(
        study="landscape",
        title="Loss landscape: concentration of minima, Hessian outliers, edge of stability",
        summary=summary,
        config=cfg.model_dump(),
        tables=tables,
        figures=figures,
        verdicts=verdicts,
        data=data,
        meta={"timings_s": timings, "initial_sharpness": lam0},
    )


def _figures(conc: dict, cases: list, runs: list) -> list[FigureSpec]:
    from matplotlib.figure import Figure

    figs = []
    widths = np.asarray(conc["widths"])
    fig = Figure(figsize=(15, 3.8))
    axes = fig.subplots(1, 3)
    for ax, name in zip(axes[:2], ("train", "test"), strict=True):
        losses = conc[name]
        for i, w in enumerate(widths):
            ax.scatter(np.full(losses.shape[0], w), losses[:, i], s=12, alpha=0.7, color="C0")
        ax.plot(widths, losses.mean(axis=0), "k-", lw=1, label="mean")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width")
        ax.set_ylabel(f"final {name} loss")
        ax.set_title(f"final {name} losses over seeds")
        ax.legend()
    ax = axes[2]
    for j, name in enumerate(("train", "test")):
        std = conc[name].std(axis=0, ddof=1)
        sl = conc["slopes"][name]["std"]
        ax.loglog(
            widths, std, "o", color=f"C{j}", label=f"{name}: slope {sl['mean']:.2f} [{sl['lo']:.2f}, {sl['hi']:.2f}]"
        )
        fit = np.exp(np.mean(np.log(std))) * (widths / np.exp(np.mean(np.log(widths)))) ** sl["mean"]
        ax.loglog(widths, fit, "-", color=f"C{j}", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width")
    ax.set_ylabel("std over seeds")
    ax.set_title("spread of the minima found")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs.append(
        FigureSpec(
            "concentration",
            fig,
            "Final train and test losses of each seed against width (log-log), and their spread over seeds with the "
            "fitted log-log slope (bootstrap CI).",
        )
    )

    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    for i, c in enumerate(cases):
        a1.semilogy(np.arange(1, len(c["top_final"]) + 1), c["top_final"], "o-", color=f"C{i}", label=f"C={c['C']}")
        a1.semilogy(np.arange(1, len(c["top_init"]) + 1), c["top_init"], "x:", color=f"C{i}", alpha=0.6)
        a1.axvline(c["C"] - 0.5, color=f"C{i}", lw=0.8, ls="--")
    a1.set_xlabel("rank i")
    a1.set_ylabel("eigenvalue")
    a1.set_title("top 3C eigenvalues (x: init, o: trained; dashes at C - 1/2)")
    a1.legend()
    sd = cases[-1]["density"]
    a2.semilogy(sd.grid, sd.density + 1e-12)
    a2.set_xlabel("eigenvalue")
    a2.set_ylabel("density (SLQ)")
    a2.set_title(f"trained Hessian spectrum, C={cases[-1]['C']} (sigma={sd.sigma:.2g})")
    fig.tight_layout()
    figs.append(FigureSpec("outliers", fig, "Outliers above the bulk; the spectral density shows the bulk near zero."))

    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    for i, r in enumerate(runs):
        a1.plot(r["steps"], r["sharpness"], color=f"C{i}", label=f"eta={r['lr']:.3g}")
        a1.axhline(2 / r["lr"], color=f"C{i}", ls="--", lw=0.8)
        a2.semilogy(r["loss"], color=f"C{i}", lw=0.8)
    a1.set_xlabel("step")
    a1.set_ylabel("sharpness (top eigenvalue)")
    a1.set_title("sharpness vs 2/eta (dashed)")
    a1.legend()
    a2.set_xlabel("step")
    a2.set_ylabel("training loss")
    a2.set_title("loss (non-monotone at the edge of stability)")
    fig.tight_layout()
    figs.append(FigureSpec("edge_of_stability", fig, "Sharpness during full-batch GD and the stability limit 2/eta."))
    return figs


register(
    Study(
        "landscape",
        "concentration of minima with width, Hessian bulk and C-1 outliers, edge of stability",
        LandscapeConfig,
        run,
    )
)
