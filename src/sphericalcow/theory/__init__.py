"""Pure float64 theory: Gaussian expectations, kernel recursions, criticality, phase diagrams."""

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
from .kernels import KERNEL_METHODS, KERNELS, Kernels, kernels, nngp, ntk
from .phase import PhaseDiagram, phase_diagram, plot_phase_diagram
from .recursions import KernelProfile, kernel_profile, next_kernel, variance_recursion

__all__ = [
    "KERNELS",
    "KERNEL_METHODS",
    "CriticalPoint",
    "Criticality",
    "KernelProfile",
    "Kernels",
    "PhaseDiagram",
    "chi_parallel",
    "chi_perpendicular",
    "critical_init",
    "critical_line_points",
    "critical_point",
    "criticality",
    "fixed_point",
    "kernel_profile",
    "kernels",
    "next_kernel",
    "nngp",
    "ntk",
    "phase_diagram",
    "plot_phase_diagram",
    "universality",
    "variance_recursion",
]
