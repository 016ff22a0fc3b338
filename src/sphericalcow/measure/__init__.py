"""Measurements on real PyTorch networks: forward probes over seeds and confidence intervals."""

from sphericalcow.measure.finite_width import EnsembleStatistics, ensemble_statistics, ntk_velocity_samples
from sphericalcow.measure.hessian import (
    HessianOperator,
    MatrixOperator,
    hutchinson,
    hutchpp,
    lanczos,
    spectral_density,
)
from sphericalcow.measure.loss_landscape import interpolate, loss_slice_1d, loss_slice_2d, random_directions
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
from sphericalcow.measure.weight_spectra import (
    LayerSpectrum,
    WeightSpectra,
    fit_marchenko_pastur,
    fit_power_law,
    marchenko_pastur_pdf,
    plot_weight_spectra,
    weight_spectra,
)

__all__ = [
    "MODES",
    "NTK_METHODS",
    "NTK_OUTPUTS",
    "EnsembleStatistics",
    "Estimate",
    "ForwardProbe",
    "HessianOperator",
    "LayerSpectrum",
    "MatrixOperator",
    "ModelProbe",
    "MonteCarloKernels",
    "WeightSpectra",
    "bootstrap_ci",
    "bootstrap_means_ci",
    "empirical_nngp",
    "empirical_ntk",
    "ensemble_statistics",
    "fit_marchenko_pastur",
    "fit_power_law",
    "hutchinson",
    "hutchpp",
    "interpolate",
    "lanczos",
    "loss_slice_1d",
    "loss_slice_2d",
    "marchenko_pastur_pdf",
    "mean_ci",
    "monte_carlo_kernels",
    "ntk_velocity_samples",
    "plot_weight_spectra",
    "probe_forward",
    "probe_model",
    "random_directions",
    "record",
    "resolve_layers",
    "spectral_density",
    "weight_spectra",
]
