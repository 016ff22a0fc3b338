"""Design advice for an MLP on a task at a parameter budget, each choice with the theory it rests on.

``sc.advise(task="teacher", budget=20_000)`` (or ``data=(x, y)``) recommends, for a fully connected network:

* **activation** -- the universality class (Roberts & Yaida, *The Principles of Deep Learning Theory* (PDLT, 2022),
  §5.3): the K*=0 class (tanh) by default, because at criticality its leading finite-width correction is smaller:
  the excess kurtosis of a preactivation grows as kappa ~ nu r with nu = 2 for every K*=0 activation and nu = 15 for
  ReLU (PDLT §5.4; :func:`sphericalcow.theory.finite_width.universal_kurtosis_slope`), so at the same control of the
  1/n expansion a K*=0 network can have 7.5 times the aspect ratio r = depth/width.
* **initialisation** -- the critical point chi_par = chi_perp = 1 (PDLT §5.2; Schoenholz et al. 2017):
  (C_W, C_b) = (1/sigma_1^2, 0) for K*=0 (tanh: (1, 0)), (1/A_2, 0) for scale-invariant (ReLU: (2, 0), PDLT eq.
  5.66), from :func:`sphericalcow.critical_init`; per layer Var W = C_W / fan_in, Var b = C_b.
* **depth and width** -- the budget P(L, n) = (d_in + 1) n + (L - 1)(n^2 + n) + (n + 1) d_out (every layer has a
  bias) is solved exactly in integers (the largest n with P <= budget for each depth L), and the depth is the
  largest L whose aspect ratio obeys the perturbative criterion ``nu * r <= NU_R_MAX`` (= 1/4). Why: at
  criticality the leading finite-width correction is O(nu r) (the kurtosis, PDLT §5.4) and the NTK's
  instantiation-to-instantiation spread and its motion during training are O(r) too (PDLT ch. 8 and 11). At
  nu r <= 1/4 the leading correction is at most 25% and the next order ~ (nu r)^2 ~ 6%, so the critical
  initialisation and the learning rates below (both leading-order results) still describe the network that is
  built; within that bound the largest r is taken, because representation learning (the NTK moving, PDLT ch. 11)
  vanishes at r -> 0. The theory bounds r from above; it does not say that the bound is the optimum: the
  ``aspect-ratio`` study (ReLU, 12k parameters, teacher and multi-index tasks) found the shallowest network best.
* **parametrization and learning rates** -- NTK parametrization (Jacot et al. 2018) with per-layer learning rates
  from the learning-rate equivalence principle (PDLT §9.4; :func:`sphericalcow.learning_rates`), under which one
  base rate suits every depth and width (the standard parametrization's NTK grows with the width, Sohl-Dickstein
  et al. 2020, so its rates must shrink like 1/n; their equivalent per-layer values are reported too). The base
  rate comes from the empirical, learning-rate weighted NTK of the built network on the training inputs:
  Theta_hat = sum_p m_p J_p J_p^T with m_p the per-layer multipliers. For the loss L = (1/2N) sum_i |f(x_i) - y_i|^2
  gradient descent on the linearised model moves f by -(eta/N) Theta_hat (f - y), stable iff
  eta < eta_max = 2 N / lambda_max(Theta_hat) (the linearised dynamics of Lee et al. 2019, "Wide neural networks of
  any depth evolve as linear models under gradient descent", NeurIPS; above it the top mode oscillates and grows,
  or the network "catapults", Lewkowycz et al. 2020, arXiv:2003.02218). The advice is
  eta = eta_max / 2 = N / lambda_max: the top kernel mode then converges in one step, and the factor 2 keeps a
  margin for the O(sqrt r) seed-to-seed spread of lambda_max and its growth during training. For cross-entropy the
  curvature of the loss in the logits is at most 1/2 (eigenvalues of diag(p) - p p^T), so the same eta is at most a
  quarter of that edge.

``verify`` trains the recommendation and its neighbours (depth x1/2 and x2 at the same budget, rate x1/3 and x3,
the other activation class at its own critical init, depth and rate) for a fixed short schedule and reports whether
the recommendation was best, tied within the CIs of the best, or beaten; the recommendation is never tuned to it.

What verify found (2026-11, budget 20k, 3 seeds x 300 full-batch steps, 95% CIs; the advice is tanh, depth 6-7,
width 55-60, nu r = 0.20-0.25 on every task): tied with the best on the teacher (0.047 ± 0.007 vs depth x1/2
0.044 ± 0.009), committee and digits tasks; beaten by the ReLU network (depth 2, width ~130) on multi-index
(0.75 ± 0.07 vs 0.49 ± 0.17), mixture (cross-entropy 0.74 ± 0.04 vs 0.36 ± 0.06, accuracy 0.84 vs 0.87) and
hierarchy. Depth x1/2 had the lower mean test loss on all seven tasks and depth x2 the higher, as in the
``aspect-ratio`` study: at this scale the perturbative bound nu r <= 1/4 sits at the deep end of what trains best.
Rate x3 (1.5 times the linear-stability edge) diverged on the squared-loss tasks (teacher 1/3 seeds, committee and
multi-index 3/3) and never with cross-entropy (whose edge is at least twice as high), as the stability argument
predicts. Seven tasks are few: these are observations at one budget, not a validation of the rules.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .activations import Activation, activation
from .description import MLP
from .errors import SphericalCowError, check_int
from .progress import progress_bar
from .theory.criticality import critical_init, criticality, universality
from .theory.finite_width import universal_kurtosis_slope
from .theory.learning_rates import LearningRates, learning_rates

if TYPE_CHECKING:
    import pandas as pd

    from .report import Result

__all__ = [
    "LOSSES",
    "MAX_BUDGET",
    "NU_R_MAX",
    "TASKS",
    "Advice",
    "AdviceItem",
    "TaskData",
    "Verification",
    "advise",
    "choose_depth",
    "n_params",
    "task_data",
    "verify_advice",
    "weighted_ntk",
    "width_for_budget",
]

#: The perturbative criterion on the aspect ratio: nu * r <= NU_R_MAX (see the module docstring).
NU_R_MAX = 0.25
#: The advised base learning rate as a fraction of the linear-stability edge 2 N / lambda_max.
LR_FRACTION = 0.5
#: Most training inputs used for the empirical NTK, and the most Jacobian entries (inputs x parameters).
NTK_MAX_INPUTS = 256
NTK_MAX_ENTRIES = 30_000_000
NTK_MIN_INPUTS = 8
#: The largest budget advised (the NTK's Jacobians on NTK_MIN_INPUTS inputs then take ~320 MB in float64).
MAX_BUDGET = 5_000_000
#: The representative activation of each universality class the advice chooses between.
CLASS_REPRESENTATIVE = {"K*=0": "tanh", "scale-invariant": "relu"}
LOSSES = ("mse", "cross_entropy")
TASKS = (
    "teacher",
    "multi-index",
    "committee",
    "polynomial",
    "parity",
    "manifold",
    "mixture",
    "digits",
    "hierarchy",
)

PDLT = "Roberts & Yaida, The Principles of Deep Learning Theory (2022)"


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskData:
    """Train and test data of a task: x float, y float (n, d_out) for ``mse`` or int64 labels for cross-entropy."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    loss: str
    d_out: int
    description: str

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


def _unit_q(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Scale inputs so that the training inputs have mean |x|^2 / d_in = 1 (the theory's q = 1)."""
    q = float((ref.double() ** 2).sum(1).mean() / ref.shape[1])
    return x.double() / math.sqrt(q) if q > 0 else x.double()


def _standardize(y: torch.Tensor) -> torch.Tensor:
    y = y.double()
    return (y - y.mean()) / y.std()


def task_data(name: str, seed: int = 0) -> TaskData:
    """The named task (one of :data:`TASKS`) from ``sc.data``, drawn from ``seed``; inputs scaled to mean
    |x|^2 / d_in = 1 on the training set, regression targets standardised (unit variance)."""
    from . import data as scd

    seed = check_int("seed", seed, minimum=0)
    if name not in TASKS:
        raise SphericalCowError(f"task={name!r} is not known; expected one of {', '.join(TASKS)}")
    n_tr, n_te = 256, 512
    if name == "digits":
        tr, te = scd.digits(seed=seed)
        keep = torch.randperm(tr.x.shape[0], generator=torch.Generator().manual_seed(seed))[:n_tr]
        x_tr, y_tr, x_te, y_te = tr.x[keep], tr.y[keep], te.x, te.y
        return TaskData(
            name,
            _unit_q(x_tr, x_tr),
            y_tr,
            _unit_q(x_te, x_tr),
            y_te,
            "cross_entropy",
            10,
            "scikit-learn 8x8 digits, 10 classes (256 training, 360 test images)",
        )
    if name == "hierarchy":
        tr, te = scd.rhm_split(v=4, m=4, n_c=4, s=2, L=3, n_train=n_tr, n_test=n_te, seed=seed)
        x_tr, x_te = tr.x.flatten(1), te.x.flatten(1)
        return TaskData(
            name,
            _unit_q(x_tr, x_tr),
            tr.y,
            _unit_q(x_te, x_tr),
            te.y,
            "cross_entropy",
            4,
            "random hierarchy model (v = m = n_c = 4, s = 2, L = 3), one-hot inputs of dimension 32",
        )
    if name == "mixture":
        ds = scd.gaussian_mixture(n=n_tr + n_te, d=16, n_classes=3, separation=3.0, seed=seed, dtype="float64")
        x, y = ds.x, ds.y
        loss, d_out, desc = "cross_entropy", 3, "Gaussian mixture, 3 classes in 16 dimensions (separation 3)"
    else:
        if name == "teacher":
            ds = scd.mlp_teacher(MLP(12, 32, 3, activation="tanh"), P=n_tr + n_te, seed=seed, dtype="float64")
            desc = "random critical tanh MLP teacher (depth 3, width 32) on 12 Gaussian inputs"
            x, y = ds.x, ds.y
        elif name == "multi-index":
            g = torch.Generator().manual_seed(seed)
            x = torch.randn(n_tr + n_te, 24, generator=g, dtype=torch.float64)
            w = torch.linalg.qr(torch.randn(24, 2, generator=g, dtype=torch.float64))[0]
            proj = x @ w
            y = proj[:, 0] * proj[:, 1]
            desc = "multi-index target (w1.x)(w2.x) on 24 Gaussian inputs"
        elif name == "committee":
            ds = scd.soft_committee(N=16, M=4, P=n_tr + n_te, seed=seed, dtype="float64")
            x, y = ds.x, ds.y
            desc = "soft committee machine teacher (4 erf units) on 16 Gaussian inputs"
        elif name == "polynomial":
            ds = scd.random_polynomial(n=8, degree=3, P=n_tr + n_te, seed=seed, dtype="float64")
            x, y = ds.x, ds.y
            desc = "random Hermite polynomial of degree 3 in 8 Gaussian inputs"
        elif name == "parity":
            ds = scd.sparse_parity(n=12, k=3, P=n_tr + n_te, seed=seed, dtype="float64")
            x, y = ds.x, ds.y
            desc = "3-sparse parity of 12 bits (+-1 targets, squared loss)"
        else:  # manifold
            ds = scd.hidden_manifold(n=n_tr + n_te, N=20, D=4, label="regression", seed=seed, dtype="float64")
            x, y = ds.x, ds.y
            desc = "hidden manifold model (latent dimension 4, 20 inputs), regression"
        y = _standardize(y.reshape(-1)).reshape(-1, 1)
        loss, d_out = "mse", 1
    x_tr, x_te = x[:n_tr], x[n_tr:]
    return TaskData(name, _unit_q(x_tr, x_tr), y[:n_tr], _unit_q(x_te, x_tr), y[n_tr:], loss, d_out, desc)


def _data_from_arrays(x: Any, y: Any, loss: str | None, d_out: int | None, seed: int) -> TaskData:
    """User data: (x, y) split 80/20 at random (``seed``); integer labels mean cross-entropy unless ``loss='mse'``."""
    try:
        xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    except (TypeError, ValueError) as e:
        raise SphericalCowError(f"data=(x, y) must be arrays or tensors ({e})") from None
    if xt.ndim < 2 or xt.shape[0] < 10:
        raise SphericalCowError(f"x has shape {tuple(xt.shape)}; expected (N, d) with N >= 10 examples")
    if xt.is_complex() or xt.dtype == torch.bool:
        raise SphericalCowError(f"x has dtype {xt.dtype}; expected real numbers")
    xt = xt.flatten(1).double()
    if not torch.isfinite(xt).all():
        raise SphericalCowError("x contains NaN or inf; expected finite inputs")
    if yt.ndim == 0 or yt.shape[0] != xt.shape[0]:
        raise SphericalCowError(f"y has shape {tuple(yt.shape)}; expected {xt.shape[0]} rows, one per row of x")
    labels = not yt.is_floating_point()
    if loss is None:
        loss = "cross_entropy" if labels else "mse"
    if loss not in LOSSES:
        raise SphericalCowError(f"loss={loss!r} is not allowed; expected one of {', '.join(LOSSES)}")
    if loss == "cross_entropy":
        if not labels or yt.ndim != 1:
            raise SphericalCowError("loss='cross_entropy' needs integer class labels y of shape (N,)")
        if int(yt.min()) < 0:
            raise SphericalCowError(f"y has label {int(yt.min())}; expected class labels 0, 1, ..., k-1")
        k = int(yt.max()) + 1
        if d_out is not None and d_out < k:
            raise SphericalCowError(f"d_out={d_out} is smaller than the {k} classes in y")
        d = d_out or max(k, 2)
        yt = yt.long()
    else:
        if labels and yt.ndim == 1:  # squared loss on one-hot class targets
            if int(yt.min()) < 0:
                raise SphericalCowError(f"y has label {int(yt.min())}; expected class labels 0, 1, ..., k-1")
            k = int(yt.max()) + 1
            if d_out is not None and d_out < k:
                raise SphericalCowError(f"d_out={d_out} is smaller than the {k} classes in y")
            yt = torch.nn.functional.one_hot(yt.long(), d_out or k).double()
        yt = yt.double().reshape(yt.shape[0], -1)
        if not torch.isfinite(yt).all():
            raise SphericalCowError("y contains NaN or inf; expected finite targets")
        if d_out is not None and d_out != yt.shape[1]:
            raise SphericalCowError(f"d_out={d_out} does not match y's {yt.shape[1]} columns")
        d = int(yt.shape[1])
    perm = torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(seed))
    n_te = max(2, xt.shape[0] // 5)
    te, tr = perm[:n_te], perm[n_te:]
    return TaskData("data", xt[tr], yt[tr], xt[te], yt[te], loss, d, f"user data ({xt.shape[0]} examples)")


# ----------------------------------------------------------------------------------------------------------------
# Budget and depth
# ----------------------------------------------------------------------------------------------------------------
def n_params(d_in: int, width: int, depth: int, d_out: int) -> int:
    """Parameters of ``sc.MLP(d_in, width, depth, d_out)`` (biases in every layer):
    P = (d_in + 1) n + (L - 1)(n^2 + n) + (n + 1) d_out."""
    return (d_in + 1) * width + (depth - 1) * (width * width + width) + (width + 1) * d_out


def width_for_budget(d_in: int, depth: int, d_out: int, budget: int) -> int:
    """The largest width n with ``n_params(d_in, n, depth, d_out) <= budget`` (0 if not even n = 1 fits): the
    quadratic (L - 1) n^2 + (d_in + L + d_out) n + d_out - budget = 0 solved, then corrected in integers."""
    a, b, c = depth - 1, d_in + depth + d_out, d_out - budget
    n = int(-c // b) if a == 0 else int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
    n = max(n, 0)
    while n > 0 and n_params(d_in, n, depth, d_out) > budget:
        n -= 1
    while n_params(d_in, n + 1, depth, d_out) <= budget:
        n += 1
    return n


def choose_depth(d_in: int, d_out: int, budget: int, nu: float, nu_r_max: float = NU_R_MAX) -> tuple[int, int]:
    """(depth, width): the largest depth L whose budget width n(L) has nu * L / n <= ``nu_r_max`` (L = 1 when even
    depth 1 exceeds it). nu * L / n(L) grows with L, so the scan stops at the first L that breaks the criterion."""
    n1 = width_for_budget(d_in, 1, d_out, budget)
    if n1 < 1:
        raise SphericalCowError(
            f"budget={budget} parameters cannot fit even depth 1 with width 1 (needs "
            f"{n_params(d_in, 1, 1, d_out)} for d_in={d_in}, d_out={d_out}); expected a larger budget"
        )
    best = (1, n1)
    L = 2
    while True:
        n = width_for_budget(d_in, L, d_out, budget)
        if n < 1 or nu * L / n > nu_r_max:
            return best
        best = (L, n)
        L += 1


# ----------------------------------------------------------------------------------------------------------------
# Learning rate from the empirical NTK
# ----------------------------------------------------------------------------------------------------------------
def weighted_ntk(model: torch.nn.Module, rates: LearningRates, x: torch.Tensor) -> torch.Tensor:
    """Theta_hat(x, x') = sum_g m_g sum_{p in g} df(x)/dtheta_p df(x')/dtheta_p with m_g = lr_g / base_lr: the kernel
    that full-batch gradient descent with per-parameter rates base_lr * m_g follows (per output, averaged over
    outputs; the infinite-width NTK is diagonal in the outputs).

    NTK parametrization (``NTKLinear`` layers, z = b_scale beta + w_scale W x): on a copy of the model each layer's
    trained tensor is rescaled, W -> W / sqrt(m) with w_scale -> w_scale sqrt(m) (the function is unchanged), so
    that the plain NTK of the copy, :func:`sphericalcow.empirical_ntk`, is the weighted one: df/dW' = sqrt(m) df/dW.
    Other layers: the sum of :func:`sphericalcow.empirical_ntk` restricted to each parameter, times m_g.
    """
    import copy

    from .measure.ntk import empirical_ntk
    from .nets.mlp import NTKLinear

    modules = dict(model.named_modules())
    missing = [n for n in rates.names if n not in modules]
    if missing:
        raise SphericalCowError(f"the model has no module {missing[0]!r}; expected a model built from the same MLP")
    mult = [
        (n, float(w) / rates.base_lr, float(b) / rates.base_lr)
        for n, w, b in zip(rates.names, rates.weight_lr, rates.bias_lr, strict=True)
    ]
    if all(isinstance(modules[n], NTKLinear) for n in rates.names):
        twin = copy.deepcopy(model)
        twin_modules = dict(twin.named_modules())
        with torch.no_grad():
            for name, mw, mb in mult:
                mod = twin_modules[name]
                for attr, scale, m in (("weight", "w_scale", mw), ("bias", "b_scale", mb)):
                    if m > 0:
                        getattr(mod, attr).div_(math.sqrt(m))
                        setattr(mod, scale, getattr(mod, scale) * math.sqrt(m))
                    else:
                        getattr(mod, attr).requires_grad_(False)  # rate 0: not trained, no contribution
        return empirical_ntk(twin, x, outputs="diagonal").mean(-1)
    total = None
    for name, mw, mb in mult:
        for suffix, m in (("weight", mw), ("bias", mb)):
            if m == 0.0:
                continue
            k = empirical_ntk(model, x, params=f"{name}.{suffix}", outputs="diagonal").mean(-1)
            total = m * k if total is None else total + m * k
    if total is None:
        raise SphericalCowError("every learning rate is zero; no kernel to compute")
    return total


@dataclass(frozen=True)
class _LR:
    rates: LearningRates
    lambda_max: float  # of Theta_hat / N (the loss-normalised kernel)
    lr_max: float
    base_lr: float
    n_inputs: int


def _advised_lr(arch: MLP, x_train: torch.Tensor, seed: int, x_q: np.ndarray) -> _LR:
    """base_lr = LR_FRACTION * 2 / lambda_max(Theta_hat / N) on up to NTK_MAX_INPUTS training inputs."""
    unit = learning_rates(arch, 1.0, x_q)
    model = arch.build(seed=seed, dtype=torch.float64)
    p = sum(t.numel() for t in model.parameters())
    n = int(min(x_train.shape[0], NTK_MAX_INPUTS, max(NTK_MIN_INPUTS, NTK_MAX_ENTRIES // p)))
    xs = x_train[:n].double()
    theta = weighted_ntk(model, unit, xs)
    lam = float(torch.linalg.eigvalsh(theta / n).max())
    if not math.isfinite(lam) or lam <= 0:
        raise SphericalCowError(f"the NTK of the advised network has largest eigenvalue {lam}; cannot set a rate")
    lr_max = 2.0 / lam
    base = LR_FRACTION * lr_max
    return _LR(learning_rates(arch, base, x_q), lam, lr_max, base, n)


# ----------------------------------------------------------------------------------------------------------------
# The advice
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdviceItem:
    """One recommendation: what, its value, the theory behind it (with numbers) and the source."""

    field: str
    value: str
    theory: str
    source: str


@dataclass
class Advice:
    """What :func:`advise` recommends; ``items`` give each choice with its theory, ``layers`` the per-layer numbers.

    ``build(seed)`` returns the torch model initialised as advised, ``param_groups(model)`` the optimizer groups
    (``torch.optim.SGD(advice.param_groups(model), lr=advice.base_lr)``), ``to_frame()`` a pandas table,
    ``to_json()`` everything as JSON; ``verify()`` trains a short sweep around the recommendation.
    """

    task: str
    task_description: str
    d_in: int
    d_out: int
    n_train: int
    loss: str
    budget: int
    seed: int
    activation: str
    activation_class: str
    nu: float
    cw: float
    cb: float
    depth: int
    width: int
    n_params: int
    aspect_ratio: float
    nu_r: float
    nu_r_max: float
    parametrization: str
    input_q: float
    lambda_max: float
    lr_max: float
    base_lr: float
    ntk_inputs: int
    rates: LearningRates
    items: list[AdviceItem]
    notes: list[str]
    data: TaskData | None = field(default=None, repr=False)
    verification: Verification | None = None

    @property
    def arch(self) -> MLP:
        """The advised :class:`sphericalcow.MLP` description."""
        return MLP(
            self.d_in,
            self.width,
            self.depth,
            d_out=self.d_out,
            activation=self.activation,
            cw=self.cw,
            cb=self.cb,
            parametrization=self.parametrization,
        )

    def build(self, seed: int | None = None, *, dtype: Any = None) -> torch.nn.Module:
        """The advised network, initialised at criticality (``seed`` default: the advice's seed)."""
        return self.arch.build(seed=self.seed if seed is None else seed, dtype=dtype)

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """Per-layer ``torch.optim`` parameter groups with the advised rates, for a model from :meth:`build`."""
        return self.rates.param_groups(model)

    def layers(self) -> list[dict[str, Any]]:
        """Per layer: fan-in/out, the init as standard deviations, and the learning rates (NTK parametrization and
        the equivalent standard-parametrization values)."""
        fans = [self.d_in, *([self.width] * self.depth), self.d_out]
        std_rates = learning_rates(
            MLP(self.d_in, self.width, self.depth, self.d_out, self.activation, self.cw, self.cb, "standard"),
            self.base_lr,
            np.full(self.d_in, math.sqrt(self.input_q)),
        )
        rows = []
        for i, name in enumerate(self.rates.names):
            rows.append(
                {
                    "layer": name,
                    "fan_in": fans[i],
                    "fan_out": fans[i + 1],
                    "weight_std": math.sqrt(self.cw / fans[i]),
                    "bias_std": math.sqrt(self.cb),
                    "weight_lr": float(self.rates.weight_lr[i]),
                    # NTK parametrization multiplies the bias by sqrt(C_b): at C_b = 0 it never moves
                    "bias_lr": float(self.rates.bias_lr[i]) if self.cb > 0 else 0.0,
                    "weight_lr_standard": float(std_rates.weight_lr[i]),
                    "bias_lr_standard": float(std_rates.bias_lr[i]),
                }
            )
        return rows

    def to_frame(self) -> pd.DataFrame:
        """The recommendations as a pandas DataFrame (columns field, value, theory, source)."""
        import pandas as pd

        return pd.DataFrame([vars(i) for i in self.items], columns=["field", "value", "theory", "source"])

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values (the data themselves are left out)."""
        d = {
            k: getattr(self, k)
            for k in (
                "task",
                "task_description",
                "d_in",
                "d_out",
                "n_train",
                "loss",
                "budget",
                "seed",
                "activation",
                "activation_class",
                "nu",
                "cw",
                "cb",
                "depth",
                "width",
                "n_params",
                "aspect_ratio",
                "nu_r",
                "nu_r_max",
                "parametrization",
                "input_q",
                "lambda_max",
                "lr_max",
                "base_lr",
                "ntk_inputs",
                "notes",
            )
        }
        d["arch"] = self.arch.to_dict()
        d["items"] = [vars(i) for i in self.items]
        d["layers"] = self.layers()
        d["verification"] = None if self.verification is None else self.verification.to_dict()
        return d

    def to_json(self, indent: int | None = 2) -> str:
        from .report.jsonio import to_jsonable

        return json.dumps(to_jsonable(self.to_dict()), indent=indent, allow_nan=False)

    def verify(
        self, *, n_seeds: int = 3, steps: int = 300, level: float = 0.95, progress: bool = False
    ) -> Verification:
        """Train a short sweep around the recommendation (:func:`verify_advice`); stored in ``verification``."""
        self.verification = verify_advice(self, n_seeds=n_seeds, steps=steps, level=level, progress=progress)
        return self.verification


def _resolve_activation(name: str | Activation | None) -> tuple[Activation, str, float]:
    act = activation(CLASS_REPRESENTATIVE["K*=0"] if name is None else name)
    cls, _ = universality(act)
    if cls not in CLASS_REPRESENTATIVE:
        raise SphericalCowError(
            f"activation={act.spec!r} is in class {cls!r}; the advice needs a K*=0 (e.g. tanh, erf) or "
            "scale-invariant (e.g. relu, leaky_relu) activation"
        )
    _, nu = universal_kurtosis_slope(act)
    return act, cls, float(nu)


def _design(
    d: TaskData, budget: int, act: Activation, nu: float, seed: int, nu_r_max: float = NU_R_MAX
) -> tuple[MLP, _LR, float]:
    """The advised arch for one activation (critical init, depth by the criterion) and its learning rate."""
    cw, cb = critical_init(act, 0.0)
    depth, width = choose_depth(d.d_in, d.d_out, budget, nu, nu_r_max)
    arch = MLP(d.d_in, width, depth, d_out=d.d_out, activation=act, cw=cw, cb=cb, parametrization="ntk")
    q = float((d.x_train.double() ** 2).sum(1).mean() / d.d_in)
    x_q = np.full(d.d_in, math.sqrt(q))
    return arch, _advised_lr(arch, d.x_train, seed, x_q), q


def advise(
    data: tuple[Any, Any] | None = None,
    task: str | None = None,
    budget: int = 20_000,
    *,
    d_out: int | None = None,
    loss: str | None = None,
    seed: int = 0,
    activation: str | Activation | None = None,
    progress: bool = False,
) -> Advice:
    """Recommend activation, initialisation, depth and width, parametrization and learning rates for an MLP with at
    most ``budget`` parameters on ``data=(x, y)`` or a named ``task`` (:data:`TASKS`). Theory: module docstring.

    ``loss``: "mse" or "cross_entropy" (default: cross-entropy for integer labels, else mse); ``d_out``: outputs
    (default from y); ``activation``: force one (K*=0 or scale-invariant class) instead of the advised tanh;
    ``seed``: the network whose NTK sets the learning rate (and the data split / task draw).
    """
    if (data is None) == (task is None):
        raise SphericalCowError("give exactly one of data=(x, y) or task=NAME")
    budget = check_int("budget", budget, minimum=1)
    if budget > MAX_BUDGET:
        raise SphericalCowError(
            f"budget={budget} is too large for the empirical-NTK learning rate on this machine; expected at most "
            f"{MAX_BUDGET} parameters"
        )
    seed = check_int("seed", seed, minimum=0)
    if d_out is not None:
        d_out = check_int("d_out", d_out, minimum=1)
    if loss is not None and loss not in LOSSES:
        raise SphericalCowError(f"loss={loss!r} is not allowed; expected one of {', '.join(LOSSES)}")
    if task is not None:
        d = task_data(task, seed)
        if loss is not None and loss != d.loss:
            raise SphericalCowError(f"task {task!r} is trained with loss={d.loss!r}; got loss={loss!r}")
        if d_out is not None and d_out != d.d_out:
            raise SphericalCowError(f"task {task!r} has d_out={d.d_out}; got d_out={d_out}")
    else:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise SphericalCowError("data must be a pair (x, y) of arrays or tensors")
        d = _data_from_arrays(data[0], data[1], loss, d_out, seed)
    act, cls, nu = _resolve_activation(activation)
    n1 = width_for_budget(d.d_in, 1, d.d_out, budget)
    if nu / max(n1, 1) > 1.0:
        need = n_params(d.d_in, math.ceil(nu), 1, d.d_out)
        raise SphericalCowError(
            f"budget={budget} parameters is too small: even depth 1 has width {n1}, nu r = {nu / max(n1, 1):.3g} > 1 "
            f"(finite-width corrections of order one, where the theory behind the advice fails); expected a budget "
            f">= {need} for {act.spec} with d_in={d.d_in}, d_out={d.d_out}"
        )
    with progress_bar(1, "advising (empirical NTK)", enabled=progress) as advance:
        arch, lr, q = _design(d, budget, act, nu, seed)
        advance()
    crit = criticality(act, arch.cw, arch.cb)
    if crit.phase != "critical":  # critical_init guarantees it; a failure here is a bug, not bad input
        raise RuntimeError(f"critical_init gave a {crit.phase} point for {act.spec}")
    r = arch.aspect_ratio
    p = n_params(d.d_in, arch.widths[0], arch.depth, d.d_out)
    other_cls = "scale-invariant" if cls == "K*=0" else "K*=0"
    other_nu = universal_kurtosis_slope(CLASS_REPRESENTATIVE[other_cls])[1]
    L_other, n_other = choose_depth(d.d_in, d.d_out, budget, other_nu)
    other_fit = f"depth {L_other} (width {n_other})" + (" (nu r > 1)" if other_nu * L_other / n_other > 1 else "")
    notes: list[str] = []
    if nu * r > NU_R_MAX:
        notes.append(
            f"even depth 1 has nu r = {nu * r:.3g} > {NU_R_MAX:g} at this budget: the network is narrow enough that "
            "finite-width corrections are not small; a larger budget would make the advice more reliable"
        )
    if arch.cb == 0.0:
        notes.append(
            "C_b = 0: in NTK parametrization each bias enters as sqrt(C_b) * b, so the biases stay at zero and are "
            "not trained (they are still counted in the parameter budget); in standard parametrization they would "
            "start at zero and learn"
        )
    if not 0.5 <= q <= 2.0:
        notes.append(
            f"the inputs have mean |x|^2/d_in = {q:.3g}; standardising them (q ~ 1) puts the first layer where the "
            "theory is usually evaluated (the critical init does not depend on q for these classes)"
        )
    if lr.n_inputs < d.n_train:
        notes.append(
            f"lambda_max was computed on {lr.n_inputs} of the {d.n_train} training inputs (lambda_max / N converges "
            "to the kernel operator's top eigenvalue as N grows)"
        )
    cw_desc = (
        f"C_W = {arch.cw:.6g}, C_b = {arch.cb:.6g}: chi_par = {crit.chi_par:.6g}, chi_perp = {crit.chi_perp:.6g} "
        f"(phase {crit.phase}); weights N(0, C_W/fan_in): std {math.sqrt(arch.cw / d.d_in):.4g} in layer 1 "
        f"(fan-in {d.d_in}), {math.sqrt(arch.cw / arch.widths[0]):.4g} above (fan-in {arch.widths[0]}); biases std "
        f"{math.sqrt(arch.cb):.4g}"
    )
    class_reason = (
        f"{cls} class, kurtosis slope nu = {nu:g} (kappa ~ nu r at criticality) vs nu = {other_nu:g} for the "
        f"{other_cls} class; at this budget the criterion nu r <= {NU_R_MAX:g} allows depth {arch.depth} "
        f"(width {arch.widths[0]}) vs {other_fit} for {CLASS_REPRESENTATIVE[other_cls]}"
    )
    if activation is None:
        class_reason += (
            "; K*=0 chosen for its smaller finite-width corrections (more depth under the same control). At "
            "criticality its kernel K^(l) decays like 1/(2 l) (a power law), ReLU's stays constant"
        )
    else:
        class_reason += "; the activation was given by the caller"
    items = [
        AdviceItem(
            "activation",
            act.spec,
            class_reason,
            f"{PDLT} §5.3 (universality classes), §5.4 (kurtosis 2/3 l/n for K*=0, ReLU 5 l/n per 3 V/K^2)",
        ),
        AdviceItem(
            "initialisation",
            f"C_W={arch.cw:.6g}, C_b={arch.cb:.6g}",
            cw_desc,
            f"{PDLT} §5.2 (criticality chi_par = chi_perp = 1), eq. 5.66; Schoenholz et al. 2017 (ICLR)",
        ),
        AdviceItem(
            "depth x width",
            f"{arch.depth} x {arch.widths[0]} ({p} of {budget} parameters)",
            f"r = depth/width = {r:.4g}, nu r = {nu * r:.4g} {'<=' if nu * r <= NU_R_MAX else '>'} {NU_R_MAX:g} "
            f"({'largest depth obeying it' if nu * r <= NU_R_MAX else 'depth 1 does not obey it'}; depth "
            f"{arch.depth + 1} would need width {width_for_budget(d.d_in, arch.depth + 1, d.d_out, budget)}, nu r = "
            f"{_nu_r_next(d, budget, arch.depth + 1, nu)}). Leading finite-width corrections are O(nu r), the next "
            "order ~ (nu r)^2; representation learning (NTK motion) is O(r), zero at r -> 0. The theory bounds r "
            "from above, it does not fix the optimum: the aspect-ratio study (ReLU, 12k parameters) measured the "
            "shallowest network best on its teacher tasks",
            f"{PDLT} ch. 4-5 (1/n expansion, §5.4), ch. 8 and 11 (NTK fluctuations and motion O(r)), ch. ∞; "
            "sphericalcow aspect-ratio study",
        ),
        AdviceItem(
            "parametrization",
            "ntk (per-layer learning rates)",
            "NTK parametrization: the equivalence-principle rates make the output NTK independent of depth "
            f"(= base_lr (C_b + C_W q), q = {q:.4g}), so one base rate transfers across depth and width; the standard "
            "parametrization's NTK grows with width (its per-layer rates, reported per layer, shrink like 1/n)",
            f"Jacot et al. 2018 (NeurIPS), eq. 1; {PDLT} §9.4 (learning-rate equivalence principle); "
            "Sohl-Dickstein et al. 2020 (arXiv:2001.07301), §2",
        ),
        AdviceItem(
            "learning rate",
            f"base_lr={lr.base_lr:.4g} (edge {lr.lr_max:.4g})",
            f"lambda_max of the rate-weighted empirical NTK / N on {lr.n_inputs} training inputs = "
            f"{lr.lambda_max:.4g}; full-batch GD on L = (1/2N) sum |f - y|^2 is linearly stable iff "
            f"base_lr < 2/lambda_max = {lr.lr_max:.4g}; advised half of it (top mode converges in one step, margin for "
            "the O(sqrt r) seed-to-seed spread and growth of lambda_max)"
            + (
                "; for cross-entropy the logit curvature is <= 1/2, so the edge is >= twice this"
                if d.loss != "mse"
                else ""
            ),
            "Lee et al. 2019 (NeurIPS; gradient descent of wide networks follows the linearised model); "
            "Lewkowycz et al. 2020 (arXiv:2003.02218; rates above 2/lambda: the catapult phase, then divergence)",
        ),
        AdviceItem(
            "per-layer learning rates",
            ", ".join(f"{w:.3g}" for w in lr.rates.weight_lr),
            "weight rates per layer (layer 1 ... readout) from the equivalence principle: every layer contributes "
            f"equally to the NTK ({cls}: "
            + ("uniform" if cls == "scale-invariant" else "weights uniform at large depth, biases falling as 1/l")
            + ")",
            f"{PDLT} §9.4, eqs. 9.95-9.96",
        ),
    ]
    return Advice(
        task=d.name,
        task_description=d.description,
        d_in=d.d_in,
        d_out=d.d_out,
        n_train=d.n_train,
        loss=d.loss,
        budget=budget,
        seed=seed,
        activation=act.spec,
        activation_class=cls,
        nu=nu,
        cw=arch.cw,
        cb=arch.cb,
        depth=arch.depth,
        width=arch.widths[0],
        n_params=p,
        aspect_ratio=r,
        nu_r=nu * r,
        nu_r_max=NU_R_MAX,
        parametrization=arch.parametrization,
        input_q=q,
        lambda_max=lr.lambda_max,
        lr_max=lr.lr_max,
        base_lr=lr.base_lr,
        ntk_inputs=lr.n_inputs,
        rates=lr.rates,
        items=items,
        notes=notes,
        data=d,
    )


def _nu_r_next(d: TaskData, budget: int, depth: int, nu: float) -> str:
    n = width_for_budget(d.d_in, depth, d.d_out, budget)
    return f"{nu * depth / n:.4g}" if n >= 1 else "inf (does not fit)"


# ----------------------------------------------------------------------------------------------------------------
# Verification: a short sweep around the recommendation
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Verification:
    """The sweep's table (one row per variant, mean test loss with a Student-t CI over seeds) and its outcome:
    ``"best"``, ``"tied"`` (within the CIs of the best) or ``"beaten"``."""

    rows: list[dict[str, Any]]
    outcome: str
    message: str
    n_seeds: int
    steps: int
    level: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "outcome": self.outcome,
            "message": self.message,
            "n_seeds": self.n_seeds,
            "steps": self.steps,
            "level": self.level,
            "seconds": self.seconds,
        }


def _loss_fn(loss: str):
    if loss == "mse":
        return lambda out, y: 0.5 * (out - y).pow(2).sum(1).mean()
    return lambda out, y: torch.nn.functional.cross_entropy(out, y)


def _train_once(arch: MLP, rates: LearningRates, d: TaskData, seed: int, steps: int) -> dict[str, Any]:
    """Full-batch gradient descent (float32) with the per-layer rates; test loss (and accuracy for labels)."""
    dt = torch.float32
    net = arch.build(seed=seed, dtype=dt)
    opt = torch.optim.SGD(rates.param_groups(net), lr=rates.base_lr)
    f = _loss_fn(d.loss)
    xtr, xte = d.x_train.to(dt), d.x_test.to(dt)
    ytr, yte = (d.y_train.to(dt), d.y_test.to(dt)) if d.loss == "mse" else (d.y_train, d.y_test)
    first = None
    diverged = False
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = f(net(xtr), ytr)
        val = float(loss.detach())
        first = val if first is None else first
        if not math.isfinite(val) or val > 1e6 * max(first, 1e-12):
            diverged = True
            break
        loss.backward()
        opt.step()
    with torch.no_grad():
        out_tr, out_te = net(xtr), net(xte)
        train_loss, test_loss = float(f(out_tr, ytr)), float(f(out_te, yte))
        acc = float((out_te.argmax(1) == yte).double().mean()) if d.loss == "cross_entropy" else None
    if diverged or not math.isfinite(test_loss):
        return {"train_loss": math.inf, "test_loss": math.inf, "accuracy": None, "diverged": True}
    return {"train_loss": train_loss, "test_loss": test_loss, "accuracy": acc, "diverged": False}


def _variants(advice: Advice) -> list[tuple[str, MLP, LearningRates]]:
    """(name, arch, rates): the recommendation; depth x1/2 and x2 at the same budget (width re-solved, rate by the
    same rule); rate x1/3 and x3; the other activation class at its own critical init, depth and rate."""
    d = advice.data
    assert d is not None
    x_q = np.full(d.d_in, math.sqrt(advice.input_q))
    rec = advice.arch
    out = [("recommended", rec, advice.rates)]
    for label, depth in (("depth x1/2", advice.depth // 2), ("depth x2", 2 * advice.depth)):
        if depth < 1 or depth == advice.depth:
            continue
        n = width_for_budget(d.d_in, depth, d.d_out, advice.budget)
        if n < 1:
            continue
        arch = MLP(d.d_in, n, depth, d.d_out, advice.activation, advice.cw, advice.cb, "ntk")
        out.append((f"{label} ({depth} x {n})", arch, _advised_lr(arch, d.x_train, advice.seed, x_q).rates))
    for label, factor in (("lr x1/3", 1 / 3), ("lr x3", 3.0)):
        out.append((label, rec, learning_rates(rec, advice.base_lr * factor, x_q)))
    other = CLASS_REPRESENTATIVE["scale-invariant" if advice.activation_class == "K*=0" else "K*=0"]
    act, _, nu = _resolve_activation(other)
    arch, lr, _ = _design(d, advice.budget, act, nu, advice.seed)
    out.append((f"{other} ({arch.depth} x {arch.widths[0]})", arch, lr.rates))
    return out


def verify_advice(
    advice: Advice, *, n_seeds: int = 3, steps: int = 300, level: float = 0.95, progress: bool = False
) -> Verification:
    """Train the recommendation and its variants (:func:`_variants`) for ``steps`` full-batch GD steps from
    ``n_seeds`` initialisations each (the same seeds for every variant) and compare mean test losses with Student-t
    CIs. The outcome is reported as measured: the recommendation is never adjusted to it."""
    from .measure.stats import mean_ci

    if advice.data is None:
        raise SphericalCowError("this advice holds no data to verify on; create it with sc.advise(...)")
    n_seeds = check_int("n_seeds", n_seeds, minimum=2)
    steps = check_int("steps", steps, minimum=1)
    if not 0.5 < float(level) < 1:
        raise SphericalCowError(f"level={level!r} is not allowed; expected 0.5 < level < 1")
    t0 = time.perf_counter()
    seeds = [int(s) for s in np.random.SeedSequence(advice.seed).generate_state(n_seeds)]
    variants = _variants(advice)
    rows = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small full-batch networks: threading costs more than it saves on shared cores
    try:
        with progress_bar(len(variants) * n_seeds, "verifying (training)", enabled=progress) as advance:
            for name, arch, rates in variants:
                runs = []
                for s in seeds:
                    runs.append(_train_once(arch, rates, advice.data, s, steps))
                    advance()
                tl = np.array([r["test_loss"] for r in runs])
                n_div = sum(r["diverged"] for r in runs)
                if n_div == 0:
                    est = mean_ci(tl, level=level)
                    mean, half = float(est.mean), float(est.hi - est.mean)
                else:
                    mean, half = math.inf, math.nan
                accs = [r["accuracy"] for r in runs if r["accuracy"] is not None]
                rows.append(
                    {
                        "variant": name,
                        "activation": arch.activation.spec,
                        "depth": arch.depth,
                        "width": arch.widths[0],
                        "params": n_params(arch.d_in, arch.widths[0], arch.depth, arch.d_out),
                        "nu_r": universal_kurtosis_slope(arch.activation)[1] * arch.aspect_ratio,
                        "base_lr": rates.base_lr,
                        "train_loss": float(np.mean([r["train_loss"] for r in runs])),
                        "test_loss": mean,
                        "test_loss_ci": half,
                        "accuracy": float(np.mean(accs)) if accs and n_div == 0 else None,
                        "diverged": f"{n_div}/{n_seeds}",
                    }
                )
    finally:
        torch.set_num_threads(before)
    outcome, message = _outcome(rows, level)
    return Verification(rows, outcome, message, n_seeds, steps, float(level), round(time.perf_counter() - t0, 2))


def _outcome(rows: list[dict[str, Any]], level: float) -> tuple[str, str]:
    """best / tied (the recommendation's CI overlaps the best's) / beaten, in words."""
    rec = rows[0]
    finite = [r for r in rows if math.isfinite(r["test_loss"])]
    if not math.isfinite(rec["test_loss"]):
        best = min(finite, key=lambda r: r["test_loss"]) if finite else None
        return "beaten", "the recommendation diverged" + (
            f"; best was {best['variant']} ({best['test_loss']:.4g})" if best else "; so did every variant"
        )
    best = min(finite, key=lambda r: r["test_loss"])
    ci = f"{100 * level:g}% CIs"
    if best is rec:
        tied = [
            r["variant"]
            for r in finite[1:]
            if r["test_loss"] - r["test_loss_ci"] <= rec["test_loss"] + rec["test_loss_ci"]
        ]
        msg = f"the recommendation was best (test loss {rec['test_loss']:.4g} ± {rec['test_loss_ci']:.2g})"
        if tied:
            msg += f"; within the {ci} of it: {', '.join(tied)}"
        return "best", msg
    if rec["test_loss"] - rec["test_loss_ci"] <= best["test_loss"] + best["test_loss_ci"]:
        return "tied", (
            f"the recommendation ({rec['test_loss']:.4g} ± {rec['test_loss_ci']:.2g}) is tied within the {ci} with "
            f"the best, {best['variant']} ({best['test_loss']:.4g} ± {best['test_loss_ci']:.2g})"
        )
    return "beaten", (
        f"the recommendation ({rec['test_loss']:.4g} ± {rec['test_loss_ci']:.2g}) was beaten beyond the {ci} by "
        f"{best['variant']} ({best['test_loss']:.4g} ± {best['test_loss_ci']:.2g})"
    )


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def advice_result(advice: Advice) -> Result:
    """A :class:`sphericalcow.report.Result` for ``write_run`` (report.md/html, results.json; a figure if verified)."""
    from .report import FigureSpec, Result, Table, Verdict

    tables = [
        Table("advice", ["field", "value", "theory", "source"], [vars(i) for i in advice.items]),
        Table(
            "layers",
            [
                "layer",
                "fan_in",
                "fan_out",
                "weight_std",
                "bias_std",
                "weight_lr",
                "bias_lr",
                "weight_lr_standard",
                "bias_lr_standard",
            ],
            advice.layers(),
            caption="init as standard deviations (Var W = C_W/fan_in); rates in NTK parametrization and the "
            "equivalent standard-parametrization values",
        ),
    ]
    verdicts, figures = [], []
    v = advice.verification
    if v is not None:
        cols = list(v.rows[0])
        tables.append(
            Table(
                "verify",
                cols,
                v.rows,
                caption=f"{v.n_seeds} seeds per variant, {v.steps} full-batch GD steps; CIs at level {v.level}",
            )
        )
        verdicts.append(
            Verdict("the recommendation is best or tied within the CIs of the best", v.outcome != "beaten", v.message)
        )
        figures.append(FigureSpec("verify", _verify_figure(v), "test loss of the recommendation and its variants"))
    summary = (
        f"Advice for an MLP with at most {advice.budget} parameters on {advice.task_description} "
        f"({advice.n_train} training examples, d_in = {advice.d_in}, d_out = {advice.d_out}, loss {advice.loss}): "
        f"{advice.activation}, depth {advice.depth}, width {advice.width} ({advice.n_params} parameters, r = "
        f"{advice.aspect_ratio:.3g}, nu r = {advice.nu_r:.3g}), C_W = {advice.cw:.6g}, C_b = {advice.cb:.6g}, "
        f"{advice.parametrization} parametrization, base learning rate {advice.base_lr:.4g}."
        + "".join(f"\n\nNote: {n}" for n in advice.notes)
        + "\n\nEach recommendation, its theory and source:\n\n"
        + "\n".join(f"- **{i.field}: {i.value}.** {i.theory}. *Source:* {i.source}." for i in advice.items)
    )
    return Result(
        study="advise",
        title=f"Advice: {advice.task}, budget {advice.budget}",
        summary=summary,
        config={"task": advice.task, "budget": advice.budget, "seed": advice.seed, "loss": advice.loss},
        tables=tables,
        figures=figures,
        verdicts=verdicts,
        data=advice.to_dict(),
        meta={
            "version": _version(),
            "seed": advice.seed,
            "verify_seeds": None if v is None else v.n_seeds,
            "seconds_verify": None if v is None else v.seconds,
        },
    )


def _version() -> str:
    from . import __version__

    return __version__


def _verify_figure(v: Verification):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["variant"] for r in v.rows]
    m = np.array([r["test_loss"] for r in v.rows], dtype=float)
    h = np.array([r["test_loss_ci"] for r in v.rows], dtype=float)
    ok = np.isfinite(m)
    idx = np.arange(len(names))
    ax.errorbar(idx[ok], m[ok], yerr=np.where(np.isfinite(h[ok]), h[ok], 0), fmt="o", capsize=3)
    for i in idx[~ok]:
        ax.annotate("diverged", (i, np.nanmax(m[ok]) if ok.any() else 1.0), ha="center", color="r", fontsize=8)
    ax.set_xticks(idx, names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test loss")
    ax.set_title("recommendation (first) vs variants")
    fig.tight_layout()
    return fig
