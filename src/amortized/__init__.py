"""amortized: learners that adapt to a new task from its data, meta-trained across many tasks."""

from amortized.checkpoints import load, save
from amortized.learners.base import Learner, adapt
from amortized.learners.state import State
from amortized.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "AmortizedClassifier",
    "AmortizedRegressor",
    "Learner",
    "State",
    "TrainConfig",
    "TrainResult",
    "adapt",
    "load",
    "save",
    "train",
]

_ESTIMATORS = ("AmortizedClassifier", "AmortizedRegressor")


def __getattr__(name: str) -> object:
    """The scikit-learn estimators, imported on first use so ``import amortized`` does not load sklearn."""
    if name in _ESTIMATORS:
        from amortized import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'amortized' has no attribute {name!r}")
