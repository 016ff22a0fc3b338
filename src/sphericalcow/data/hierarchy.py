"""The Random Hierarchy Model (RHM): a random, unambiguous context-free grammar with a tree of fixed topology.

Cagnetta, Petrini, Tomasini, Favero & Wyart, "How deep neural networks learn compositional data: the random
hierarchy model", Phys. Rev. X 14, 031001 (2024), arXiv:2307.02129, sec. II. A class label (one of ``n_c``) is
the root of a tree with ``L`` levels of branching ``s``. Every symbol of level l (classes at the top, a vocabulary
of ``v`` features below) has ``m`` synonymous production rules, each an s-tuple of level-(l-1) features; the rules
of a level are drawn uniformly at random WITHOUT replacement among the ``v**s`` possible s-tuples, so no s-tuple
is the production of two different symbols (the grammar is unambiguous, and every input has a single label).
This needs ``n_c * m <= v**s`` and ``v * m <= v**s``; the paper restricts to ``n_c <= v`` and ``m <= v**(s-1)``,
as done here. An input is the string of ``d = s**L`` level-0 features; a datum is fixed by its class and the rule
chosen at each of the ``1 + s + ... + s**(L-1) = (s**L - 1)/(s - 1)`` internal nodes, so there are exactly

    P_max = n_c * m ** ((s**L - 1) / (s - 1))

distinct data (paper, sec. II). Here a datum's index i in [0, P_max) is its mixed-radix code: ``i = c * m**N + r``
with ``N = (s**L - 1)/(s - 1)`` and ``r``'s base-m digits the rule choices, top level first and nodes left to right.
Train and test sets are drawn WITHOUT replacement from the P_max data by sampling distinct codes and decoding
them; the P_max data are never materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import SphericalCowError, check_int
from .base import Dataset
from .teachers import _dtype, _seed

__all__ = ["RandomHierarchyModel", "one_hot", "random_hierarchy_model", "rhm_split"]

# Codes below this bound are handled as int64 (sampling by numpy's choice without replacement); above it, the
# digits are drawn directly and duplicates rejected (the data are then astronomically many, so repeats are rare).
_INT64_SAFE = 2**62


@dataclass(frozen=True, eq=False)
class RandomHierarchyModel:
    """A sampled RHM grammar; build it with :func:`random_hierarchy_model`.

    Attributes:
        v: vocabulary size of the features at every level below the classes.
        m: synonymous rules per symbol.
        n_c: number of classes.
        s: patch size (branching factor of the tree).
        L: number of levels (depth of the tree); inputs have ``s**L`` features.
        rules: ``rules[l]`` has shape ``(n_parents, m, s)``: the ``m`` productions of each symbol at depth ``l``
            from the top (``l = 0``: the ``n_c`` classes; ``l >= 1``: the ``v`` features), entries in ``[0, v)``.
        seed: the seed the rules were drawn with.
    """

    v: int
    m: int
    n_c: int
    s: int
    L: int
    rules: tuple[np.ndarray, ...]
    seed: int

    @property
    def input_length(self) -> int:
        """Number of features of an input, ``s**L``."""
        return self.s**self.L

    @property
    def n_nodes(self) -> int:
        """Internal nodes of the tree (each picks one of ``m`` rules): ``(s**L - 1)/(s - 1)``."""
        return sum(self.s**level for level in range(self.L))

    @property
    def p_max(self) -> int:
        """Number of distinct data, ``n_c * m**((s**L - 1)/(s - 1))`` (Cagnetta et al. 2024, sec. II); exact int."""
        return self.n_c * self.m**self.n_nodes

    # ------------------------------------------------------------------ sampling
    def sample_digits(self, n: int, *, seed: int) -> np.ndarray:
        """``n`` DISTINCT data drawn uniformly without replacement, as codes: an int64 array ``(n, 1 + n_nodes)``
        holding the class then the rule choice of every node (top level first, left to right)."""
        n = check_int("n", n, minimum=1)
        seed = _seed(seed)
        p_max = self.p_max
        if n > p_max:
            raise SphericalCowError(f"n={n} exceeds the {p_max} distinct data of this RHM; expected n <= P_max")
        rng = np.random.default_rng(seed)
        if p_max < _INT64_SAFE:
            return self.digits_of_indices(rng.choice(p_max, size=n, replace=False))
        # astronomically many data: draw codes i.i.d. and keep first occurrences (sequential rejection of repeats
        # gives a uniform random subset)
        out = np.empty((0, 1 + self.n_nodes), dtype=np.int64)
        while out.shape[0] < n:
            k = n - out.shape[0]
            new = np.concatenate(
                [rng.integers(0, self.n_c, size=(k, 1)), rng.integers(0, self.m, size=(k, self.n_nodes))], axis=1
            )
            allc = np.concatenate([out, new])
            _, first = np.unique(allc, axis=0, return_index=True)
            out = allc[np.sort(first)]
        return out[:n]

    def digits_of_indices(self, indices: np.ndarray) -> np.ndarray:
        """Decode indices in ``[0, P_max)`` (int64, so P_max < 2**62) into codes ``(n, 1 + n_nodes)``."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise SphericalCowError(f"indices of shape {idx.shape} and dtype {idx.dtype}; expected a 1-D integer array")
        if self.p_max >= _INT64_SAFE:
            raise SphericalCowError(f"P_max={self.p_max} is too large for int64 indices; use sample_digits")
        if idx.size and (idx.min() < 0 or idx.max() >= self.p_max):
            raise SphericalCowError(f"indices span [{idx.min()}, {idx.max()}]; expected integers in [0, {self.p_max})")
        rest = idx.astype(np.int64).copy()
        out = np.empty((idx.size, 1 + self.n_nodes), dtype=np.int64)
        for j in range(self.n_nodes, 0, -1):
            out[:, j] = rest % self.m
            rest //= self.m
        out[:, 0] = rest
        return out

    def indices_of_digits(self, digits: np.ndarray) -> list[int]:
        """The inverse of :meth:`digits_of_indices`, as exact Python ints (any P_max)."""
        out = []
        for row in np.asarray(digits):
            i = 0
            for d in row[1:]:
                i = i * self.m + int(d)
            out.append(int(row[0]) * self.m**self.n_nodes + i)
        return out

    def symbols(self, digits: np.ndarray) -> np.ndarray:
        """The inputs (level-0 feature strings) of codes: int64 ``(n, s**L)`` with entries in ``[0, v)``."""
        digits = np.asarray(digits, dtype=np.int64)
        n = digits.shape[0]
        sym = digits[:, :1]
        offset = 1
        for level, rules in enumerate(self.rules):
            k = self.s**level
            choice = digits[:, offset : offset + k]
            sym = rules[sym, choice].reshape(n, k * self.s)
            offset += k
        return sym

    def labels_of(self, symbols: np.ndarray) -> np.ndarray:
        """Parse feature strings ``(n, s**L)`` bottom-up through the rules: each datum's class, or -1 where some
        s-tuple is no production of this grammar. Generated inputs always parse back to their label."""
        sym = np.asarray(symbols, dtype=np.int64)
        if sym.ndim != 2 or sym.shape[1] != self.input_length:
            raise SphericalCowError(f"symbols of shape {sym.shape}; expected (n, {self.input_length})")
        if sym.size and (sym.min() < 0 or sym.max() >= self.v):
            raise SphericalCowError(f"symbols span [{sym.min()}, {sym.max()}]; expected integers in [0, {self.v})")
        n = sym.shape[0]
        powers = self.v ** np.arange(self.s - 1, -1, -1, dtype=np.int64)
        bad = np.zeros(n, dtype=bool)
        for level in range(self.L - 1, -1, -1):
            inverse = self._inverse(level)
            codes = (np.where(sym < 0, 0, sym).reshape(n, -1, self.s) * powers).sum(axis=2)
            parent = inverse[codes]
            bad |= (parent < 0).any(axis=1)
            sym = parent
        labels = sym[:, 0].copy()
        labels[bad] = -1
        return labels

    def _inverse(self, level: int) -> np.ndarray:
        """Array of size v**s: the symbol producing each s-tuple at this level (code in base v), -1 if none."""
        rules = self.rules[level]
        powers = self.v ** np.arange(self.s - 1, -1, -1, dtype=np.int64)
        codes = (rules * powers).sum(axis=2)  # (n_parents, m)
        inv = np.full(self.v**self.s, -1, dtype=np.int64)
        inv[codes.ravel()] = np.repeat(np.arange(rules.shape[0]), self.m)
        return inv

    # ------------------------------------------------------------------ data sets
    def dataset_of_digits(self, digits: np.ndarray, *, dtype: Any = "float32", name: str = "") -> Dataset:
        """A :class:`Dataset`: x one-hot ``(n, v, s**L)`` (channels first, for Conv1d), y int64 class labels;
        ``structure`` holds the grammar, the feature strings and the codes."""
        sym = self.symbols(digits)
        return Dataset(
            x=one_hot(sym, self.v, dtype=dtype),
            y=torch.from_numpy(np.asarray(digits)[:, 0].copy()),
            structure={"rhm": self, "symbols": sym, "digits": np.asarray(digits)},
            name=name or f"rhm(v={self.v}, m={self.m}, n_c={self.n_c}, s={self.s}, L={self.L})",
        )

    def split(self, n_train: int, n_test: int, *, seed: int, dtype: Any = "float32") -> tuple[Dataset, Dataset]:
        """Disjoint train and test sets drawn together without replacement from the P_max data."""
        n_train = check_int("n_train", n_train, minimum=1)
        n_test = check_int("n_test", n_test, minimum=0)
        if n_train + n_test > self.p_max:
            raise SphericalCowError(
                f"n_train + n_test = {n_train + n_test} exceeds the {self.p_max} distinct data of this RHM; "
                "expected at most P_max"
            )
        digits = self.sample_digits(n_train + n_test, seed=seed)
        return (
            self.dataset_of_digits(digits[:n_train], dtype=dtype, name="rhm-train"),
            self.dataset_of_digits(digits[n_train:], dtype=dtype, name="rhm-test"),
        )


def one_hot(symbols: np.ndarray, v: int, *, dtype: Any = "float32") -> torch.Tensor:
    """One-hot encoding of feature strings ``(n, d)`` with entries in ``[0, v)``: a tensor ``(n, v, d)``."""
    sym = torch.as_tensor(np.asarray(symbols, dtype=np.int64))
    return torch.nn.functional.one_hot(sym, v).permute(0, 2, 1).to(_dtype(dtype)).contiguous()


def random_hierarchy_model(*, v: int, m: int, n_c: int, s: int, L: int, seed: int) -> RandomHierarchyModel:
    """Draw the rules of an RHM (Cagnetta et al. 2024, sec. II): for every level, ``n_parents * m`` distinct
    s-tuples of ``[0, v)`` uniformly without replacement, ``m`` per parent symbol.

    Requires ``v >= 2``, ``s >= 2``, ``L >= 1``, ``2 <= n_c <= v`` and ``1 <= m <= v**(s-1)`` (the paper's
    conditions; they guarantee the ``v*m`` and ``n_c*m`` productions of a level fit among the ``v**s`` tuples)."""
    v = check_int("v", v, minimum=2)
    s = check_int("s", s, minimum=2)
    L = check_int("L", L, minimum=1)
    n_c = check_int("n_c", n_c, minimum=2)
    m = check_int("m", m, minimum=1)
    seed = _seed(seed)
    if n_c > v:
        raise SphericalCowError(f"n_c={n_c} exceeds v={v}; the RHM needs 2 <= n_c <= v")
    if m > v ** (s - 1):
        raise SphericalCowError(f"m={m} exceeds v**(s-1)={v ** (s - 1)}; unambiguous rules need m <= v**(s-1)")
    if v**s > 2**40:
        raise SphericalCowError(f"v**s = {v**s} s-tuples is too many to index; expected v**s <= 2**40")
    rng = np.random.default_rng(seed)
    powers = v ** np.arange(s - 1, -1, -1, dtype=np.int64)
    rules = []
    for level in range(L):
        parents = n_c if level == 0 else v
        codes = rng.choice(v**s, size=parents * m, replace=False)
        tuples = (codes[:, None] // powers) % v  # (parents*m, s), base-v digits, most significant first
        rules.append(tuples.reshape(parents, m, s).astype(np.int64))
    return RandomHierarchyModel(v=v, m=m, n_c=n_c, s=s, L=L, rules=tuple(rules), seed=seed)


def rhm_split(
    *,
    v: int,
    m: int,
    n_c: int,
    s: int,
    L: int,
    n_train: int,
    n_test: int,
    seed: int,
    rules_seed: int | None = None,
    dtype: Any = "float32",
) -> tuple[Dataset, Dataset]:
    """Train and test sets of a fresh RHM (rules drawn with ``rules_seed``, default ``seed``), disjoint, drawn
    without replacement; x float32 one-hot ``(n, v, s**L)``, y int64 labels. The grammar is in ``structure``."""
    rhm = random_hierarchy_model(v=v, m=m, n_c=n_c, s=s, L=L, seed=seed if rules_seed is None else rules_seed)
    return rhm.split(n_train, n_test, seed=seed, dtype=dtype)
