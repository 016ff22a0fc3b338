"""Gaussian mixture classification: class k has inputs x ~ N(mu_k, sigma^2 I_d), labels uniform over classes.

The means are drawn i.i.d. N(0, I_d) and rescaled to norm ``separation / sqrt(2)`` each (so two means of
orthogonal directions sit ``separation`` apart), or given explicitly. The generating means and covariance are the
data's known structure; the Bayes-optimal classifier is the nearest mean (equal isotropic covariances and priors).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError, check_int, check_positive
from .base import Dataset
from .teachers import _dtype, _seed

__all__ = ["gaussian_mixture"]


def gaussian_mixture(
    *,
    n: int,
    d: int,
    n_classes: int = 2,
    separation: float = 2.0,
    sigma: float = 1.0,
    means: np.ndarray | torch.Tensor | None = None,
    seed: int,
    dtype: Any = "float32",
) -> Dataset:
    """``n`` points of an isotropic Gaussian mixture in ``d`` dimensions.

    x: ``(n, d)`` in ``dtype`` (float32 by default), y: int64 class labels ``(n,)``, each class drawn with probability
    1/n_classes. ``structure``: ``means`` ``(n_classes, d)`` float64, ``sigma``, ``covariance`` (= sigma^2 I as a
    float64 ``(d, d)`` matrix) and ``bayes_rule`` ("nearest mean")."""
    n = check_int("n", n, minimum=1)
    d = check_int("d", d, minimum=1)
    k = check_int("n_classes", n_classes, minimum=2)
    sigma = check_positive("sigma", sigma)
    seed = _seed(seed)
    dtype = _dtype(dtype)
    rng = np.random.default_rng(seed)
    if means is None:
        sep = check_positive("separation", separation, allow_zero=True)
        mu = rng.standard_normal((k, d))
        mu *= sep / math.sqrt(2.0) / np.linalg.norm(mu, axis=1, keepdims=True)
    else:
        mu = np.asarray(means.detach().cpu() if isinstance(means, torch.Tensor) else means, dtype=np.float64)
        if mu.shape != (k, d) or not np.all(np.isfinite(mu)):
            raise SphericalCowError(f"means of shape {mu.shape}; expected finite values of shape ({k}, {d})")
    y = rng.integers(0, k, size=n)
    x = mu[y] + sigma * rng.standard_normal((n, d))
    return Dataset(
        x=torch.from_numpy(x).to(dtype),
        y=torch.from_numpy(y),
        structure={
            "means": mu,
            "sigma": sigma,
            "covariance": sigma**2 * np.eye(d),
            "bayes_rule": "nearest mean",
        },
        name=f"gaussian-mixture(k={k}, d={d})",
    )
