"""Learners of every regime and the baselines, all behind ``init_state`` / ``step`` / ``predict``."""

from amortized.learners.base import Learner, adapt, adaptation, minibatches
from amortized.learners.baselines import SGD, Adam, BayesLinearRegression, tune_learning_rate
from amortized.learners.causal import OrderScores, RandomOrder, VarianceOrder
from amortized.learners.composed import ComposedLearner
from amortized.learners.explicit import LatentSGD, LatentUpdate
from amortized.learners.generative import EmpiricalSamples, FlowMatching, GaussianMixtureFit
from amortized.learners.implicit import InContext
from amortized.learners.parametric import LearnedInit, LearnedUpdate
from amortized.learners.representations import Latent, LatentDecoder, ModelParameters
from amortized.learners.rules import GradientStep, TransformerUpdate
from amortized.learners.state import State

__all__ = [
    "SGD",
    "Adam",
    "BayesLinearRegression",
    "ComposedLearner",
    "EmpiricalSamples",
    "FlowMatching",
    "GaussianMixtureFit",
    "GradientStep",
    "InContext",
    "Latent",
    "LatentDecoder",
    "LatentSGD",
    "LatentUpdate",
    "LearnedInit",
    "LearnedUpdate",
    "Learner",
    "ModelParameters",
    "OrderScores",
    "RandomOrder",
    "State",
    "TransformerUpdate",
    "VarianceOrder",
    "adapt",
    "adaptation",
    "minibatches",
    "tune_learning_rate",
]
