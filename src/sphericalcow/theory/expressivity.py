"""Depth separation for the product of n inputs (Lin, Tegmark & Rolnick 2017, "Why does deep and cheap learning
work so well?", J. Stat. Phys. 168, 1223; float64).

Multiplication gate (their section 3.2, Fig. 2): for a smooth activation with sigma''(0) != 0,

    x y ~ [sigma(l(x+y)) + sigma(-l(x+y)) - sigma(l(x-y)) - sigma(-l(x-y))] / (4 l^2 sigma''(0)),

four neurons; by Taylor expansion the error is (sigma''''(0) / (6 sigma''(0))) l^2 x y (x^2 + y^2) + O(l^4), so it
vanishes as l^2 when the scale l -> 0. A binary tree of n - 1 gates computes prod_i x_i with 4(n - 1) neurons
(deep construction, their Theorem on the product of n inputs). With one hidden layer the product needs 2^n
neurons (their Theorem 5 lower bound, for activations with nonzero Taylor coefficients), and 2^n suffice:

    prod_i x_i ~ sum_{s in {+-1}^n} (prod_i s_i) sigma(l s.x) / (2^n l^n sigma^(n)(0))    (shallow construction).
"""

from __future__ import annotations

from typing import Any

import torch

from ..activations import Activation, activation
from ..errors import SphericalCowError, check_int, check_positive

__all__ = [
    "activation_derivatives",
    "deep_product",
    "deep_product_neurons",
    "gate_error_coefficient",
    "multiplication_gate",
    "multiplication_gate_weights",
    "shallow_product",
    "shallow_product_neurons",
]


class _Exp:
    """sigma = exp: every derivative at 0 is 1 (so the shallow construction works for every n)."""

    spec = "exp"

    @staticmethod
    def torch(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


def _act(a: str | Activation) -> Any:
    """An activation of the registry (``sphericalcow.activation``), or "exp"."""
    if isinstance(a, str) and a == "exp":
        return _Exp()
    return activation(a) if isinstance(a, str) else a


def activation_derivatives(act: str | Activation, order: int) -> list[float]:
    """[sigma(0), sigma'(0), ..., sigma^(order)(0)] by nested autograd in float64; ``act`` is a registered
    activation or "exp"."""
    order = check_int("order", order, minimum=0)
    a = _act(act)
    x = torch.zeros((), dtype=torch.float64, requires_grad=True)
    y = a.torch(x)
    out = [float(y.detach())]
    for _ in range(order):
        (y,) = torch.autograd.grad(y, x, create_graph=True)
        out.append(float(y.detach()))
    return out


def multiplication_gate_weights(act: str | Activation, lam: float) -> dict[str, Any]:
    """The explicit 4-neuron gate: hidden weights W (4, 2) = lam [[1, 1], [-1, -1], [1, -1], [-1, 1]], zero biases,
    readout a (4,) = [1, 1, -1, -1] / (4 lam^2 sigma''(0)) (Lin, Tegmark & Rolnick 2017, Fig. 2)."""
    lam = check_positive("lam", lam)
    d2 = activation_derivatives(act, 2)[2]
    if abs(d2) < 1e-12:
        raise SphericalCowError(
            f"activation {_act(act).spec!r} has sigma''(0) = {d2:g}; the gate needs sigma''(0) != 0"
        )
    W = lam * torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    a = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64) / (4 * lam**2 * d2)
    return {"W": W, "b": torch.zeros(4, dtype=torch.float64), "a": a, "neurons": 4}


def multiplication_gate(x: Any, y: Any, act: str | Activation = "softplus", lam: float = 0.1) -> torch.Tensor:
    """x * y computed by the 4-neuron gate (float64)."""
    w = multiplication_gate_weights(act, lam)
    a = _act(act)
    xy = torch.stack(
        torch.broadcast_tensors(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)), -1
    )
    return a.torch(xy @ w["W"].T + w["b"]) @ w["a"]


def gate_error_coefficient(act: str | Activation) -> float:
    """c in gate(x, y) - x y = c lam^2 x y (x^2 + y^2) + O(lam^4): c = sigma''''(0) / (6 sigma''(0)) (Taylor
    expansion of the gate, module docstring)."""
    d = activation_derivatives(act, 4)
    if abs(d[2]) < 1e-12:
        raise SphericalCowError(f"activation {_act(act).spec!r} has sigma''(0) = 0; the gate needs sigma''(0) != 0")
    return d[4] / (6.0 * d[2])


def deep_product_neurons(n: int) -> int:
    """Neurons of the deep binary-tree construction of prod_{i<=n} x_i: 4 (n - 1) (Lin, Tegmark & Rolnick 2017)."""
    n = check_int("n", n, minimum=1)
    return 4 * (n - 1)


def shallow_product_neurons(n: int) -> int:
    """Neurons one hidden layer needs for prod_{i<=n} x_i: 2^n (Lin, Tegmark & Rolnick 2017, Theorem 5; the shallow
    construction attains it)."""
    n = check_int("n", n, minimum=1)
    return 2**n


def deep_product(x: Any, act: str | Activation = "softplus", lam: float = 0.1) -> torch.Tensor:
    """prod_i x_i for x (P, n) by a balanced binary tree of multiplication gates (n - 1 gates, 4 (n - 1) neurons,
    depth ceil(log2 n)); float64."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise SphericalCowError(f"x of shape {tuple(x.shape)} is not allowed; expected (P, n) with n >= 1")
    vals = [x[:, i] for i in range(x.shape[1])]
    while len(vals) > 1:
        nxt = [multiplication_gate(vals[i], vals[i + 1], act, lam) for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


def shallow_product(x: Any, act: str | Activation = "exp", lam: float = 0.1) -> torch.Tensor:
    """prod_i x_i for x (P, n) by one hidden layer of 2^n neurons (module docstring); needs sigma^(n)(0) != 0."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.ndim != 2 or not 1 <= x.shape[1] <= 16:
        raise SphericalCowError(f"x of shape {tuple(x.shape)} is not allowed; expected (P, n) with 1 <= n <= 16")
    lam = check_positive("lam", lam)
    n = x.shape[1]
    dn = activation_derivatives(act, n)[n]
    if abs(dn) < 1e-12:
        raise SphericalCowError(
            f"activation {_act(act).spec!r} has sigma^({n})(0) = 0; the shallow construction needs != 0"
        )
    s = torch.tensor(list(_signs(n)), dtype=torch.float64)  # (2^n, n)
    coef = s.prod(dim=1) / (2**n * lam**n * dn)
    return _act(act).torch(lam * x @ s.T) @ coef


def _signs(n: int):
    for k in range(2**n):
        yield [1.0 if (k >> i) & 1 else -1.0 for i in range(n)]
