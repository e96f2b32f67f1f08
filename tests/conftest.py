import pytest
import torch

FAST = [
    "train.iterations=6",
    "train.checkpoint_every=3",
    "evaluation.steps=[1, 4]",
    "evaluation.sizes=[8, 16]",
    "evaluation.num_tasks=8",
    "evaluation.tune_tasks=4",
    "evaluation.cost_sizes=[8, 16]",
]
"""Preset overrides that run an experiment end to end in seconds (CLI and experiment tests)."""
SILENT = {"log": lambda message: None}
"""Keyword arguments that keep experiment runs quiet."""


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread, restored afterwards (the CLI and benchmark runner set it too).

    Tiny models run faster on one thread, and the learned-margin tests were measured so.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_job(monkeypatch):
    """The CLI trains and evaluates in one process unless a test asks for more (--jobs)."""
    monkeypatch.setenv("AMORTIZED_JOBS", "1")
