"""amortized: learners that adapt to a new task from its data, meta-trained across many tasks.

The public names are imported on first use, so ``import amortized`` (and the command line's
``--help`` and usage errors) do not wait for torch or scikit-learn to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amortized.checkpoints import load, save
    from amortized.estimators import AmortizedClassifier, AmortizedRegressor
    from amortized.learners.base import Learner, adapt, adaptation
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
    "adaptation",
    "load",
    "save",
    "train",
]

_HOMES = {
    "AmortizedClassifier": "amortized.estimators",
    "AmortizedRegressor": "amortized.estimators",
    "Learner": "amortized.learners.base",
    "State": "amortized.learners.state",
    "TrainConfig": "amortized.training",
    "TrainResult": "amortized.training",
    "adapt": "amortized.learners.base",
    "adaptation": "amortized.learners.base",
    "load": "amortized.checkpoints",
    "save": "amortized.checkpoints",
    "train": "amortized.training",
}
"""The module each public name comes from."""


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use and kept for the next."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'amortized' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
