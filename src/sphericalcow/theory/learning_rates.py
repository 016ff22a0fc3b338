"""Per-layer learning rates from the learning-rate equivalence principle (Roberts & Yaida 2022, PDLT §9.4).

Training every parameter of layer l with learning rate eta_W^{(l)} (weights) and eta_b^{(l)} (biases) makes the
infinite-width NTK of an NTK-parametrized MLP obey (PDLT eq. 9.4/9.5 form, single input)
    Theta^{(1)}   = eta_b^{(1)} C_b + eta_W^{(1)} C_W q,                         q = |x|^2 / n_0,
    Theta^{(l+1)} = eta_b^{(l+1)} C_b + eta_W^{(l+1)} C_W <sigma^2>_{K^{(l)}} + chi_perp^{(l)} Theta^{(l)},
so the output NTK is a sum of per-layer contributions
    c_W^{(l)} = eta_W^{(l)} C_W s^{(l-1)} P^{(l)},   c_b^{(l)} = eta_b^{(l)} C_b P^{(l)},
    P^{(l)} = prod_{k=l}^{L} chi_perp^{(k)},
with s^{(0)} = q and s^{(l)} = <sigma^2>_{K^{(l)}}.  The principle asks that every layer's weights (and, separately,
every layer's biases) contribute equally, and that the total does not grow with depth.  We solve it exactly for the
given network (its own K^{(l)} and chi_perp^{(l)}, any activation, any depth), normalised so that
    sum_l c_W^{(l)} = base_lr C_W q   and   sum_l c_b^{(l)} = base_lr C_b,
i.e. the output NTK equals base_lr times the NTK of a depth-0 (linear) model: a base_lr that works for one depth works
for all.  At large depth this reproduces the book's class prescriptions (PDLT eq. 9.95-9.96):
    scale-invariant: eta_b^{(l)} = eta_W^{(l)} proportional to 1/L (the same for every layer);
    K*=0 class:      eta_b^{(l)} proportional to (1/l)^{p_perp} L^{p_perp - 1},
                     eta_W^{(l)} proportional to (L/l)^{p_perp - 1} / L,
where p_perp = 1 for tanh, erf and sin (uniform weight rates, bias rates falling as 1/l).

The standard parametrization trains W_std = sqrt(C_W / n_{l-1}) W and b_std = sqrt(C_b) beta; an SGD step of size
eta on W_std equals one of size eta n_{l-1} / C_W on W, so ``weight_lr`` there is eta_W^{(l)} C_W / n_{l-1} and
``bias_lr`` is eta_b^{(l)} C_b (zero at C_b = 0: as in the NTK parametrization, such biases do not move).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError
from .finite_width import input_q
from .gaussian import expect1

__all__ = ["LearningRates", "learning_rates"]


@dataclass(frozen=True)
class LearningRates:
    """Per-layer learning rates (index 0 is layer 1, the last entry the readout) in the arch's parametrization.

    ``weight_lr``/``bias_lr``: what to give the optimizer for each layer's weight and bias; ``weight_multiplier``/
    ``bias_multiplier``: eta_W^{(l)} / base_lr and eta_b^{(l)} / base_lr in the NTK parametrization;
    ``weight_contribution``/``bias_contribution``: c_W^{(l)}, c_b^{(l)} (equal across layers by construction);
    ``ntk``: the resulting infinite-width output NTK (= base_lr (C_b + C_W q)); ``names``: the module names
    (``layers.0.dense`` ... ``readout``) the rates belong to, as in :meth:`sphericalcow.MLP.build`.
    """

    base_lr: float
    names: list[str]
    weight_lr: np.ndarray
    bias_lr: np.ndarray
    weight_multiplier: np.ndarray
    bias_multiplier: np.ndarray
    weight_contribution: np.ndarray
    bias_contribution: np.ndarray
    ntk: float
    parametrization: str

    def param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """Parameter groups for ``torch.optim`` (``[{"params": [...], "lr": ...}, ...]``) for a model built by
        ``arch.build()``; every parameter of the model must belong to one of ``names``."""
        by_name = dict(model.named_parameters())
        groups, used = [], set()
        for name, w_lr, b_lr in zip(self.names, self.weight_lr, self.bias_lr, strict=True):
            for suffix, lr in (("weight", w_lr), ("bias", b_lr)):
                key = f"{name}.{suffix}"
                if key not in by_name:
                    raise SphericalCowError(
                        f"the model has no parameter {key!r}; param_groups needs a model built from the same MLP"
                    )
                groups.append({"params": [by_name[key]], "lr": float(lr), "name": key})
                used.add(key)
        extra = sorted(set(by_name) - used)
        if extra:
            raise SphericalCowError(f"the model has parameters outside the MLP's layers: {', '.join(extra[:3])}")
        return groups


def learning_rates(arch: Any, base_lr: float, x: Any = None) -> LearningRates:
    """Per-layer learning rates for ``arch`` (a plain :class:`sphericalcow.MLP`) from the equivalence principle.

    ``base_lr`` > 0: the learning rate of a depth-0 model; ``x``: an input vector (``None``: |x|^2 / d_in = 1).
    Formulas and sources: the module docstring.
    """
    if getattr(arch, "residual", False):
        raise SphericalCowError("learning_rates supports plain (non-residual) MLPs only; got residual=True")
    try:
        base = float(base_lr)
    except (TypeError, ValueError):
        raise SphericalCowError(f"base_lr={base_lr!r} is not allowed; expected a positive number") from None
    if not np.isfinite(base) or base <= 0:
        raise SphericalCowError(f"base_lr={base_lr!r} is not allowed; expected a positive finite number")
    act = arch.activation
    cw, cb = float(arch.cw), float(arch.cb)
    q = input_q(arch, x)
    if cw * q <= 0:
        raise SphericalCowError("learning_rates needs a non-zero input (|x|^2 > 0) and C_W > 0")
    n_layers = arch.depth + 1
    s = np.empty(n_layers)  # s^{(l-1)}: the weight source of layer l
    chi_perp = np.empty(n_layers - 1)  # chi_perp^{(l)} for the hidden layers l = 1..L
    s[0] = q
    K = cb + cw * q
    for i in range(arch.depth):
        s[i + 1] = float(expect1(lambda z: act(z) ** 2, K, kinks=act.kinks))
        chi_perp[i] = cw * float(expect1(lambda z: act.derivative(z) ** 2, K, kinks=act.kinks))
        K = cb + cw * s[i + 1]
    if not np.all(np.isfinite(s)) or not np.all(s > 0) or not np.all(chi_perp > 0):
        raise SphericalCowError(
            "the NTK contributions vanish or overflow for this network (sigma^2 or sigma'^2 averages are 0 or inf); "
            "choose C_W, C_b at or near criticality"
        )
    P = np.append(np.cumprod(chi_perp[::-1])[::-1], 1.0)  # P^{(l)} = prod_{k=l}^{L} chi_perp^{(k)}
    w_mult = q / (n_layers * s * P)  # c_W^{(l)} = base C_W q / (L + 1) for every l
    b_mult = 1.0 / (n_layers * P)  # c_b^{(l)} = base C_b / (L + 1)
    w_contrib = base * w_mult * cw * s * P
    b_contrib = base * b_mult * cb * P
    if arch.parametrization == "ntk":
        w_lr, b_lr = base * w_mult, base * b_mult
    else:
        fan_in = np.array([arch.d_in, *arch.widths], dtype=np.float64)
        w_lr, b_lr = base * w_mult * cw / fan_in, base * b_mult * cb
    names = [f"layers.{i}.dense" for i in range(arch.depth)] + ["readout"]
    return LearningRates(
        base_lr=base,
        names=names,
        weight_lr=w_lr,
        bias_lr=b_lr,
        weight_multiplier=w_mult,
        bias_multiplier=b_mult,
        weight_contribution=w_contrib,
        bias_contribution=b_contrib,
        ntk=float(w_contrib.sum() + b_contrib.sum()),
        parametrization=arch.parametrization,
    )
