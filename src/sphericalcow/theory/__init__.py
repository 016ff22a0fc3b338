"""Pure float64 theory: Gaussian expectations, kernels, criticality, phase diagrams, finite width, dynamics."""

from .criticality import (
    Criticality,
    CriticalPoint,
    chi_parallel,
    chi_perpendicular,
    critical_init,
    critical_line_points,
    critical_point,
    criticality,
    fixed_point,
    universality,
)
from .finite_width import (
    FiniteWidth,
    NTKVelocity,
    exact_homogeneous_kurtosis,
    exact_relu_kurtosis,
    finite_width,
    moment_ratio,
    ntk_velocity,
    universal_kurtosis_slope,
)
from .kernels import KERNEL_METHODS, KERNELS, Kernels, kernels, nngp, ntk
from .learning_rates import LearningRates, learning_rates
from .phase import PhaseDiagram, phase_diagram, plot_phase_diagram
from .recursions import KernelProfile, kernel_profile, next_kernel, variance_recursion

__all__ = [
    "KERNELS",
    "KERNEL_METHODS",
    "CriticalPoint",
    "Criticality",
    "FiniteWidth",
    "KernelProfile",
    "Kernels",
    "LearningRates",
    "NTKVelocity",
    "PhaseDiagram",
    "chi_parallel",
    "chi_perpendicular",
    "critical_init",
    "critical_line_points",
    "critical_point",
    "criticality",
    "exact_homogeneous_kurtosis",
    "exact_relu_kurtosis",
    "finite_width",
    "fixed_point",
    "kernel_profile",
    "kernels",
    "learning_rates",
    "moment_ratio",
    "next_kernel",
    "nngp",
    "ntk",
    "ntk_velocity",
    "phase_diagram",
    "plot_phase_diagram",
    "universal_kurtosis_slope",
    "universality",
    "variance_recursion",
]
