"""Low-degree polynomial targets: random polynomials of degree <= p with known coefficients, and the product of
n inputs.

Hermite basis: the normalised probabilists' Hermite polynomials h_j = He_j / sqrt(j!) are orthonormal under
N(0, 1) (Abramowitz & Stegun 22.2.15; O'Donnell 2014, ch. 11), so the products H_alpha(x) = prod_i h_{alpha_i}(x_i)
over multi-indices alpha are orthonormal under x ~ N(0, I_n): E[H_alpha H_beta] = delta_{alpha beta}, and a target
y = sum_alpha c_alpha H_alpha has E[y^2] = sum c_alpha^2 and E[y H_alpha] = c_alpha. Monomial basis:
y = sum_alpha c_alpha prod_i x_i^{alpha_i}. Inputs and labels are float32 by default; the coefficients float64.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError, check_int, check_positive
from .base import Dataset
from .teachers import _dtype, _seed

__all__ = ["hermite", "multi_indices", "polynomial_features", "product_of_inputs", "random_polynomial"]


def hermite(j: int, x: torch.Tensor) -> torch.Tensor:
    """Normalised probabilists' Hermite polynomial h_j(x) = He_j(x)/sqrt(j!), by the recurrence
    He_{j+1} = x He_j - j He_{j-1} (Abramowitz & Stegun 22.7.14)."""
    j = check_int("j", j, minimum=0)
    h0, h1 = torch.ones_like(x), x
    if j == 0:
        return h0
    for i in range(1, j):
        h0, h1 = h1, x * h1 - i * h0
    return h1 / math.sqrt(math.factorial(j))


def multi_indices(n: int, degree: int) -> list[tuple[int, ...]]:
    """All multi-indices alpha in N^n with 1 <= |alpha| <= degree, ordered by degree."""
    out = []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(n), d):
            a = [0] * n
            for i in combo:
                a[i] += 1
            out.append(tuple(a))
    return out


def polynomial_features(x: torch.Tensor, terms: list[tuple[int, ...]], basis: str = "hermite") -> torch.Tensor:
    """(P, len(terms)) matrix of H_alpha(x) ("hermite") or x^alpha ("monomial") for inputs x (P, n)."""
    if basis not in ("hermite", "monomial"):
        raise SphericalCowError(f"basis={basis!r} is not allowed; expected 'hermite' or 'monomial'")
    cols = []
    for a in terms:
        col = torch.ones(x.shape[0], dtype=x.dtype)
        for i, ai in enumerate(a):
            if ai:
                col = col * (hermite(ai, x[:, i]) if basis == "hermite" else x[:, i] ** ai)
        cols.append(col)
    return torch.stack(cols, dim=1)


def random_polynomial(
    *,
    n: int,
    degree: int,
    P: int,
    seed: int,
    basis: str = "hermite",
    n_terms: int | None = None,
    noise: float = 0.0,
    dtype: Any = "float32",
) -> Dataset:
    """P samples x ~ N(0, I_n), y = sum_alpha c_alpha B_alpha(x) (+ noise) with ``n_terms`` random multi-indices of
    degree 1..``degree`` (default: all of them) and coefficients c ~ N(0, 1/n_terms) (so E[y^2] ~ 1 in the Hermite
    basis). ``structure``: ``terms`` (list of multi-indices), ``coefficients`` (float64), ``basis``, ``degree``."""
    n = check_int("n", n, minimum=1)
    degree = check_int("degree", degree, minimum=1)
    P = check_int("P", P, minimum=1)
    noise = check_positive("noise", noise, allow_zero=True)
    if basis not in ("hermite", "monomial"):
        raise SphericalCowError(f"basis={basis!r} is not allowed; expected 'hermite' or 'monomial'")
    all_terms = multi_indices(n, degree)
    if len(all_terms) > 100_000:
        raise SphericalCowError(f"n={n}, degree={degree} give {len(all_terms)} monomials; expected at most 100000")
    rng = np.random.default_rng(_seed(seed))
    if n_terms is None:
        terms = all_terms
    else:
        n_terms = check_int("n_terms", n_terms, minimum=1)
        if n_terms > len(all_terms):
            raise SphericalCowError(f"n_terms={n_terms} is not allowed; expected <= {len(all_terms)} for n={n}")
        terms = [all_terms[i] for i in sorted(rng.choice(len(all_terms), size=n_terms, replace=False))]
    coef = torch.as_tensor(rng.normal(0.0, 1.0 / math.sqrt(len(terms)), size=len(terms)), dtype=torch.float64)
    g = torch.Generator().manual_seed(_seed(seed) + 1)
    x = torch.randn(P, n, generator=g, dtype=torch.float64)
    y = polynomial_features(x, terms, basis) @ coef
    if noise > 0:
        y = y + noise * torch.randn(P, generator=g, dtype=torch.float64)
    dt = _dtype(dtype)
    structure = {"terms": terms, "coefficients": coef, "basis": basis, "degree": degree, "noise": noise}
    return Dataset(x.to(dt), y.to(dt), structure, name=f"random degree-{degree} polynomial ({basis}) of {n} inputs")


def product_of_inputs(*, n: int, P: int, seed: int, distribution: str = "uniform", dtype: Any = "float32") -> Dataset:
    """P samples of y = x_1 x_2 ... x_n with x ~ U[-1, 1]^n ("uniform", E[y^2] = 3^-n) or N(0, I_n) ("gaussian",
    E[y^2] = 1): the target of Lin, Tegmark & Rolnick (2017)'s depth separation."""
    n = check_int("n", n, minimum=1)
    P = check_int("P", P, minimum=1)
    g = torch.Generator().manual_seed(_seed(seed))
    if distribution == "uniform":
        x = 2 * torch.rand(P, n, generator=g, dtype=torch.float64) - 1
    elif distribution == "gaussian":
        x = torch.randn(P, n, generator=g, dtype=torch.float64)
    else:
        raise SphericalCowError(f"distribution={distribution!r} is not allowed; expected 'uniform' or 'gaussian'")
    dt = _dtype(dtype)
    return Dataset(
        x.to(dt), x.prod(dim=1).to(dt), {"n": n, "distribution": distribution}, name=f"product of {n} inputs"
    )
