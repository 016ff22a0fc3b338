"""Measurements on real PyTorch networks: forward probes over seeds and confidence intervals."""

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
    "Estimate",
    "ForwardProbe",
    "ModelProbe",
    "bootstrap_ci",
    "bootstrap_means_ci",
    "mean_ci",
    "probe_forward",
    "probe_model",
    "record",
    "resolve_layers",
]
