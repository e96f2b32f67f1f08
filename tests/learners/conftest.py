import pytest
import torch

from amortized.tasks import LinearRegression
from amortized.training import evaluate_tasks

TINY = {"width": 32, "depth": 1, "heads": 2}


@pytest.fixture(scope="session")
def tiny_family():
    return LinearRegression(dim=2, noise=0.1)


@pytest.fixture(scope="session")
def held_out(tiny_family):
    return tiny_family.sample(64, 32, 32, torch.Generator().manual_seed(99))


def query_mse(learner, tasks, num_steps, batch_size=8):
    return evaluate_tasks(learner, tasks, batch_size=batch_size, num_steps=num_steps, seed=1)["mse"]
