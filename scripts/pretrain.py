"""Meta-train the checkpoints bundled in ``amortized/pretrained`` (what ``AmortizedClassifier()`` uses).

``python scripts/pretrain.py`` rebuilds both; ``--only classifier`` one of them; ``--out DIR`` writes
elsewhere (to compare with the bundled ones before replacing them). Training checkpoints go to
``<out>/<name>-<model>[-tables]-training/`` until the checkpoint is written, so a stopped run
continues where it stopped. Seeds are fixed: the learner's initialisation, the tasks and the
mini-batch order come from ``SEED``. Float reductions may differ across machines and thread counts,
so a rerun matches the bundled weights closely, not bit for bit.

Each checkpoint ``<name>.pt`` gets a card ``<name>.json``: the learner's description, the task prior
(class and arguments), the training settings, the CPU and wall time it took, and an evaluation on
held-out prior tasks and on small scikit-learn data sets through the estimator.

The learner is a ``LearnedUpdate`` that reads the loss gradient (a learned optimizer) for an
``MLP`` on 32 inputs with one hidden layer of 32 ReLUs, so it fits nonlinear functions, with the
library's default rule (share-scaled steps, tapered refinements with momentum) plus its gradient
base (a plain gradient step at a learned rate under each learned step), trained on 1 to 32
steps of 64 over 1024 points per task, so it keeps improving when ``fit`` re-reads a small data set.
Its state is the model's ``θ``, so ``predict`` needs only ``θ``; its step costs the same for any
mini-batch size (no token per data point), so large batches are cheap. ``--model linear``
meta-trains the earlier ``Linear`` learner instead, and ``--tables`` turns on the prior's real-table
options (:data:`TABLES`: irrelevant, skewed, heavy-tailed, discretised and missing features); both
are there to compare with ``--out DIR``. Meta-trained with ``--tables``, the learners did worse on
the real data sets of ``python -m benchmarks real_data`` (regression mean rank 3.33 against 3.00),
so the bundled ones were meta-trained without. Training runs on one torch
thread (threads that compete for 2 shared cores slow torch down many times over); the card records
the CPU time it took.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.model_selection import train_test_split

import amortized
from amortized.estimators import AmortizedClassifier, AmortizedRegressor
from amortized.learners import LearnedUpdate
from amortized.models import MLP, Linear, Predictor
from amortized.tasks.mixture import MixtureClassification, MixtureRegression
from amortized.training import TrainConfig, evaluate_tasks

SEED = 0
WIDTH = 32
MAX_CLASSES = 10
OUT = Path(__file__).resolve().parents[1] / "src" / "amortized" / "pretrained"
UPDATE = {
    "inputs": ("gradients",),
    "width": 64,
    "depth": 2,
    "heads": 4,
    "chunk_size": 32,
    "gradient_base": True,
}
"""The learned optimizer's rule: a gradient step at a learned rate as each step's base (with it, the
real data sets' mean ranks went from 2.53 to 2.30, classification, and 3.00 to 2.67, regression); its
other options are the library's defaults (the recipe: 8 tapered refinements with momentum, steps
scaled by the batch's share)."""
HIDDEN = (32,)
THREADS = 1
TABLES = {"irrelevant": 0.5, "transformed": 0.5, "missing": 0.3}
"""With ``--tables``, how like real tables the prior's tasks are (:mod:`amortized.tasks.mixture`): up to
half the features ignored by the target, up to half skewed, heavy-tailed or discretised, up to 30%
missing, and (classifier) class frequencies further apart."""
TRAINING = {
    "tasks_per_batch": 16,
    "batch_size": 64,
    "num_steps": (1, 32),
    "num_train": 1024,
    "num_query": 64,
    "loss_scale": "log",
    "lr": 1e-3,
    "warmup": 20,
    "eval_every": 500,
    "eval_tasks": 64,
    "seed": SEED,
}
SPECS: dict[str, dict[str, Any]] = {
    "classifier": {
        "prior": (MixtureClassification, {"max_dim": WIDTH, "max_classes": MAX_CLASSES}),
        "tables": {"imbalance": 1.0},
        "outputs": MAX_CLASSES,
        "task": "classification",
        "iterations": 4000,
    },
    "regressor": {
        "prior": (MixtureRegression, {"max_dim": WIDTH}),
        "tables": {},
        "outputs": 1,
        "task": "regression",
        "iterations": 4000,
    },
}
MODELS = ("mlp", "linear")


def model_and_prior(name: str, kind: str, tables: bool) -> tuple[Predictor, type, dict[str, Any]]:
    """The predictor whose ``θ`` the learner adapts, and the prior's class and arguments."""
    spec = SPECS[name]
    prior_class, prior_args = spec["prior"]
    model = Linear(WIDTH, spec["outputs"]) if kind == "linear" else MLP(WIDTH, spec["outputs"], hidden=HIDDEN)
    return model, prior_class, ({**prior_args, **TABLES, **spec["tables"]} if tables else prior_args)


def evaluate_on_datasets(name: str, path: Path) -> dict[str, float]:
    """Held-out accuracy (classifier) or R² (regressor) through the estimator, on a fixed 70/30 split."""
    if name == "classifier":
        loaders, make = (load_iris, load_wine, load_breast_cancer), AmortizedClassifier
    else:
        loaders, make = (load_diabetes,), AmortizedRegressor
    scores = {}
    for load in loaders:
        X, y = load(return_X_y=True)
        stratify = y if name == "classifier" else None
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, random_state=SEED, stratify=stratify
        )
        model = make(str(path), random_state=SEED).fit(X_train, y_train)
        scores[load.__name__.removeprefix("load_")] = round(float(model.score(X_test, y_test)), 4)
    return scores


def pretrain(
    name: str, out: Path, iterations: int | None, kind: str = "mlp", tables: bool = False
) -> dict[str, Any]:
    """Meta-train one bundled learner, save it and its card, and return the card."""
    spec = SPECS[name]
    model, prior_class, prior_args = model_and_prior(name, kind, tables)
    family = prior_class(**prior_args)
    learner = LearnedUpdate(model, task=spec["task"], seed=SEED, rule=UPDATE)
    config = TrainConfig.from_dict({**TRAINING, "iterations": iterations or spec["iterations"]})
    print(f"{name}: meta-training {learner.describe()} on {family!r} for {config.iterations} iterations")
    torch.manual_seed(SEED)
    # checkpoints: a stopped run continues where it stopped (of the same model and prior only)
    training = out / f"{name}-{kind}{'-tables' if tables else ''}-training"
    result = amortized.train(learner, family, config, out_dir=training, resume=True, progress=name)
    cpu, wall = result.train_cpu_seconds, result.train_seconds
    path = amortized.save(learner, out / f"{name}.pt")
    shutil.rmtree(training)
    held_out = family.sample(256, 32 * 64, 256, torch.Generator().manual_seed(SEED + 12345))
    prior_metrics = {
        f"{steps} steps": {
            key: round(value, 4)
            for key, value in evaluate_tasks(
                learner, held_out, batch_size=64, num_steps=steps, seed=SEED
            ).items()
        }
        for steps in (1, 8, 32)
    }
    card = {
        "learner": learner.describe(),
        "prior": {"class": prior_class.__name__, "args": prior_args, "repr": repr(family)},
        "train_config": asdict(config),
        "train_cpu_seconds": round(cpu, 1),
        "train_wall_seconds": round(wall, 1),
        "final_loss": round(float(np.mean([h["loss"] for h in result.history[-20:]])), 4),
        "evaluation": {
            "held_out_prior_tasks (256 tasks, mini-batches of 64)": prior_metrics,
            "datasets (70/30 split, seed 0; accuracy or R²)": evaluate_on_datasets(name, path),
        },
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{name}: {cpu:.0f} s CPU, {wall:.0f} s wall; wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(json.dumps(card["evaluation"], indent=2))
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SPECS), help="rebuild one checkpoint")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--iterations", type=int, help="override the iterations (quick trials)")
    parser.add_argument("--model", choices=MODELS, default="mlp", help="the predictor (default mlp)")
    parser.add_argument("--tables", action="store_true", help="the prior's real-table options on")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only else list(SPECS):
        pretrain(name, args.out, args.iterations, args.model, args.tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
