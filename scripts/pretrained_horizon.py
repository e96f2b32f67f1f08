"""Excess error of the bundled (or given) checkpoints on held-out prior tasks after 1 to 256 steps.

Shows whether a pretrained learner keeps improving past the 32 steps it was trained on. Usage::

    python scripts/pretrained_horizon.py                      # the bundled checkpoints
    python scripts/pretrained_horizon.py OLD_DIR NEW_DIR      # folders holding classifier.pt, regressor.pt

128 tasks of each mixture prior (seed 12345), mini-batches of 64 rows, one torch thread.
"""

import sys
from pathlib import Path

import torch

import amortized
from amortized.estimators import pretrained_path
from amortized.tasks.mixture import MixtureClassification, MixtureRegression
from amortized.training import evaluate_tasks

STEPS = (1, 8, 32, 64, 128, 256)
PRIORS = {
    "classifier": (MixtureClassification(max_dim=32, max_classes=10), "excess_error"),
    "regressor": (MixtureRegression(max_dim=32), "excess_mse"),
}


def main(folders: list[str]) -> None:
    """Print each checkpoint's metric after every number of steps in ``STEPS``."""
    torch.set_num_threads(1)
    print("checkpoint", *(f"k={k}" for k in STEPS))
    for name, (prior, metric) in PRIORS.items():
        tasks = prior.sample(128, 64 * max(STEPS), 256, torch.Generator().manual_seed(12345))
        task = "classification" if name == "classifier" else "regression"
        paths = [Path(folder) / f"{name}.pt" for folder in folders] or [pretrained_path(task)]
        for path in paths:
            learner = amortized.load(path)
            scores = [evaluate_tasks(learner, tasks, batch_size=64, num_steps=k, seed=0) for k in STEPS]
            values = [score[metric] for score in scores]
            print(path, *(f"{value:.4f}" for value in values), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
