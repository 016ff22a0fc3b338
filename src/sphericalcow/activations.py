"""Activation registry: one object per nonlinearity, usable from NumPy (theory) and PyTorch (experiments).

An :class:`Activation` bundles

* a float64 NumPy forward ``act(x)`` and derivative ``act.derivative(x)`` (used by the Gaussian quadratures in
  :mod:`sphericalcow.theory.gaussian`),
* a differentiable PyTorch forward ``act.torch(x)`` / ``act.module()`` (used to build networks),
* metadata the theory needs: the points ``kinks`` where sigma or sigma' is not smooth, ``sigma0 = sigma(0)``,
  ``sigma1 = sigma'(0)``, and ``scale_invariant = (a_plus, a_minus)`` for the class
  sigma(z) = a_plus z (z > 0), a_minus z (z < 0) of Roberts & Yaida, *The Principles of Deep Learning
  Theory* (PDLT), section 5.2 (scale-invariant universality class),
* closed-form Gaussian expectations where they are known (:meth:`Activation.closed_form`).

Closed forms (z ~ N(0, K); (z1, z2) ~ N(0, [[K11, K12], [K12, K22]]), rho = K12 / sqrt(K11 K22),
theta = arccos rho).  The *kinds* are

====== =========================== ======
kind   expectation                 args
====== =========================== ======
mean   <sigma(z)>_K                K
dmean  <sigma'(z)>_K               K
sq     <sigma(z)^2>_K              K
dsq    <sigma'(z)^2>_K             K
zssd   <z sigma(z) sigma'(z)>_K    K
cross  <sigma(z1) sigma(z2)>       K11, K22, K12
dcross <sigma'(z1) sigma'(z2)>     K11, K22, K12
====== =========================== ======

(``zssd`` enters chi_parallel = C_W <z sigma sigma'>_K / K, PDLT section 5.1.)  Formulas:

* Scale-invariant sigma = a+ relu(z) - a- relu(-z) (relu: (1, 0); leaky_relu: (1, slope); linear: (1, 1);
  abs: (1, -1)).  From the arc-cosine kernels of order 1 and 0 (Cho & Saul 2009, "Kernel methods for deep
  learning", section 2.1: k_n = ||x||^n ||y||^n J_n(theta) / pi, with <.> = k_n / 2):
  J1(theta) = <relu(z1) relu(z2)> = sqrt(K11 K22) (sin theta + (pi - theta) cos theta) / (2 pi),
  J0(theta) = <Theta(z1) Theta(z2)> = (pi - theta) / (2 pi).  Since (z1, -z2) has angle pi - theta:
  cross = (a+^2 + a-^2) J1(theta) - 2 a+ a- J1(pi - theta),
  dcross = (a+^2 + a-^2) J0(theta) + 2 a+ a- theta / (2 pi),
  sq = zssd = (a+^2 + a-^2) K / 2, dsq = (a+^2 + a-^2) / 2, mean = (a+ - a-) sqrt(K / (2 pi)),
  dmean = (a+ + a-) / 2  (sq and dsq reproduce PDLT section 5.2's A_2 = (a+^2 + a-^2)/2).
* erf (Williams 1997, "Computing with infinite networks", the erf kernel with Sigma = K):
  cross = (2/pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22))), evaluated as
  (2/pi) atan2(2 K12, sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2)); sq is its diagonal,
  (2/pi) atan(2K / sqrt(1 + 4K)).  With erf'(z) = (2/sqrt(pi)) exp(-z^2) and the Gaussian integral
  <exp(-z^T A z)> = det(1 + 2 A K)^(-1/2): dcross = (4/pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2),
  dsq = (4/pi) / sqrt(1 + 4K), dmean = (2/sqrt(pi)) / sqrt(1 + 2K), mean = 0.
* sin: from E[cos(z1 -+ z2)] = exp(-(K11 + K22 -+ 2 K12)/2):
  cross = exp(-(K11 + K22)/2) sinh K12, dcross = exp(-(K11 + K22)/2) cosh K12, sq = (1 - exp(-2K))/2,
  dsq = (1 + exp(-2K))/2, mean = 0, dmean = exp(-K/2).
* zssd for every closed form uses the heat-equation identity d<F>_K/dK = <F''>_K / 2 with Stein's lemma:
  <z sigma sigma'>_K = (K/2) <(sigma^2)''>_K = K d<sigma^2>_K/dK  (equivalently
  <sigma^2 (z^2 - K)>_K / (2K)), giving erf: (4K/pi) / ((1 + 2K) sqrt(1 + 4K)); sin: K exp(-2K).

The raw closed forms are valid for K > 0 (K11, K22 > 0 and |rho| <= 1 for pairs) and do no validation;
call them through :mod:`sphericalcow.theory.gaussian` (``expect_sq`` etc.), which validates inputs and
treats degenerate Gaussians (K = 0) as point masses at 0.

Derivative convention at kinks: ``derivative`` matches ``torch.autograd`` at the kink itself
(relu'(0) = 0, leaky_relu'(0) = slope, abs'(0) = 0), so a network of zero preactivations has the gradients
PyTorch computes.  ``sigma1`` is ``None`` when 0 is a kink.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import special

from .errors import SphericalCowError

__all__ = [
    "CLOSED_FORM_KINDS",
    "Activation",
    "ActivationModule",
    "activation",
    "available_activations",
    "register_activation",
]

#: Closed-form kinds and the number of variance arguments each takes (1: K; 3: K11, K22, K12).
CLOSED_FORM_KINDS: dict[str, int] = {
    "mean": 1,
    "dmean": 1,
    "sq": 1,
    "dsq": 1,
    "zssd": 1,
    "cross": 3,
    "dcross": 3,
}

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

NumpyFn = Callable[[np.ndarray, Mapping[str, float]], np.ndarray]
TorchFn = Callable[[torch.Tensor, Mapping[str, float]], torch.Tensor]
ClosedForms = dict[str, Callable[..., np.ndarray]]


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _shaped(y: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``y`` as a writable float64 array of ``shape`` (broadcasting constants)."""
    y = _f64(y)
    return y if y.shape == shape else np.broadcast_to(y, shape).copy()


def _rho(K11: np.ndarray, K22: np.ndarray, K12: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (sqrt(K11 K22), rho clipped to [-1, 1]) for K11, K22 > 0."""
    s = np.sqrt(K11 * K22)
    return s, np.clip(K12 / s, -1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------------------


def _scale_invariant_closed(ap: float, am: float) -> ClosedForms:
    """Closed forms for sigma = ap*z (z > 0), am*z (z < 0); see the module docstring (Cho & Saul 2009)."""
    p2 = ap * ap + am * am
    pm = ap * am

    def mean(K: Any) -> np.ndarray:
        return (ap - am) * np.sqrt(_f64(K) / (2.0 * math.pi))

    def dmean(K: Any) -> np.ndarray:
        return np.full(np.shape(K), 0.5 * (ap + am))

    def sq(K: Any) -> np.ndarray:
        return 0.5 * p2 * _f64(K)

    def dsq(K: Any) -> np.ndarray:
        return np.full(np.shape(K), 0.5 * p2)

    def cross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        s, rho = _rho(*np.broadcast_arrays(_f64(K11), _f64(K22), _f64(K12)))
        if ap == am:  # linear up to a factor: exact
            return ap * ap * s * rho
        sin_t = np.sqrt((1.0 - rho) * (1.0 + rho))
        theta = np.arccos(rho)
        j_same = s * (sin_t + (math.pi - theta) * rho) / (2.0 * math.pi)  # J1(theta)
        j_flip = s * (sin_t - theta * rho) / (2.0 * math.pi)  # J1(pi - theta)
        return p2 * j_same - 2.0 * pm * j_flip

    def dcross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        _, rho = _rho(*np.broadcast_arrays(_f64(K11), _f64(K22), _f64(K12)))
        if ap == am:
            return np.full(rho.shape, ap * ap)
        theta = np.arccos(rho)
        return (p2 * (math.pi - theta) + 2.0 * pm * theta) / (2.0 * math.pi)

    return {"mean": mean, "dmean": dmean, "sq": sq, "dsq": dsq, "zssd": sq, "cross": cross, "dcross": dcross}


def _erf_closed() -> ClosedForms:
    """Closed forms for sigma = erf (Williams 1997); see the module docstring."""

    def mean(K: Any) -> np.ndarray:
        return np.zeros(np.shape(K))

    def dmean(K: Any) -> np.ndarray:
        return _TWO_OVER_SQRT_PI / np.sqrt(1.0 + 2.0 * _f64(K))

    def sq(K: Any) -> np.ndarray:
        K = _f64(K)
        return (2.0 / math.pi) * np.arctan(2.0 * K / np.sqrt(1.0 + 4.0 * K))

    def dsq(K: Any) -> np.ndarray:
        return (4.0 / math.pi) / np.sqrt(1.0 + 4.0 * _f64(K))

    def zssd(K: Any) -> np.ndarray:
        K = _f64(K)
        return (4.0 / math.pi) * K / ((1.0 + 2.0 * K) * np.sqrt(1.0 + 4.0 * K))

    def _det(K11: np.ndarray, K22: np.ndarray, s: np.ndarray, rho: np.ndarray) -> np.ndarray:
        # (1 + 2 K11)(1 + 2 K22) - 4 K12^2 written so that it stays >= 1 after clipping rho.
        return 1.0 + 2.0 * (K11 + K22) + 4.0 * s * s * (1.0 - rho) * (1.0 + rho)

    def cross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        K11, K22, K12 = np.broadcast_arrays(_f64(K11), _f64(K22), _f64(K12))
        s, rho = _rho(K11, K22, K12)
        return (2.0 / math.pi) * np.arctan2(2.0 * s * rho, np.sqrt(_det(K11, K22, s, rho)))

    def dcross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        K11, K22, K12 = np.broadcast_arrays(_f64(K11), _f64(K22), _f64(K12))
        s, rho = _rho(K11, K22, K12)
        return (4.0 / math.pi) / np.sqrt(_det(K11, K22, s, rho))

    return {
        "mean": mean,
        "dmean": dmean,
        "sq": sq,
        "dsq": dsq,
        "zssd": zssd,
        "cross": cross,
        "dcross": dcross,
    }


def _sin_closed() -> ClosedForms:
    """Closed forms for sigma = sin; see the module docstring."""

    def mean(K: Any) -> np.ndarray:
        return np.zeros(np.shape(K))

    def dmean(K: Any) -> np.ndarray:
        return np.exp(-0.5 * _f64(K))

    def sq(K: Any) -> np.ndarray:
        return -0.5 * np.expm1(-2.0 * _f64(K))

    def dsq(K: Any) -> np.ndarray:
        return 0.5 * (1.0 + np.exp(-2.0 * _f64(K)))

    def zssd(K: Any) -> np.ndarray:
        K = _f64(K)
        return K * np.exp(-2.0 * K)

    def _parts(K11: Any, K22: Any, K12: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        K11, K22, K12 = np.broadcast_arrays(_f64(K11), _f64(K22), _f64(K12))
        s, rho = _rho(K11, K22, K12)
        c = s * rho  # K12 after clipping
        a = np.abs(c)
        # exp(-(K11+K22)/2) * {sinh, cosh}(c) = exp(|c| - (K11+K22)/2) * (1 -+ exp(-2|c|)) / 2: no overflow.
        return np.sign(c), np.exp(a - 0.5 * (K11 + K22)), a

    def cross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        sign, pref, a = _parts(K11, K22, K12)
        return sign * pref * (-0.5 * np.expm1(-2.0 * a))

    def dcross(K11: Any, K22: Any, K12: Any) -> np.ndarray:
        _, pref, a = _parts(K11, K22, K12)
        return pref * 0.5 * (1.0 + np.exp(-2.0 * a))

    return {
        "mean": mean,
        "dmean": dmean,
        "sq": sq,
        "dsq": dsq,
        "zssd": zssd,
        "cross": cross,
        "dcross": dcross,
    }


# ----------------------------------------------------------------------------------------------------------
# Registry entries
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Entry:
    """How to build an activation called ``name``; ``params`` are validated before any callable sees them."""

    name: str
    np_fwd: NumpyFn
    np_deriv: NumpyFn
    torch_fwd: TorchFn
    defaults: Mapping[str, float] = field(default_factory=dict)
    kinks: Callable[[Mapping[str, float]], tuple[float, ...]] = lambda p: ()
    scale_invariant: Callable[[Mapping[str, float]], tuple[float, float] | None] = lambda p: None
    closed: Callable[[Mapping[str, float]], ClosedForms] = lambda p: {}
    builtin: bool = True


ParamFn = Callable[[Mapping[str, float]], float]


def _si_entry(
    name: str,
    fwd_t: TorchFn,
    ap: ParamFn,
    am: ParamFn,
    deriv_at_zero: ParamFn,
    defaults: Mapping[str, float] | None = None,
) -> _Entry:
    """Entry for sigma = ap*z (z > 0), am*z (z < 0), with sigma'(0) = deriv_at_zero (the torch convention)."""

    def fwd(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
        x = _f64(x)
        return np.where(x > 0, ap(p) * x, am(p) * x)

    def deriv(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
        x = _f64(x)
        return np.where(x > 0, ap(p), np.where(x < 0, am(p), deriv_at_zero(p))).astype(np.float64)

    return _Entry(
        name=name,
        np_fwd=fwd,
        np_deriv=deriv,
        torch_fwd=fwd_t,
        defaults=dict(defaults or {}),
        kinks=lambda p: () if ap(p) == am(p) else (0.0,),
        scale_invariant=lambda p: (float(ap(p)), float(am(p))),
        closed=lambda p: _scale_invariant_closed(float(ap(p)), float(am(p))),
    )


def _np_sigmoid(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    return special.expit(_f64(x))


def _np_sigmoid_d(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    s = special.expit(_f64(x))
    return s * (1.0 - s)


def _np_silu(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    x = _f64(x)
    return x * special.expit(x)


def _np_silu_d(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    x = _f64(x)
    s = special.expit(x)
    return s * (1.0 + x * (1.0 - s))


def _np_gelu(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    x = _f64(x)
    return 0.5 * x * special.erfc(-x * _INV_SQRT_2)  # z Phi(z), accurate for z << 0


def _np_gelu_d(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    x = _f64(x)
    return 0.5 * special.erfc(-x * _INV_SQRT_2) + x * np.exp(-0.5 * x * x) / _SQRT_2PI


def _np_tanh_d(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    c = np.cosh(np.clip(_f64(x), -350.0, 350.0))
    return 1.0 / (c * c)


def _t_softplus(x: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    # log(1 + e^x) without torch.nn.Softplus's linearisation above x = 20 (keeps torch == numpy).
    return torch.logaddexp(x, torch.zeros_like(x))


def _t_gelu(x: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return F.gelu(x)


def _t_leaky(x: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return F.leaky_relu(x, negative_slope=p["slope"])


def _t_linear(x: torch.Tensor, p: Mapping[str, float]) -> torch.Tensor:
    return x


def _smooth_entry(
    name: str,
    np_fwd: NumpyFn,
    np_deriv: NumpyFn,
    torch_fwd: TorchFn,
    closed: Callable[[Mapping[str, float]], ClosedForms] | None = None,
) -> _Entry:
    return _Entry(name=name, np_fwd=np_fwd, np_deriv=np_deriv, torch_fwd=torch_fwd, closed=closed or (lambda p: {}))


def _builtin_entries() -> dict[str, _Entry]:
    entries = [
        _si_entry("relu", lambda x, p: torch.relu(x), lambda p: 1.0, lambda p: 0.0, lambda p: 0.0),
        _si_entry(
            "leaky_relu",
            _t_leaky,
            lambda p: 1.0,
            lambda p: p["slope"],
            lambda p: p["slope"],
            defaults={"slope": 0.01},
        ),
        _si_entry("linear", _t_linear, lambda p: 1.0, lambda p: 1.0, lambda p: 1.0),
        _si_entry("abs", lambda x, p: torch.abs(x), lambda p: 1.0, lambda p: -1.0, lambda p: 0.0),
        _smooth_entry("tanh", lambda x, p: np.tanh(_f64(x)), _np_tanh_d, lambda x, p: torch.tanh(x)),
        _smooth_entry(
            "erf",
            lambda x, p: special.erf(_f64(x)),
            lambda x, p: _TWO_OVER_SQRT_PI * np.exp(-np.square(_f64(x))),
            lambda x, p: torch.special.erf(x),
            closed=lambda p: _erf_closed(),
        ),
        _smooth_entry("sigmoid", _np_sigmoid, _np_sigmoid_d, lambda x, p: torch.sigmoid(x)),
        _smooth_entry("softplus", lambda x, p: np.logaddexp(0.0, _f64(x)), _np_sigmoid, _t_softplus),
        _smooth_entry("gelu", _np_gelu, _np_gelu_d, _t_gelu),
        _smooth_entry("silu", _np_silu, _np_silu_d, lambda x, p: F.silu(x)),
        _smooth_entry(
            "sin",
            lambda x, p: np.sin(_f64(x)),
            lambda x, p: np.cos(_f64(x)),
            lambda x, p: torch.sin(x),
            closed=lambda p: _sin_closed(),
        ),
    ]
    return {e.name: e for e in entries}


_REGISTRY: dict[str, _Entry] = _builtin_entries()
_ALIASES: dict[str, str] = {"swish": "silu"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


# ----------------------------------------------------------------------------------------------------------
# Activation
# ----------------------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return repr(float(v))


@dataclass(frozen=True, eq=False, repr=False)
class Activation:
    """An immutable, hashable activation sigma with NumPy/PyTorch forwards and Gaussian closed forms.

    Build it with :func:`activation` (``activation("leaky_relu", slope=0.1)``); do not call the constructor.
    Equality: same name, same parameters and same registered implementation.  Pickling stores only
    :attr:`spec` and looks the activation up again on load (user activations must be registered there too).
    """

    name: str
    _param_items: tuple[tuple[str, float], ...]
    _entry: _Entry

    # -- metadata -------------------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, float]:
        """Parameters as a fresh dict, e.g. ``{"slope": 0.1}``; ``{}`` when there are none."""
        return dict(self._param_items)

    @property
    def kinks(self) -> tuple[float, ...]:
        """Sorted points where sigma or sigma' is not smooth (relu: ``(0.0,)``); ``()`` for smooth sigma."""
        return self._entry.kinks(self.params)

    @property
    def label(self) -> str:
        """Display name: ``"leaky_relu(slope=0.1)"`` or ``"tanh"``."""
        if not self._param_items:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in self._param_items) + ")"

    @property
    def spec(self) -> str:
        """Round-trippable string, ``activation(act.spec) == act``: ``"leaky_relu:slope=0.1"``, ``"tanh"``."""
        if not self._param_items:
            return self.name
        return f"{self.name}:" + ",".join(f"{k}={_fmt(v)}" for k, v in self._param_items)

    @property
    def builtin(self) -> bool:
        """True for the built-in activations, False for :func:`register_activation` ones."""
        return self._entry.builtin

    @property
    def sigma0(self) -> float:
        """sigma(0)."""
        return float(self(np.zeros(1))[0])

    @property
    def sigma1(self) -> float | None:
        """sigma'(0) (PDLT's sigma_1); ``None`` when 0 is a kink (relu, leaky_relu, abs)."""
        if 0.0 in self.kinks:
            return None
        return float(self.derivative(np.zeros(1))[0])

    @property
    def scale_invariant(self) -> tuple[float, float] | None:
        """``(a_plus, a_minus)`` if sigma(z) = a_plus z (z > 0), a_minus z (z < 0) (PDLT 5.2), else None."""
        return self._entry.scale_invariant(self.params)

    # -- evaluation -----------------------------------------------------------------------------------------
    def __call__(self, x: Any) -> np.ndarray:
        """Float64 NumPy forward sigma(x), elementwise, same shape as ``x``."""
        x = _f64(x)
        return _shaped(self._entry.np_fwd(x, self.params), x.shape)

    def derivative(self, x: Any) -> np.ndarray:
        """Float64 NumPy sigma'(x), elementwise (at a kink: the value torch.autograd gives)."""
        x = _f64(x)
        return _shaped(self._entry.np_deriv(x, self.params), x.shape)

    def torch(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable PyTorch forward for any dtype/device."""
        return self._entry.torch_fwd(x, self.params)

    def module(self) -> ActivationModule:
        """An ``nn.Module`` applying :meth:`torch` (picklable for registered names)."""
        return ActivationModule(self)

    # -- closed forms ---------------------------------------------------------------------------------------
    def has_closed_form(self, kind: str) -> bool:
        """Whether a closed form exists for ``kind`` (one of :data:`CLOSED_FORM_KINDS`)."""
        _check_kind(kind)
        return kind in self._entry.closed(self.params)

    def closed_form(self, kind: str) -> Callable[..., np.ndarray] | None:
        """The raw closed form for ``kind`` (formulas in the module docstring), or ``None`` when unknown.

        1-argument kinds take ``K``, pair kinds take ``(K11, K22, K12)``; NumPy broadcasting applies.  Valid
        only for K > 0 (K11, K22 > 0; rho is clipped to [-1, 1]); no validation is done here: use
        :mod:`sphericalcow.theory.gaussian` for checked calls that also handle K = 0.
        """
        _check_kind(kind)
        return self._entry.closed(self.params).get(kind)

    # -- dunder ---------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Activation({self.spec!r})"

    def __str__(self) -> str:
        return self.label

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activation):
            return NotImplemented
        same = (self.name, self._param_items) == (other.name, other._param_items)
        return same and self._entry is other._entry

    def __hash__(self) -> int:
        return hash((self.name, self._param_items))

    def __reduce__(self) -> tuple[Any, ...]:
        return (activation, (self.spec,))

    def __copy__(self) -> Activation:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Activation:
        return self


class ActivationModule(torch.nn.Module):
    """``nn.Module`` wrapper: ``forward(x) = activation.torch(x)``."""

    def __init__(self, act: Activation | str) -> None:
        super().__init__()
        self.activation = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation.torch(x)

    def extra_repr(self) -> str:
        return self.activation.label


def _check_kind(kind: str) -> None:
    if kind not in CLOSED_FORM_KINDS:
        raise SphericalCowError(f"unknown expectation kind {kind!r}; allowed: {', '.join(CLOSED_FORM_KINDS)}")


# ----------------------------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------------------------


def _parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """Split ``"name"``, ``"name:k=v,k2=v2"`` or ``"name(k=v, k2=v2)"`` into name and raw parameters."""
    s = text.strip()
    if s.endswith(")") and "(" in s:
        name, _, rest = s[:-1].partition("(")
    else:
        name, _, rest = s.partition(":")
    raw: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise SphericalCowError(
                f"bad activation spec {text!r}: parameter {item!r} is not key=value; expected e.g. "
                "'leaky_relu:slope=0.1'"
            )
        if key in raw:
            raise SphericalCowError(f"bad activation spec {text!r}: parameter {key!r} given twice")
        raw[key] = value.strip()
    return name.strip(), raw


def _check_param(act: str, key: str, value: object) -> float:
    what = f"{act} parameter {key}={value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.floating, np.integer)):
        raise SphericalCowError(f"{what} is not a number; expected a finite real number")
    try:
        v = float(value)
    except ValueError:
        raise SphericalCowError(f"{what} is not a number; expected a finite real number") from None
    if not math.isfinite(v):
        raise SphericalCowError(f"{what} is not finite; expected a finite real number")
    return v


def activation(name: str | Activation, **params: Any) -> Activation:
    """Look up an activation by name or spec string (``"leaky_relu:slope=0.1"``) with optional parameters.

    ``activation("leaky_relu", slope=0.1)``, ``activation("leaky_relu:slope=0.1")`` and
    ``activation("leaky_relu(slope=0.1)")`` are equal.  Names are case-insensitive, ``-`` reads as ``_``,
    and ``swish`` is an alias of ``silu``.  An :class:`Activation` is returned as is (or re-parametrised when
    ``params`` are given).  Unknown names, unknown parameters, and non-finite values raise
    :class:`~sphericalcow.errors.SphericalCowError`.
    """
    if isinstance(name, Activation):
        if not params:
            return name
        return activation(name.name, **{**name.params, **params})
    if not isinstance(name, str):
        raise SphericalCowError(
            f"activation {name!r} is not a name; expected a string such as 'relu' or 'leaky_relu:slope=0.1'"
        )
    base, raw = _parse_spec(name)
    canon = _canonical(base)
    canon = _ALIASES.get(canon, canon)
    entry = _REGISTRY.get(canon)
    if entry is None:
        raise SphericalCowError(f"unknown activation {base!r}; allowed: {', '.join(available_activations())}")
    for key in params:
        if key in raw:
            raise SphericalCowError(
                f"activation {name!r}: parameter {key!r} given in the spec and as a keyword; give it once"
            )
    merged: dict[str, object] = {**raw, **params}
    for key in merged:
        if key not in entry.defaults:
            allowed = ", ".join(entry.defaults) if entry.defaults else "none (it takes no parameters)"
            raise SphericalCowError(f"unknown parameter {key!r} for activation {canon!r}; allowed: {allowed}")
    values = {k: _check_param(canon, k, merged.get(k, d)) for k, d in entry.defaults.items()}
    return Activation(canon, tuple(sorted(values.items())), entry)


def available_activations() -> list[str]:
    """Sorted canonical names of all registered activations (built-in and user-registered; no aliases)."""
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------------------
# User registration
# ----------------------------------------------------------------------------------------------------------


def _torch_to_numpy(fn: Callable[[torch.Tensor], Any], x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(_f64(x))
    with torch.no_grad():
        y = fn(torch.from_numpy(x))
    if isinstance(y, torch.Tensor):
        y = y.detach().to("cpu", torch.float64).numpy()
    return _shaped(y, x.shape)


def _autograd_derivative(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(_f64(x))
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    with torch.enable_grad():
        y = fn(t)
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            return np.zeros(x.shape)
        (g,) = torch.autograd.grad(y.sum(), t, allow_unused=True)
    if g is None:
        return np.zeros(x.shape)
    return g.detach().numpy().astype(np.float64, copy=False)


def register_activation(
    name: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    derivative: Callable[[torch.Tensor], torch.Tensor] | None = None,
    kinks: Sequence[float] = (),
    overwrite: bool = False,
) -> Activation:
    """Register an elementwise torch function as activation ``name`` and return it.

    ``fn`` maps a tensor to a tensor of the same shape and must be differentiable by ``torch.autograd``
    unless ``derivative`` (called on float64 tensors; may also return NumPy arrays) is given.  The NumPy
    forward evaluates ``fn`` in float64 via torch.  ``kinks`` lists the points where ``fn`` or its derivative
    is not smooth: the Gaussian quadratures split their integrals there, which is what makes them accurate for
    piecewise functions (declare every kink).  Re-registering a name needs ``overwrite=True``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(_canonical(name)):
        raise SphericalCowError(
            f"activation name {name!r} is not allowed; expected letters, digits and '_', letter first"
        )
    canon = _canonical(name)
    if (canon in _REGISTRY or canon in _ALIASES) and not overwrite:
        raise SphericalCowError(f"activation {canon!r} is already registered; pass overwrite=True to replace it")
    if not callable(fn):
        raise SphericalCowError(f"fn={fn!r} for activation {canon!r} is not callable; expected a torch function")
    if derivative is not None and not callable(derivative):
        raise SphericalCowError(
            f"derivative={derivative!r} for activation {canon!r} is not callable; expected a function or None"
        )
    try:
        kink_list = sorted({float(k) for k in kinks})
    except (TypeError, ValueError):
        raise SphericalCowError(
            f"kinks={kinks!r} for activation {canon!r} is not a sequence of numbers; expected finite numbers"
        ) from None
    if not all(math.isfinite(k) for k in kink_list):
        raise SphericalCowError(f"kinks={kinks!r} for activation {canon!r} must be finite numbers")
    probe = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)
    try:
        with torch.no_grad():
            out = fn(probe)
    except Exception as exc:  # any failure means the function is unusable
        raise SphericalCowError(
            f"fn for activation {canon!r} failed on a float64 tensor ({type(exc).__name__}); expected an "
            "elementwise torch function"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
        raise SphericalCowError(
            f"fn for activation {canon!r} changed the shape of its input; expected an elementwise function"
        )

    kink_tuple = tuple(kink_list)

    def np_fwd(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
        return _torch_to_numpy(fn, x)

    def np_deriv(x: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
        if derivative is None:
            return _autograd_derivative(fn, x)
        return _torch_to_numpy(derivative, x)

    entry = _Entry(
        name=canon,
        np_fwd=np_fwd,
        np_deriv=np_deriv,
        torch_fwd=lambda x, p: fn(x),
        kinks=lambda p: kink_tuple,
        builtin=False,
    )
    _ALIASES.pop(canon, None)
    _REGISTRY[canon] = entry
    return Activation(canon, (), entry)
