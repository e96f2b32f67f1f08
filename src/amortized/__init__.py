"""amortized: learners that adapt to a new task from its data, meta-trained across many tasks."""

from amortized.checkpoints import load, save
from amortized.learners.base import Learner, adapt
from amortized.learners.state import State
from amortized.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = ["Learner", "State", "TrainConfig", "TrainResult", "adapt", "load", "save", "train"]
