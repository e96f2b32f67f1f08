"""Iterative learners that keep improving with more data (issue 10): the targets, checked.

The refined, share-scaled learned update (``LearnedUpdate(rule={"refinements": R, "scale_by_share": True})``,
observations and gradients, width 64, depth 2; per family further options, training horizons and
iterations in :data:`SETTINGS`) is meta-trained once per family within a CPU budget, then adapts to
the quality benchmark's held-out tasks (512 training points, B=32; k > 16 re-reads the data in a new
order). It is compared with what each target names: the Bayes posterior mean and per-task SGD with
its rate tuned per k (linear regression), scikit-learn's logistic regression with the prior-matched
C (classification) and its own curve (monotonicity, all three families).

Run: ``python -m benchmarks iterative`` (one family per core, about 15 min of CPU per family) or
``python -m benchmarks iterative --quick`` for a smoke run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import torch

import amortized
from amortized.learners import SGD, BayesLinearRegression, LearnedUpdate
from amortized.models import Linear
from amortized.tasks import LinearClassification, LinearRegression, TaskFamily
from benchmarks.quality import (
    BATCH,
    FAMILIES,
    ITERATIVE,
    NUM_QUERY,
    NUM_TRAIN,
    STEPS,
    _curve,
    _logistic_regression,
    _tuned_curves,
    family_metric,
)

SETTINGS: dict[str, dict[str, Any]] = {
    "linear-regression": {
        "options": {"refinements": 8, "momentum": True, "taper_refinements": True},
        "train": {"num_steps": (1, 64)},
        "iterations": 1700,
    },
    "linear-classification": {"options": {"refinements": 6}, "train": {}, "iterations": 1000},
    "nonlinear-regression": {"options": {"refinements": 3}, "train": {}, "iterations": 800},
}
"""Per family: ``LearnedUpdate`` options besides ``scale_by_share``, training overrides and the
meta-training iterations, each within ~15 min of CPU (tapered refinements make an iteration cheaper)."""
LEARNER = "LearnedUpdate[refined, share-scaled]"
BAYES_RATIO_TARGET = 1.5


def run_family(
    name: str, family: TaskFamily, model: Callable[[], Any], settings: dict[str, Any], num_tasks: int
) -> dict:
    """Train the learner with ``settings`` (:data:`SETTINGS`); its curve and the targets' references."""
    task = "classification" if family.is_classification else "regression"
    tasks = family.sample(num_tasks, NUM_TRAIN, NUM_QUERY, torch.Generator().manual_seed(2024))
    options = settings["options"]
    learner = LearnedUpdate(
        model(), task=task, rule={"width": 64, "depth": 2, "heads": 4, "scale_by_share": True, **options}
    )
    training = {"tasks_per_batch": 16, "batch_size": BATCH, "lr": 1e-3, "warmup": 100, "eval_every": 0}
    training.update(ITERATIVE, **settings["train"])
    iterations = settings["iterations"]
    cpu, wall = time.process_time(), time.perf_counter()
    amortized.train(learner, family, iterations=iterations, seed=0, **training)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    curve = _curve(learner, tasks, BATCH)
    print(
        f"{name}: {cpu:.0f} s CPU",
        {k: round(v[family_metric(family)], 4) for k, v in curve.items()},
        flush=True,
    )
    result: dict[str, Any] = {
        "family": repr(family),
        "metric": family_metric(family),
        "learner": {
            "options": options,
            "num_steps": list(training["num_steps"]),
            "train_cpu_seconds": round(cpu),
            "train_wall_seconds": round(wall),
            "iterations": iterations,
        },
        "curve": curve,
    }
    init = "zeros" if isinstance(model(), Linear) else "random"
    result["sgd"] = _tuned_curves(family, lambda lr: SGD(model(), lr, task=task, init=init), tasks)
    if isinstance(family, LinearRegression):
        bayes = BayesLinearRegression(family.input_dim, family.noise, family.weight_std, family.bias)
        result["bayes"] = _curve(bayes, tasks, BATCH)
    if isinstance(family, LinearClassification):
        result["logistic_regression_error"] = _logistic_regression(tasks, family.temperature)
        result["bayes_error"] = 1 - torch.softmax(tasks.f_query, -1).amax(-1).mean().item()
    return result


def _run_one(args: tuple[str, bool]) -> tuple[str, dict]:
    name, quick = args
    torch.set_num_threads(1)
    make_family, model, _ = FAMILIES[name]
    settings = SETTINGS[name]
    if quick:
        settings = {**settings, "iterations": 20}
    return name, run_family(name, make_family(), model, settings, 16 if quick else 256)


def main(out_dir, quick: bool = False, workers: int = 2) -> dict:
    """Run the three families, one per worker process (one torch thread each)."""
    jobs = [(name, quick) for name in FAMILIES]
    if quick or workers == 1:
        results = dict(map(_run_one, jobs))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = dict(pool.map(_run_one, jobs, chunksize=1))
    return {name: results[name] for name in FAMILIES}


def _values(curve: dict, metric: str) -> list[float]:
    return [{int(k): v for k, v in curve.items()}[k][metric] for k in STEPS]


def _never_increasing(values: list[float]) -> str:
    worst = max(later / earlier for earlier, later in itertools.pairwise(values))
    return f"{'met' if worst <= 1.0 else 'not met'} (largest step-to-step ratio {worst:.3f})"


def report(result: dict) -> str:
    """The curves and, for each target of issue 10, whether it is met."""
    lines = [f"Learner: `{LEARNER}`, width 64, depth 2, observations and gradients, share-scaled steps."]
    header = "| | " + " | ".join(f"k={k}" for k in STEPS) + " |"
    rule = "|" + " --- |" * (len(STEPS) + 1)
    for name, family in result.items():
        metric = family["metric"]
        mine, sgd = _values(family["curve"], metric), _values(family["sgd"], metric)
        budget = family["learner"]
        lines += [
            "",
            f"#### {name}: `{family['family']}`",
            f"Meta-training: {budget['iterations']} iterations (options {budget.get('options', '?')}, "
            f"horizons {budget.get('num_steps', '?')} steps), {budget['train_cpu_seconds']} s of CPU "
            f"({budget['train_wall_seconds']} s wall). Metric: `{metric}`.",
            "",
            header,
            rule,
            f"| {LEARNER} | " + " | ".join(f"{v:.4f}" for v in mine) + " |",
            "| SGD, rate tuned per k | " + " | ".join(f"{v:.4f}" for v in sgd) + " |",
        ]
        targets = [f"- never increasing with k: {_never_increasing(mine)}"]
        below_sgd = all(a < b for a, b in zip(mine, sgd, strict=True))
        targets.append(f"- below tuned SGD at every k: {'met' if below_sgd else 'not met'}")
        if "bayes" in family:
            bayes = _values(family["bayes"], metric)
            ratios = [a / b for a, b in zip(mine, bayes, strict=True)]
            lines.append("| Bayes posterior mean | " + " | ".join(f"{v:.4f}" for v in bayes) + " |")
            lines.append("| ÷ Bayes | " + " | ".join(f"{v:.2f}" for v in ratios) + " |")
            met = [k for k, r in zip(STEPS, ratios, strict=True) if r <= BAYES_RATIO_TARGET]
            targets.insert(
                0, f"- ≤ {BAYES_RATIO_TARGET}× Bayes at every k: met at k = {met or 'none'} of {STEPS}"
            )
        if "logistic_regression_error" in family:
            at_32 = {int(k): v for k, v in family["curve"].items()}[32][metric]
            reference = family["logistic_regression_error"]
            lines.append(
                f"\nLogistic regression (prior-matched C, all 512 points): {reference:.4f}; "
                f"Bayes error (true parameters): {family['bayes_error']:.4f}."
            )
            gap = at_32 - reference
            targets.insert(0, f"- error at k=32 within 1 point of logistic regression: gap {gap:+.4f}")
            rise = mine[STEPS.index(64)] - mine[STEPS.index(16)]
            targets.insert(1, f"- no increase from k=16 to k=64: change {rise:+.4f}")
        lines += ["", "Targets:", *targets]
    return "\n".join(lines)
