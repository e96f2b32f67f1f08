"""Does a learner get worse with more steps because it re-reads points, or because it takes many steps?

Scores every learner of a finished run folder on held-out tasks of the run's family after each of
the run's ``evaluation.steps`` in two ways: over the run's evaluation sequence (passes over
``evaluation.num_train`` points per task, re-read once ``k · batch_size`` exceeds them) and with a
fresh mini-batch at every step (``max(steps) · batch_size`` points per task). If both curves rise,
re-reading is not what hurts. One-shot learners (no steps to take) are left out. Usage::

    python scripts/fresh_or_reread.py RUN_DIR

Tasks drawn with the run's evaluation seed, its batch size; one torch thread.
"""

import sys

import torch

from amortized.config import Experiment
from amortized.evaluation import step_curve
from amortized.experiments import RunFolder, load_trained
from amortized.preset_files import read_toml


def main(run_dir: str) -> None:
    """Print each learner's metric after every ``k``, with re-reads and with fresh points."""
    torch.set_num_threads(1)
    run = RunFolder(run_dir)
    experiment = Experiment.from_config(run.path.name, read_toml(run.config_path))
    settings, family = experiment.evaluation, experiment.family
    metric = "error" if family.is_classification else "mse"
    steps = settings.steps
    sizes = {"re-read": settings.num_train, "fresh": max(steps) * settings.batch_size}
    iterative = {spec.name for spec in experiment.learners if not spec.one_shot}
    print("learner", "points", *(f"k={k}" for k in steps))
    for name, trained in load_trained(experiment, run).items():
        if name not in iterative:
            continue
        for label, num_train in sizes.items():
            generator = torch.Generator().manual_seed(settings.seed)
            tasks = family.sample(settings.num_tasks, num_train, settings.num_query, generator)
            curve = step_curve(
                trained.learner, tasks, steps=steps, batch_size=settings.batch_size, seed=settings.seed
            )
            scores = [point[metric] for point in curve]
            print(name, label, *(f"{score:.4f}" for score in scores), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
