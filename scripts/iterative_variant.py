"""Train one LearnedUpdate variant on linear regression and print its excess error ÷ Bayes per k.

The exploration behind ``benchmarks/iterative.py``: the same family, training options and held-out
tasks, one variant at a time. Usage (keyword arguments of ``LearnedUpdate`` as JSON, plus
``iterations``, ``train`` overrides and the ``seed`` of both the learner and its training)::

    python scripts/iterative_variant.py '{"refinements": 8, "scale_by_share": true, "momentum": true,
        "taper_refinements": true, "iterations": 1700, "train": {"num_steps": [1, 64]}}'
"""

import json
import sys
import time

import torch

import amortized
from amortized.learners import BayesLinearRegression, LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearRegression
from amortized.training import evaluate_tasks

STEPS = [1, 2, 4, 8, 16, 32, 64]


def main(options: dict) -> dict:
    """Meta-train the variant, then its excess error and the ratio to Bayes at every k."""
    torch.set_num_threads(1)
    iterations = options.pop("iterations", 600)
    seed = options.pop("seed", 0)
    settings = {
        "num_steps": (1, 32),
        "num_train": 512,
        "loss_scale": "log",
        "tasks_per_batch": 16,
        "batch_size": 32,
        "lr": 1e-3,
        "warmup": 100,
        "eval_every": 0,
        **options.pop("train", {}),
    }
    family = LinearRegression(8, noise=0.5)
    learner = LearnedUpdate(Linear(8), seed=seed, rule={"width": 64, "depth": 2, "heads": 4, **options})
    began = time.process_time()
    amortized.train(learner, family, iterations=iterations, seed=seed, **settings)
    cpu = time.process_time() - began
    tasks = family.sample(256, 512, 128, torch.Generator().manual_seed(2024))
    bayes = BayesLinearRegression(8, family.noise, family.weight_std, family.bias)
    ratios = {}
    for k in STEPS:
        mine = evaluate_tasks(learner, tasks, batch_size=32, num_steps=k, seed=1)["excess_mse"]
        best = evaluate_tasks(bayes, tasks, batch_size=32, num_steps=k, seed=1)["excess_mse"]
        ratios[k] = round(mine / best, 3)
    return {"train_cpu_seconds": round(cpu), "excess_ratio_to_bayes": ratios}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
