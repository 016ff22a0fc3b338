"""Data with known structure: each generator takes a seed and returns tensors plus the structure that made them."""

from .base import Dataset
from .hierarchy import RandomHierarchyModel, one_hot, random_hierarchy_model, rhm_split
from .manifold import hidden_manifold
from .mixtures import gaussian_mixture
from .parity import fourier_coefficient, relevant_bits, sparse_parity
from .polynomials import product_of_inputs, random_polynomial
from .real import digits
from .teachers import SoftCommitteeTeacher, committee_teacher, mlp_teacher, soft_committee

__all__ = [
    "Dataset",
    "RandomHierarchyModel",
    "SoftCommitteeTeacher",
    "committee_teacher",
    "digits",
    "fourier_coefficient",
    "gaussian_mixture",
    "hidden_manifold",
    "mlp_teacher",
    "one_hot",
    "product_of_inputs",
    "random_hierarchy_model",
    "random_polynomial",
    "relevant_bits",
    "rhm_split",
    "soft_committee",
    "sparse_parity",
]
