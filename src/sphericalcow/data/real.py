"""A small real data set shipped inside a dependency: scikit-learn's 8x8 handwritten digits (1797 images, 10
classes; Alpaydin & Kaynak 1998, UCI), loaded offline with :func:`sklearn.datasets.load_digits`."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SphericalCowError, check_int
from .base import Dataset

__all__ = ["digits"]


def digits(
    *,
    n_test: int = 360,
    classes: list[int] | None = None,
    standardize: bool = True,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> tuple[Dataset, Dataset]:
    """scikit-learn's digits split at random (``seed``) into train and test sets, disjoint.

    x: ``(n, 64)`` pixel intensities (0-16) in ``dtype`` (float32 default), standardised per pixel with the TRAIN
    set's mean and standard deviation when ``standardize`` (constant pixels are left centred, not divided);
    y: int64 labels, relabelled 0..len(classes)-1 when ``classes`` selects a subset. ``structure``: ``mean``,
    ``std``, ``classes``, ``indices`` into the full data set."""
    from sklearn.datasets import load_digits

    n_test = check_int("n_test", n_test, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    data = load_digits()
    X, Y = data.data.astype(np.float64), data.target.astype(np.int64)
    keep = list(range(10)) if classes is None else list(classes)
    if len(keep) < 2 or len(set(keep)) != len(keep) or any(c not in range(10) for c in keep):
        raise SphericalCowError(f"classes={classes!r} is not allowed; expected at least 2 distinct digits in 0..9")
    idx = np.flatnonzero(np.isin(Y, keep))
    if n_test >= idx.size:
        raise SphericalCowError(f"n_test={n_test} leaves no training data; expected n_test < {idx.size}")
    perm = np.random.default_rng(seed).permutation(idx)
    te, tr = perm[:n_test], perm[n_test:]
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    y_all = relabel[Y]
    mean = X[tr].mean(axis=0) if standardize else np.zeros(X.shape[1])
    std = X[tr].std(axis=0) if standardize else np.ones(X.shape[1])
    std = np.where(std > 0, std, 1.0)

    def make(ix: np.ndarray, part: str) -> Dataset:
        return Dataset(
            x=torch.from_numpy((X[ix] - mean) / std).to(dtype),
            y=torch.from_numpy(y_all[ix]),
            structure={"mean": mean, "std": std, "classes": keep, "indices": ix},
            name=f"digits-{part}",
        )

    return make(tr, "train"), make(te, "test")
