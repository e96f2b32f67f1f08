"""Meta-train a learned update rule from Python, then adapt it to new tasks, one mini-batch at a time.

Runs in well under a minute on 2 CPU cores: ``python examples/train_and_adapt.py [CHECKPOINT]``
saves the trained learner to ``CHECKPOINT`` if given (else to a temporary folder, removed at the end).
"""

import sys
import tempfile
from pathlib import Path

import torch

import amortized
from amortized.learners import SGD, BayesLinearRegression, LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearRegression

torch.set_num_threads(1)  # small models run fastest on one thread
family = LinearRegression(dim=4, noise=0.5)

# A transformer reads θ, the loss gradient and the mini-batch, and outputs Δθ for a linear model.
learner = LearnedUpdate(Linear(4), rule={"width": 32, "depth": 1, "heads": 2})
result = amortized.train(
    learner,
    family,
    iterations=300,
    tasks_per_batch=16,
    batch_size=16,
    num_steps=(1, 8),
    num_train=128,
    lr=2e-3,
    warmup=30,
    eval_every=0,
)
print(f"meta-trained for {result.iterations} iterations in {result.train_seconds:.0f} s")

# New tasks the learner has never seen; every learner reads the same mini-batch sequence.
tasks = family.sample(num_tasks=200, num_train=128, num_query=64, generator=torch.Generator().manual_seed(1))
others = {"SGD (lr 0.1)": SGD(Linear(4), lr=0.1), "Bayes posterior": BayesLinearRegression(4, noise=0.5)}
print(f"\n{'k':>4} {'points':>7} {'LearnedUpdate':>14} " + " ".join(f"{name:>16}" for name in others))
for k in (1, 2, 4, 8, 16, 32):
    row = []
    for model in (learner, *others.values()):
        state = amortized.adapt(
            model,
            tasks.x_train,
            tasks.y_train,
            batch_size=16,
            num_steps=k,
            generator=torch.Generator().manual_seed(2),
        )
        prediction = model.predict(state, tasks.x_query)
        row.append((prediction - tasks.y_query).square().mean().item())
    print(f"{k:>4} {16 * k:>7} {row[0]:>14.3f} " + " ".join(f"{v:>16.3f}" for v in row[1:]))
print("\nquery MSE (the noise alone gives 0.25); k > 8 re-reads the 128 points (more than one pass)")

# A trained learner is saved and loaded like any checkpoint.
with tempfile.TemporaryDirectory() as folder:
    path = amortized.save(learner, sys.argv[1] if len(sys.argv) > 1 else Path(folder) / "learned-update.pt")
    print(f"saved to {path}; amortized.load(path) rebuilds it: a {type(amortized.load(path)).__name__}")
