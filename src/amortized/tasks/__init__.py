"""Task families: distributions over tasks that sample batches of train/query splits."""

from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.tasks.causal import OrderMetrics, RandomSCM
from amortized.tasks.classification import LinearClassification, NonlinearClassification
from amortized.tasks.datasets import (
    MNIST,
    MNIST1D,
    Digits,
    FashionMNIST,
    FeaturesFile,
    LabelledDataset,
    NPZDataset,
    read_idx,
)
from amortized.tasks.generative import Alphabet, GaussianMixture, SampleMetrics
from amortized.tasks.mixture import MixtureClassification, MixtureRegression
from amortized.tasks.regression import (
    GaussianProcess,
    LinearRegression,
    NonlinearRegression,
    Sinusoid,
)

__all__ = [
    "MNIST",
    "MNIST1D",
    "Alphabet",
    "Digits",
    "FashionMNIST",
    "FeaturesFile",
    "GaussianMixture",
    "GaussianProcess",
    "LabelledDataset",
    "LinearClassification",
    "LinearRegression",
    "MixtureClassification",
    "MixtureRegression",
    "NPZDataset",
    "NonlinearClassification",
    "NonlinearRegression",
    "OrderMetrics",
    "RandomSCM",
    "SampleMetrics",
    "Sinusoid",
    "TaskBatch",
    "TaskFamily",
    "read_idx",
]
