"""Sparse parity: n bits x in {-1, +1}^n uniform, y = prod_{i in S} x_i for a hidden set S of k relevant bits.

The k-sparse parity is the Fourier character chi_S(x) = prod_{i in S} x_i of the Boolean cube; it is orthogonal
to every character of lower degree, so no correlation with fewer than k bits reveals S (the statistical-query
hardness behind the n^k lower bound; Blum et al. 1994; Barak et al. 2022 NeurIPS, "Hidden progress in deep
learning: SGD learns parities near the computational limit"). Inputs and labels are float32 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import SphericalCowError, check_int
from .base import Dataset
from .teachers import _dtype, _seed

__all__ = ["fourier_coefficient", "parity_batch", "relevant_bits", "sparse_parity"]


def relevant_bits(n: int, k: int, *, seed: int) -> tuple[int, ...]:
    """The k relevant indices (sorted) out of n, chosen uniformly at random with ``seed``."""
    n = check_int("n", n, minimum=1)
    k = check_int("k", k, minimum=1)
    if k > n:
        raise SphericalCowError(f"k={k} is not allowed; expected 1 <= k <= n={n}")
    g = torch.Generator().manual_seed(_seed(seed))
    return tuple(sorted(int(i) for i in torch.randperm(n, generator=g)[:k]))


def _check_relevant(n: int, k: int, relevant: Sequence[int]) -> tuple[int, ...]:
    rel = tuple(int(i) for i in relevant)
    if len(rel) != k or len(set(rel)) != k or any(not 0 <= i < n for i in rel):
        raise SphericalCowError(
            f"relevant={list(relevant)!r} is not allowed; expected {k} distinct indices in [0, {n})"
        )
    return tuple(sorted(rel))


def parity_batch(
    n: int, relevant: Sequence[int], P: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """P fresh samples (x, y) of the parity on ``relevant`` drawn from ``generator`` (for online SGD loops)."""
    x = torch.randint(0, 2, (P, n), generator=generator).to(dtype) * 2 - 1
    return x, x[:, list(relevant)].prod(dim=1)


def sparse_parity(
    *, n: int, k: int, P: int, seed: int, relevant: Sequence[int] | None = None, dtype: Any = "float32"
) -> Dataset:
    """P samples of the k-sparse parity of n bits. The relevant set is drawn with ``seed`` unless given; samples
    use ``seed + 1``. ``structure``: ``relevant`` (sorted tuple), ``n``, ``k``."""
    n = check_int("n", n, minimum=1)
    k = check_int("k", k, minimum=1)
    P = check_int("P", P, minimum=1)
    if k > n:
        raise SphericalCowError(f"k={k} is not allowed; expected 1 <= k <= n={n}")
    rel = relevant_bits(n, k, seed=seed) if relevant is None else _check_relevant(n, k, relevant)
    g = torch.Generator().manual_seed(_seed(seed) + 1)
    x, y = parity_batch(n, rel, P, g, _dtype(dtype))
    return Dataset(x, y, {"relevant": rel, "n": n, "k": k}, name=f"{k}-sparse parity of {n} bits")


def fourier_coefficient(f: torch.Tensor, x: torch.Tensor, subset: Sequence[int]) -> torch.Tensor:
    """The empirical Fourier coefficient hat f(S) = mean_p f(x_p) chi_S(x_p), chi_S(x) = prod_{i in S} x_i, of
    function values ``f`` (P,) at points ``x`` (P, n) of the cube (O'Donnell 2014, "Analysis of Boolean
    Functions", eq. (1.6)). On the uniform cube it estimates E[f chi_S] with standard error <= sqrt(E f^2 / P)."""
    if x.ndim != 2 or f.shape != (x.shape[0],):
        raise SphericalCowError(
            f"f of shape {tuple(f.shape)} and x of shape {tuple(x.shape)}; expected (P,) and (P, n)"
        )
    chi = x[:, list(subset)].prod(dim=1) if len(subset) else torch.ones_like(f)
    return (f * chi).mean()
