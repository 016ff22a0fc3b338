"""The hidden manifold model (Goldt, Mezard, Krzakala & Zdeborova, "Modeling the influence of data structure on
learning in neural networks: the hidden manifold model", Phys. Rev. X 10, 041044 (2020), sec. II).

Inputs live near a D-dimensional curved manifold of R^N: latent vectors c ~ N(0, I_D) (the rows of C, (P, D)),
a fixed feature matrix F (D, N) with i.i.d. N(0, 1) entries, and

    x = f(C F / sqrt(D))          (element-wise nonlinearity f),

and the labels are produced by a teacher acting on the LATENT c only, here a two-layer teacher
h = sum_k v_k erf(w_k . c / sqrt(2 D)) / sqrt(K) with w_k ~ N(0, I_D) (``label="sign"``: y = sign(h); K = 1 is a
one-unit teacher as in the paper). For odd f (tanh, sign, erf) the inputs' covariance is
mu_1^2 F^T F / D + mu_*^2 I with mu_1 = E[z f(z)], mu_*^2 = E f^2 - mu_1^2, z ~ N(0, 1) (the Gaussian equivalence
of Goldt et al., sec. IV, to leading order in 1/D):
a low-rank part of rank D sticking out of a bulk, which is how the latent dimension shows in x's spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from scipy.special import erf

from ..errors import SphericalCowError, check_int
from .base import Dataset
from .teachers import _dtype, _seed

__all__ = ["hidden_manifold"]

_F: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "sign": np.sign,
    "erf": lambda z: erf(z / math.sqrt(2.0)),
    "relu": lambda z: np.maximum(z, 0.0),
}


def hidden_manifold(
    *,
    n: int,
    N: int,
    D: int,
    f: Literal["tanh", "sign", "erf", "relu"] = "tanh",
    teacher_width: int = 1,
    label: Literal["sign", "regression"] = "sign",
    seed: int,
    dtype: Any = "float32",
) -> Dataset:
    """``n`` samples of the hidden manifold model with input dimension ``N`` and latent dimension ``D``.

    x: ``(n, N)`` in ``dtype`` (float32 default); y: float ``(n,)``, +-1 for ``label="sign"`` or the teacher's real
    output for ``"regression"``. ``structure``: ``F`` (D, N), ``C`` (n, D) latents, ``teacher_w`` (K, D),
    ``teacher_v`` (K,), ``f``, ``D``. The teacher sees only the latent: y = out(sum_k v_k erf(w_k . c / sqrt(2 D))
    / sqrt(K))."""
    n = check_int("n", n, minimum=1)
    N = check_int("N", N, minimum=1)
    D = check_int("D", D, minimum=1)
    K = check_int("teacher_width", teacher_width, minimum=1)
    seed = _seed(seed)
    dtype = _dtype(dtype)
    if f not in _F:
        raise SphericalCowError(f"f={f!r} is not allowed; expected one of {', '.join(sorted(_F))}")
    if label not in ("sign", "regression"):
        raise SphericalCowError(f"label={label!r} is not allowed; expected 'sign' or 'regression'")
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((D, N))
    w = rng.standard_normal((K, D))
    v = np.ones(K) if K == 1 else rng.standard_normal(K)
    C = rng.standard_normal((n, D))
    x = _F[f](C @ F / math.sqrt(D))
    h = (erf(C @ w.T / math.sqrt(2.0 * D)) @ v) / math.sqrt(K)
    y = np.where(h >= 0, 1.0, -1.0) if label == "sign" else h
    return Dataset(
        x=torch.from_numpy(x).to(dtype),
        y=torch.from_numpy(y).to(dtype),
        structure={"F": F, "C": C, "teacher_w": w, "teacher_v": v, "f": f, "D": D},
        name=f"hidden-manifold(N={N}, D={D}, f={f})",
    )
