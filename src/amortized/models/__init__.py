"""Fixed predictors as functions of a flat parameter vector, likelihoods and metrics."""

from amortized.models.likelihoods import (
    Categorical,
    Gaussian,
    cross_entropy,
    error_rate,
    gaussian_nll,
    likelihood,
    mse,
)
from amortized.models.predictors import MLP, Linear, Predictor, predictor_from_config

__all__ = [
    "MLP",
    "Categorical",
    "Gaussian",
    "Linear",
    "Predictor",
    "cross_entropy",
    "error_rate",
    "gaussian_nll",
    "likelihood",
    "mse",
    "predictor_from_config",
]
