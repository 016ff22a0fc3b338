"""The doctor: theory-guided diagnosis of any ``torch.nn.Module`` at initialisation (and, with data, in training).

>>> import torch, sphericalcow as sc
>>> model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
>>> report = sc.doctor(model, torch.randn(16, 10))          # doctest: +SKIP
>>> report.failed, report.markdown()                         # doctest: +SKIP
>>> fixed = report.fix(model)                                # a re-initialised copy; re-check with sc.doctor

Pieces: :mod:`.model_map` (layers, activations, widths, blocks, residual branches), :mod:`.signal` (forward and
backward measurements over an ensemble of initialisations), :mod:`.diagnose` (verdicts and their thresholds),
:mod:`.fix` (re-initialisation), :mod:`.report` (:class:`DoctorReport`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SphericalCowError, check_int, check_positive
from ..progress import progress_bar
from .diagnose import DEPTH_SCALE_FACTOR, KAPPA_MAX, DoctorVerdict, _init_rows, summarize, verdicts
from .fix import doctor_fix, fix_plan, fixed_factory
from .model_map import map_model, select_output
from .report import DoctorReport
from .signal import measure, set_modes

__all__ = [
    "DEPTH_SCALE_FACTOR",
    "KAPPA_MAX",
    "DoctorReport",
    "DoctorVerdict",
    "doctor",
    "doctor_fix",
    "fix_plan",
    "fixed_factory",
]

#: Examples used for the per-layer NTK traces and the NTK spectrum (the Jacobian costs examples x parameters).
NTK_EXAMPLES = 8
NTK_MAX_PARAMS = 2_000_000
#: Per-layer NTK traces cost one Jacobian per layer; deeper models rely on the gradient table (same expectation).
NTK_MAX_LAYERS = 16


def _as_input(x: Any) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise SphericalCowError(f"example_input of type {type(x).__name__} is not allowed; expected a tensor or array")
    if x.dim() == 0 or x.shape[0] < 2:
        raise SphericalCowError(
            f"example_input has shape {tuple(x.shape)}; expected a batch of at least 2 examples along dim 0"
        )
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise SphericalCowError("example_input holds NaN or inf; expected finite numbers")
        return x.detach().cpu().double()
    return x.detach().cpu()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def doctor(
    model: nn.Module,
    example_input: Any,
    *,
    data: tuple[Any, Any] | None = None,
    lr: float | None = None,
    loss: str | Callable | None = None,
    factory: Callable[[], nn.Module] | None = None,
    n_init: int = 12,
    seed: int = 0,
    progress: bool = False,
) -> DoctorReport:
    """Diagnose ``model`` (never mutated) on ``example_input`` (a batch, examples along dim 0).

    Forward: second moment, two-input correlation and per-block chi_perp / chi_par through the block Jacobians,
    the phase and depth scale; backward: per-layer gradient norms and NTK traces; finite width: sum 1/width and
    predicted vs measured kurtosis. Statistics come from ``n_init`` initialisations: the model itself plus fresh
    ``factory()`` draws (seeded) when ``factory`` is given, else copies with each parameter tensor resampled i.i.d.
    Gaussian with its own mean and std. With ``data=(x, y)``: the empirical NTK spectrum, the weight spectra and,
    with ``lr``, the Hessian's top eigenvalue against 2/lr (``loss``: ``"mse"``, ``"cross_entropy"`` or a callable;
    default from y's dtype). ``lr`` alone adds per-layer learning rates for an MLP-like model. Thresholds and the
    theory behind each verdict: :mod:`sphericalcow.doctor.diagnose`.
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise SphericalCowError(f"model of type {type(model).__name__} is not allowed; expected a torch.nn.Module")
    n_init = check_int("n_init", n_init, minimum=3)
    seed = check_int("seed", seed, minimum=0)
    if lr is not None:
        lr = check_positive("lr", lr)
    if factory is not None and not callable(factory):
        raise SphericalCowError(f"factory={factory!r} is not callable; expected a function returning an nn.Module")
    x = _as_input(example_input)
    work = set_modes(copy.deepcopy(model).cpu().double())  # float64 CPU copies: a CUDA model is measured on the CPU
    out_note = None
    try:
        with torch.no_grad():
            _o, out_note = select_output(type(work).forward(work, x))
        mm, out = map_model(work, x)
    except SphericalCowError:
        raise
    except Exception as e:
        raise SphericalCowError(
            f"the model rejects an input of shape {tuple(x.shape)}: {type(e).__name__}: {_one_line(e)}"
        ) from None
    o = out
    if not isinstance(o, torch.Tensor):
        raise SphericalCowError(
            f"the model returns {type(o).__name__}; expected a tensor (or a tuple/dict holding one)"
        )
    if o.is_floating_point() and not torch.isfinite(o).all():
        raise SphericalCowError(
            "the model's output holds NaN or inf on the example input; the doctor needs finite outputs"
        )
    with progress_bar(n_init, "doctor: initialisations", enabled=progress) as advance:
        try:
            ms = measure(work, x, mm, n_init=n_init, factory=factory, seed=seed, advance=advance)
        except SphericalCowError:
            raise
        except Exception as e:
            raise SphericalCowError(f"measuring the model failed: {type(e).__name__}: {_one_line(e)}") from None
    x0 = x[0].reshape(-1).numpy() if mm.mlp is not None else None
    s = summarize(mm, ms, x0)
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules())
    extra = _extras(work.eval() if bn else work, x, mm, data=data, lr=lr, loss=loss, progress=progress)
    layers = _init_rows(mm)
    notes = ([out_note] if out_note else []) + list(mm.notes) + list(ms.notes)
    for why in dict.fromkeys(r["no_critical"] for r in layers if r["no_critical"].startswith("no critical")):
        notes.append(why)
    if mm.readout is not None:
        notes.append(
            f"readout {mm.readout!r} (C_W = {mm.layer(mm.readout).cw:.3g}) is not a depth block and is not "
            "re-initialised; gradients are measured from its input, so its scale does not enter the verdicts"
        )
    if bn:
        notes.append(
            "batch normalisation: forward/backward statistics with batch statistics (train mode, as in training); "
            "the NTK, Hessian and weight-spectra checks use eval mode (running statistics)"
        )
    if factory is None:
        notes.append(
            "ensemble: each parameter tensor resampled i.i.d. Gaussian with its own mean and std (no factory given)"
        )
    return DoctorReport(
        model_type=type(model).__name__,
        input_shape=tuple(x.shape),
        ensemble="factory" if factory is not None else "resampled",
        n_init=n_init,
        seed=seed,
        verdicts=verdicts(mm, s, extra),
        summary=s,
        layers=layers,
        extra=extra,
        model_map=mm,
        notes=notes,
        seconds=round(time.perf_counter() - t0, 3),
    )


def _extras(
    model: nn.Module,
    x: torch.Tensor,
    mm: Any,
    *,
    data: tuple[Any, Any] | None,
    lr: float | None,
    loss: Any,
    progress: bool,
) -> dict[str, Any]:
    from ..measure.ntk import empirical_ntk

    extra: dict[str, Any] = {"lr": lr}
    n_params = sum(p.numel() for p in model.parameters())
    xs = x[:NTK_EXAMPLES]
    attention = any(la.kind == "attention" for la in mm.layers)
    if attention:  # vmap over attention falls back to a per-example loop in torch: tens of seconds per layer
        extra["ntk_note"] = (
            "per-layer NTK traces skipped for attention models (slow under vmap); the gradient table is an unbiased "
            "estimate of the same traces"
        )
    elif n_params <= NTK_MAX_PARAMS and len(mm.layers) <= NTK_MAX_LAYERS:
        try:
            contrib = {}
            mods = dict(model.named_modules())
            for la in mm.layers:
                names = [f"{la.name}.{n}" if la.name else n for n, _ in mods[la.name].named_parameters()]
                k = empirical_ntk(model, xs, params=names)
                contrib[la.name] = float(torch.diagonal(k.reshape(k.shape[0], k.shape[1])).sum())
            extra["ntk_contributions"] = contrib
        except (SphericalCowError, RuntimeError) as e:  # e.g. an LSTM under vmap: the traces are optional
            extra["ntk_note"] = f"per-layer NTK not computed: {_one_line(e)}"
    if mm.mlp is not None and lr is not None:
        from ..theory.learning_rates import learning_rates

        try:
            rates = learning_rates(mm.mlp, lr, x[0].reshape(-1).numpy())
            extra["learning_rates"] = dict(zip(mm.mlp_layers, (float(w) for w in rates.weight_lr), strict=True))
        except SphericalCowError as e:
            extra["learning_rates_note"] = _one_line(e)
    if data is None:
        return extra
    xd, yd = data
    xd = _as_input(xd)
    yd = torch.as_tensor(np.asarray(yd)) if not isinstance(yd, torch.Tensor) else yd.detach().cpu()
    if yd.shape[0] != xd.shape[0]:
        raise SphericalCowError(f"data: x has {xd.shape[0]} rows but y has {yd.shape[0]}")
    if yd.is_floating_point():
        yd = yd.double()
    loss_name = loss or ("mse" if yd.is_floating_point() else "cross_entropy")
    if n_params <= NTK_MAX_PARAMS:
        try:
            k = empirical_ntk(model, xd[: 4 * NTK_EXAMPLES])
            ev = torch.linalg.eigvalsh(k.reshape(k.shape[0], k.shape[1]).double()).numpy()
            extra["ntk_eigenvalues"] = ev[::-1].tolist()
            extra["ntk_condition"] = float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")
        except SphericalCowError as e:
            extra["ntk_note"] = f"NTK spectrum not computed: {_one_line(e)}"
    try:
        from ..measure.weight_spectra import weight_spectra

        ws = weight_spectra(model)
        extra["weight_alpha"] = {r["layer"]: r["alpha"] for r in ws.records()}
    except SphericalCowError as e:
        extra["weight_spectra_note"] = _one_line(e)
    if lr is not None:
        from ..measure.hessian import HessianOperator, lanczos

        try:
            op = HessianOperator(model, loss_name, (xd, yd), seed=0)
            eig = lanczos(op, 1, which="top", seed=0, progress=progress)
            extra["sharpness"] = float(eig.top[0])
        except SphericalCowError:
            raise
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise SphericalCowError(f"the loss on the data failed: {type(e).__name__}: {_one_line(e)}") from None
    return extra
