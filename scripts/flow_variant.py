"""Train one FlowMatching variant on Gaussian mixtures and print its energy distance per k.

The exploration behind the generative learner's design: the ``gmm`` preset's family, learner widths
and objective, horizons of 1 to 64 steps of 32 samples over 512 per task, the energy distance to
held-out samples on 64 tasks after k steps (one-shot: one step on the same k·32 samples). Usage
(options as JSON: ``iterations``, ``one_shot``, ``family`` ``"gmm"`` or ``"alphabet"``, ``seed``
(the learner's initialisation and the training draws), ``kwargs`` of ``FlowMatching`` and ``train``
overrides)::

    python scripts/flow_variant.py '{"iterations": 600}'
    python scripts/flow_variant.py '{"iterations": 600, "one_shot": true}'
"""

import json
import sys
import time

import torch

import amortized
from amortized.learners import FlowMatching
from amortized.tasks import Alphabet, GaussianMixture, TaskBatch
from amortized.training import evaluate_tasks

STEPS = [1, 4, 16, 64]
WIDTHS = {"width": 64, "depth": 2, "heads": 4, "memory_tokens": 16, "integration_steps": 8}


def main(options: dict) -> dict:
    """Meta-train the variant, then its energy distance after k steps."""
    torch.set_num_threads(1)
    family = {"gmm": GaussianMixture(), "alphabet": Alphabet()}[options.get("family", "gmm")]
    one_shot = options.get("one_shot", False)
    seed = options.get("seed", 0)
    learner = FlowMatching(2, **{**WIDTHS, "seed": seed, **options.get("kwargs", {})})
    training = {
        "tasks_per_batch": 16,
        "batch_size": (32, 512) if one_shot else 32,
        "num_steps": 1 if one_shot else (1, 64),
        "objective": "final",
        "num_train": 512,
        "num_query": 128,
        "lr": 1e-3,
        "warmup": 100,
        "eval_every": 0,
        **options.get("train", {}),
    }
    began = time.process_time()
    amortized.train(learner, family, iterations=options.get("iterations", 600), seed=seed, **training)
    cpu = time.process_time() - began
    tasks = family.sample(64, 512, 256, torch.Generator().manual_seed(2024))
    energy = {}
    for k in STEPS:
        if one_shot:
            n = min(512, 32 * k)
            first = TaskBatch(
                tasks.x_train[:, :n], tasks.y_train[:, :n], tasks.x_query, tasks.y_query, tasks.f_query
            )
            energy[k] = evaluate_tasks(learner, first, batch_size=n, num_steps=1, seed=1)["energy"]
        else:
            energy[k] = evaluate_tasks(learner, tasks, batch_size=32, num_steps=k, seed=1)["energy"]
    return {"train_cpu_seconds": round(cpu), "energy": {k: round(v, 4) for k, v in energy.items()}}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
