"""Learners of every regime and the baselines, all behind ``init_state`` / ``step`` / ``predict``."""

from amortized.learners.base import Learner, adapt, minibatches
from amortized.learners.baselines import SGD, Adam, BayesLinearRegression, tune_learning_rate
from amortized.learners.explicit import LatentDecoder, LatentSGD, LatentUpdate
from amortized.learners.generative import (
    EmpiricalSamples,
    FlowMatching,
    GaussianMixtureFit,
    OrderScores,
    RandomOrder,
    VarianceOrder,
)
from amortized.learners.implicit import InContext
from amortized.learners.parametric import LearnedInit, LearnedUpdate
from amortized.learners.state import State

__all__ = [
    "SGD",
    "Adam",
    "BayesLinearRegression",
    "EmpiricalSamples",
    "FlowMatching",
    "GaussianMixtureFit",
    "InContext",
    "LatentDecoder",
    "LatentSGD",
    "LatentUpdate",
    "LearnedInit",
    "LearnedUpdate",
    "Learner",
    "OrderScores",
    "RandomOrder",
    "State",
    "VarianceOrder",
    "adapt",
    "minibatches",
    "tune_learning_rate",
]
