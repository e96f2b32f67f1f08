"""Task families: distributions over tasks that sample batches of train/query splits."""

from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.tasks.classification import LinearClassification, NonlinearClassification
from amortized.tasks.regression import (
    GaussianProcess,
    LinearRegression,
    NonlinearRegression,
    Sinusoid,
)

__all__ = [
    "GaussianProcess",
    "LinearClassification",
    "LinearRegression",
    "NonlinearClassification",
    "NonlinearRegression",
    "Sinusoid",
    "TaskBatch",
    "TaskFamily",
]
