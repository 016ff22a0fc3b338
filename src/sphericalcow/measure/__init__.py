"""Measurements on real PyTorch networks: forward probes over seeds and confidence intervals."""

from sphericalcow.measure.monte_carlo import MonteCarloKernels, monte_carlo_kernels
from sphericalcow.measure.ntk import NTK_METHODS, NTK_OUTPUTS, empirical_nngp, empirical_ntk
from sphericalcow.measure.probes import (
    MODES,
    ForwardProbe,
    ModelProbe,
    probe_forward,
    probe_model,
    record,
    resolve_layers,
)
from sphericalcow.measure.stats import Estimate, bootstrap_ci, bootstrap_means_ci, mean_ci

__all__ = [
    "MODES",
    "NTK_METHODS",
    "NTK_OUTPUTS",
    "Estimate",
    "ForwardProbe",
    "ModelProbe",
    "MonteCarloKernels",
    "bootstrap_ci",
    "bootstrap_means_ci",
    "empirical_nngp",
    "empirical_ntk",
    "mean_ci",
    "monte_carlo_kernels",
    "probe_forward",
    "probe_model",
    "record",
    "resolve_layers",
]
