"""Data with known structure: each generator takes a seed and returns tensors plus the structure that made them."""

from .base import Dataset
from .hierarchy import RandomHierarchyModel, one_hot, random_hierarchy_model, rhm_split
from .manifold import hidden_manifold
from .mixtures import gaussian_mixture
from .real import digits

__all__ = [
    "Dataset",
    "RandomHierarchyModel",
    "digits",
    "gaussian_mixture",
    "hidden_manifold",
    "one_hot",
    "random_hierarchy_model",
    "rhm_split",
]
