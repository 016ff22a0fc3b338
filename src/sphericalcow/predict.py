"""Closed-form predictions of infinitely wide networks: ``gp_inference``, ``gradient_descent_mse``, ``NTKPredictor``.

A thin public namespace; the implementation and the formulas (with their sources) are in
:mod:`sphericalcow.theory.predictions`.
"""

from .theory.predictions import (
    GPPosterior,
    GradientDescentPrediction,
    NTKPredictor,
    gp_inference,
    gradient_descent_mse,
)

__all__ = [
    "GPPosterior",
    "GradientDescentPrediction",
    "NTKPredictor",
    "gp_inference",
    "gradient_descent_mse",
]
