"""Re-initialisation: a corrected copy of a model from a :class:`~sphericalcow.doctor.report.DoctorReport`.

What the fix does (never to the user's model, always to a deep copy):

* if the criticality, gradient or residual verdict failed: every ``nn.Linear``/``nn.ConvNd`` (and sphericalcow
  ``NTKLinear``) is redrawn W ~ N(0, C_W / fan_in), b ~ N(0, C_b) with (C_W, C_b) the critical initialisation of the
  activation acting on the layer's input (:func:`sphericalcow.critical_init` at C_b = 0: ReLU C_W = 2, tanh 1,
  linear 1; activations with no critical line at C_b = 0, such as GELU, take the book's critical point). Attention
  projections, embeddings and normalisation layers are left as they are, and so are the readout (its scale is a
  design choice, zero or small readouts are healthy) and layers whose input activation has no critical
  initialisation (softplus) or could not be identified.
* residual stacks: after that, the last weight layer of each residual branch (in execution order) is multiplied by
  1/sqrt(B) for B blocks, so z + f(z) with Var f = c Var z grows by (1 + c/B)^B <= e^c instead of (1 + c)^B.
* aspect ratio: an ``nn.Sequential`` MLP whose aspect-ratio verdict failed is rebuilt with wider hidden layers
  (the width the verdict recommends) at critical initialisation; other models cannot be widened automatically.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .diagnose import KAPPA_TARGET, critical_std

if TYPE_CHECKING:
    from .report import DoctorReport

__all__ = ["doctor_fix", "fix_plan", "fixed_factory"]


def fix_plan(report: DoctorReport) -> list[str]:
    """What :func:`doctor_fix` will change, in words (empty: nothing to fix by re-initialisation)."""
    failed = set(report.failed)
    mm = report.model_map
    plan = []
    if failed & {"criticality", "gradients", "residual"}:
        n = sum(
            1
            for r in report.layers
            if r["kind"] in ("linear", "conv") and not r["readout"] and math.isfinite(r["cw_critical"])
        )
        if n:
            plan.append(
                f"re-initialise {n} dense/conv layers (not the readout) at criticality for their input activation"
            )
        else:
            plan.append("no layer can be re-initialised at criticality (no critical point for its activation)")
        if mm.residual:
            b = sum(bl.residual for bl in mm.blocks)
            plan.append(f"scale the last weight layer of each of the {b} residual branches by 1/sqrt({b})")
    if "aspect_ratio" in failed:
        w = _new_width(report)
        if w is not None:
            plan.append(f"rebuild the Sequential MLP with hidden width {w} (predicted kappa <= {KAPPA_TARGET:g})")
        else:
            plan.append("not fixable by re-initialisation: change width/depth (see the aspect-ratio verdict)")
    return plan


def _new_width(report: DoctorReport) -> int | None:
    mm = report.model_map
    if mm.mlp is None or not isinstance(report.model_type, str) or report.model_type != "Sequential":
        return None
    kp = report.summary["kappa_pred"]
    hidden = mm.layers[:-1]
    if not kp or kp <= 0:
        return None
    # leading-order kappa scales as sum 1/width: a common width n gives kappa * (sum 1/w_l) ... / (L/n)
    return math.ceil(kp / KAPPA_TARGET * len(hidden) / report.summary["aspect_ratio_effective"])


def _reinit(mod: nn.Module, act, fan_in: int, gen: torch.Generator) -> None:
    _cw, cb, std = critical_std(act, fan_in)
    _draw(mod, std, cb, gen)


def _draw(mod: nn.Module, std: float, cb: float, gen: torch.Generator) -> None:
    ws = float(getattr(mod, "w_scale", 1.0)) or 1.0
    bs = float(getattr(mod, "b_scale", 1.0)) or 1.0
    with torch.no_grad():
        w = mod.weight
        w.copy_(torch.randn(w.shape, generator=gen, dtype=torch.float64).mul_(std / ws).to(w.dtype))
        if getattr(mod, "bias", None) is not None:
            b = mod.bias
            b.copy_(torch.randn(b.shape, generator=gen, dtype=torch.float64).mul_(math.sqrt(cb) / bs).to(b.dtype))


def _widen(model: nn.Sequential, report: DoctorReport, width: int) -> nn.Sequential:
    names = [la.name for la in report.model_map.layers]
    new = copy.deepcopy(model)
    prev_out = None
    for i, name in enumerate(names):
        old = new.get_submodule(name)
        fan_in = old.in_features if i == 0 else prev_out
        fan_out = old.out_features if i == len(names) - 1 else width
        lin = nn.Linear(fan_in, fan_out, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
        parent_name, _, attr = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        setattr(parent, attr, lin)
        prev_out = fan_out
    return new


def doctor_fix(model: nn.Module, report: DoctorReport, *, seed: int = 0) -> nn.Module:
    """A re-initialised (and, for a failing aspect ratio of a Sequential MLP, widened) copy of ``model`` following
    ``report`` (see the module docstring); ``model`` itself is not modified. Run :func:`sphericalcow.doctor` on the
    result to re-check it."""
    failed = set(report.failed)
    mm = report.model_map
    gen = torch.Generator().manual_seed(int(seed))
    fixed = copy.deepcopy(model)
    reinit = bool(failed & {"criticality", "gradients", "residual"})
    width = _new_width(report) if "aspect_ratio" in failed else None
    if width is not None and isinstance(fixed, nn.Sequential):
        fixed = _widen(fixed, report, width)
        reinit = True
    if not reinit:
        return fixed
    rows = {r["layer"]: r for r in report.layers}
    for la in mm.layers:
        if la.kind not in ("linear", "conv"):
            continue
        mod = fixed.get_submodule(la.name)
        fan_in = mod.in_features if width is not None and la.kind == "linear" else la.fan_in
        if la.readout:
            if width is not None:  # a widened readout keeps its C_W (and C_b) at the new fan-in
                _draw(mod, math.sqrt(la.cw / fan_in), la.cb, gen)
            continue
        if la.init_act is None or not math.isfinite(rows[la.name]["cw_critical"]):
            continue
        _reinit(mod, la.init_act, fan_in, gen)
    res = [b for b in mm.blocks if b.residual]
    if res:
        scale = 1.0 / math.sqrt(len(res))
        for b in res:
            last = [n for n in b.layers if mm.layer(n).kind in ("linear", "conv")]
            if last:
                mod = fixed.get_submodule(last[-1])
                with torch.no_grad():
                    mod.weight.mul_(scale)
                    if getattr(mod, "bias", None) is not None:
                        mod.bias.mul_(scale)
    return fixed


def fixed_factory(factory: Callable[[], nn.Module], report: DoctorReport) -> Callable[[], nn.Module]:
    """A factory of fixed models: ``doctor_fix(factory(), report)`` with a fix seed drawn from torch's global RNG
    (which :func:`sphericalcow.doctor` seeds per draw), so the re-check sees an ensemble of fixed initialisations."""

    def make() -> nn.Module:
        s = int(torch.randint(0, 2**31 - 1, ()).item())
        return doctor_fix(factory(), report, seed=s)

    return make
