"""The shared container returned by every data generator in :mod:`sphericalcow.data`.

Every generator takes keyword arguments and ``seed: int``, validates its arguments (raising
:class:`~sphericalcow.errors.SphericalCowError` with a one-line message) and returns a frozen :class:`Dataset`
holding the inputs, the targets and the known structure that produced them (teacher weights, relevant bits,
grammar rules, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """Inputs, targets and the known structure of a generated data set.

    Attributes:
        x: ``(P, ...)`` inputs.
        y: ``(P,)`` or ``(P, d_out)`` targets / labels.
        structure: the known structure: teacher weights, relevant bits, rules, ...
        name: a short human-readable name of the generator.
    """

    x: torch.Tensor  # (P, ...) inputs
    y: torch.Tensor  # (P,) or (P, d_out) targets / labels
    structure: dict[str, Any] = field(default_factory=dict)  # known structure: teacher weights, relevant bits, rules
    name: str = ""
