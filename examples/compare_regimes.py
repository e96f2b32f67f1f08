"""Compare the three regimes, one-shot and iterative, on one task family with the evaluation protocol.

Parametric (``LearnedUpdate``: a learned update of a linear model's θ), explicit (``LatentUpdate``: a
latent read by a learned decoder) and implicit (``InContext``: predictions refined directly) learners
are briefly meta-trained, then scored on the same tasks and mini-batches as ``amortized run`` does.
Runs in about a minute on 2 CPU cores: ``python examples/compare_regimes.py``.
"""

import torch

import amortized
from amortized.evaluation import step_curve
from amortized.learners import BayesLinearRegression, InContext, LatentUpdate, LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearRegression

torch.set_num_threads(1)  # small models run fastest on one thread
family = LinearRegression(dim=2, noise=0.3)
small = {"width": 32, "depth": 1, "heads": 2}
learners = {
    "parametric, iterative": (LearnedUpdate(Linear(2), rule=small), False),
    "explicit, iterative": (LatentUpdate(2, latent_dim=8, decoder_hidden=(32,), rule=small), False),
    "implicit, one-shot": (InContext(2, rule=small), True),
}
for name, (learner, one_shot) in learners.items():
    steps = 1 if one_shot else (1, 8)
    batch = 64 if one_shot else 8
    result = amortized.train(
        learner,
        family,
        iterations=150,
        tasks_per_batch=16,
        batch_size=batch,
        num_steps=steps,
        num_train=64,
        num_query=32,
        lr=3e-3,
        warmup=20,
        eval_every=0,
    )
    print(f"{name}: meta-trained in {result.train_seconds:.0f} s")

tasks = family.sample(128, 64, 64, torch.Generator().manual_seed(7))
steps = [1, 2, 4, 8, 16]
curves = {
    name: step_curve(learner, tasks, steps=steps, batch_size=8, seed=3, one_shot=one_shot)
    for name, (learner, one_shot) in learners.items()
}
curves["Bayes posterior"] = step_curve(
    BayesLinearRegression(2, 0.3), tasks, steps=steps, batch_size=8, seed=3, one_shot=True
)

print(f"\nquery MSE ± standard error over {tasks.num_tasks} tasks, mini-batches of 8")
print("(a one-shot learner reads the points of the first k mini-batches in one step)")
print(f"{'learner':<24}" + "".join(f"{'k=' + str(k):>16}" for k in steps))
for name, points in curves.items():
    print(f"{name:<24}" + "".join(f"{p['mse']:>9.3f} ± {p['mse_stderr']:.3f}" for p in points))
