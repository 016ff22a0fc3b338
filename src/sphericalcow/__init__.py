"""sphericalcow: first-principles theory of neural networks next to PyTorch measurements.

>>> import sphericalcow as sc
>>> arch = sc.MLP(d_in=10, width=512, depth=5, activation="tanh")   # cw=None: critical C_W
>>> model = arch.build(seed=0)                                       # a torch.nn.Module
>>> sc.criticality("tanh", cw=1.0, cb=0.0).phase
'critical'
"""

__version__ = "0.1.0"

from . import data, predict, sweep  # sweep: the package is callable, sc.sweep(spec, ...)
from .activations import Activation, activation, available_activations, register_activation
from .advise import Advice, advise
from .description import MLP
from .doctor import DoctorReport, doctor, doctor_fix
from .errors import SphericalCowError
from .measure import (
    HessianOperator,
    empirical_nngp,
    empirical_ntk,
    hessian,
    hutchpp,
    interpolate,
    lanczos,
    loss_landscape,
    loss_slice_1d,
    loss_slice_2d,
    monte_carlo_kernels,
    plot_weight_spectra,
    probe_forward,
    record,
    spectral_density,
    weight_spectra,
)
from .results import load_results
from .studies import run_study
from .theory import (
    critical_init,
    critical_point,
    criticality,
    finite_width,
    kernel_profile,
    kernels,
    learning_rates,
    nngp,
    ntk,
    ntk_velocity,
    phase_diagram,
    plot_phase_diagram,
    universality,
)

__all__ = [
    "MLP",
    "Activation",
    "Advice",
    "DoctorReport",
    "HessianOperator",
    "SphericalCowError",
    "__version__",
    "activation",
    "advise",
    "available_activations",
    "critical_init",
    "critical_point",
    "criticality",
    "data",
    "doctor",
    "doctor_fix",
    "empirical_nngp",
    "empirical_ntk",
    "finite_width",
    "hessian",
    "hutchpp",
    "interpolate",
    "kernel_profile",
    "kernels",
    "lanczos",
    "learning_rates",
    "load_results",
    "loss_landscape",
    "loss_slice_1d",
    "loss_slice_2d",
    "monte_carlo_kernels",
    "nngp",
    "ntk",
    "ntk_velocity",
    "phase_diagram",
    "plot_phase_diagram",
    "plot_weight_spectra",
    "predict",
    "probe_forward",
    "record",
    "register_activation",
    "run_study",
    "spectral_density",
    "sweep",
    "universality",
    "weight_spectra",
]
