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
from .phase import PhaseDiagram, phase_diagram, plot_phase_diagram
from .recursions import KernelProfile, kernel_profile, next_kernel, variance_recursion

__all__ = [
    "CriticalPoint",
    "Criticality",
    "KernelProfile",
    "PhaseDiagram",
    "chi_parallel",
    "chi_perpendicular",
    "critical_init",
    "critical_line_points",
    "critical_point",
    "criticality",
    "fixed_point",
    "kernel_profile",
    "next_kernel",
    "phase_diagram",
    "plot_phase_diagram",
    "universality",
    "variance_recursion",
]
