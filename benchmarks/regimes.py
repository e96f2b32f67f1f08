"""Every regime keeps improving with more data (issue 15): each regime's learner with the defaults.

One learner per regime, each with its library defaults (the recipe: steps scaled by the batch's
share, and for the parametric and explicit learners 8 tapered refinements with momentum; for the
parametric one, whose model has at most 64 parameters here, also the Newton direction of the
accumulated curvature as each step's base; the explicit one is asked for it, its opt-in):
``LearnedUpdate`` (parametric), ``LatentUpdate`` (explicit: latent 32, decoder [64] with its linear
skip) and ``InContext`` (implicit: share-scaled, linear head, the running ridge readout on ``[x, 1]``
and 16 learned features; classifying, its logits on a running logistic regression), all width 64,
depth 2. Each is
meta-trained within a CPU budget on horizons of 1 to 64 steps of 32 points over 512 points per task
(k > 16 re-reads the data), then adapts to 256 held-out tasks with the same mini-batch sequences.
References: the Bayes posterior mean (linear regression), per-task SGD with its rate tuned per k,
scikit-learn's logistic regression with the prior-matched C (classification). On the main family
each regime also has a one-shot twin (the same learner trained to read 32 to 512 points in one step)
and both are scored out of distribution (noisier targets, uniform inputs) without retraining.

Every job (family, learner, seed) saves its result under ``results/regimes/``, so a stopped run
continues where it stopped: ``python -m benchmarks regimes`` runs the jobs of ``PLANNED`` not saved
yet (two at a time, one torch thread each; about 2.5 hours of CPU in all) and reports every saved
job; ``python -m benchmarks.regimes JOB...`` runs single jobs (other seeds, other families).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import torch

import amortized
from amortized.learners import SGD, BayesLinearRegression, InContext, LatentUpdate, LearnedUpdate, Learner
from amortized.models import MLP, Linear
from amortized.tasks import LinearClassification, LinearRegression, NonlinearRegression, Sinusoid, TaskFamily
from amortized.training import evaluate_tasks
from benchmarks.quality import _logistic_regression, _tuned_curves

STEPS = [1, 2, 4, 8, 16, 32, 64]
NUM_TRAIN, NUM_QUERY, BATCH, NUM_TASKS = 512, 128, 32, 256
TRAINING = {
    "tasks_per_batch": 16,
    "batch_size": BATCH,
    "num_steps": (1, 64),
    "num_train": NUM_TRAIN,
    "num_query": 64,
    "loss_scale": "log",
    "lr": 1e-3,
    "warmup": 100,
    "eval_every": 0,
}
ONE_SHOT = {"batch_size": (BATCH, NUM_TRAIN), "num_steps": 1}
ITERATIONS = {"parametric": 1200, "explicit": 1200, "implicit": 700}
"""Meta-training iterations per regime: about 12 to 14 minutes of CPU each on this machine."""

FAMILIES: dict[str, tuple[Any, Any]] = {
    "linear-regression": (lambda: LinearRegression(8, noise=0.5), lambda: Linear(8)),
    "linear-classification": (
        lambda: LinearClassification(8, num_classes=4, temperature=0.3),
        lambda: Linear(8, 4),
    ),
    "nonlinear-regression": (
        lambda: NonlinearRegression(4, noise=0.1, hidden=(32,)),
        lambda: MLP(4, 1, hidden=(32, 32), activation="tanh"),
    ),
    "linear-regression-d4": (lambda: LinearRegression(4, noise=0.2), lambda: Linear(4)),
    "linear-regression-d16": (lambda: LinearRegression(16, noise=1.0), lambda: Linear(16)),
    "linear-classification-d16": (
        lambda: LinearClassification(16, num_classes=3, temperature=1.0),
        lambda: Linear(16, 3),
    ),
    "sinusoid": (lambda: Sinusoid(), lambda: MLP(1, 1, hidden=(40, 40))),
}
"""The benchmark's families; the last five are priors the settings were not chosen on."""
MAIN = "linear-regression"
PLANNED = (MAIN, "linear-classification")
"""The families ``python -m benchmarks regimes`` runs; the others run as single jobs
(``python -m benchmarks.regimes nonlinear-regression/parametric/0 ...``) and are reported when saved."""
SHIFTS = {"noisier": {"noise": 1.0}, "uniform-inputs": {"inputs": "uniform"}}
SEEDS: dict[tuple[str, str], tuple[int, ...]] = {
    (MAIN, "parametric"): (0, 1, 2, 3, 4),
    (MAIN, "explicit"): (0, 1, 2),
    (MAIN, "implicit"): (0, 1, 2),
}
"""Training seeds per family and regime (one, seed 0, where not listed); the parametric learner's
target (≤ 1.5× the Bayes excess error) is stated for every one of five seeds."""
REGIMES = {"parametric": "LearnedUpdate", "explicit": "LatentUpdate", "implicit": "InContext"}
NEWTON_INPUTS = ("observations", "gradients", "newton")
"""What ``LatentUpdate`` reads here: the Newton direction is opt-in for it (as in the quickstart)."""


def build(regime: str, family: TaskFamily, model: Any, seed: int) -> Learner:
    """The regime's learner with the library's defaults (widths from the family)."""
    task = "classification" if family.is_classification else "regression"
    if regime == "parametric":
        return LearnedUpdate(model(), task=task, seed=seed)
    if regime == "explicit":
        return LatentUpdate(
            family.input_dim,
            family.output_dim,
            task=task,
            latent_dim=32,
            decoder_hidden=[64],
            rule={"inputs": list(NEWTON_INPUTS)},
            seed=seed,
        )
    return InContext(family.input_dim, family.output_dim, task=task, seed=seed)


def jobs(families: tuple[str, ...] = tuple(FAMILIES)) -> list[str]:
    """Every job as ``family/regime/seed`` (``/one-shot`` for the twins)."""
    names = []
    for family in families:
        for regime in REGIMES:
            names += [f"{family}/{regime}/{seed}" for seed in SEEDS.get((family, regime), (0,))]
    if MAIN in families:
        names += [f"{MAIN}/{regime}/0/one-shot" for regime in REGIMES]
    names += [f"{family}/references" for family in families]
    return names


def _tasks(family: TaskFamily) -> Any:
    return family.sample(NUM_TASKS, NUM_TRAIN, NUM_QUERY, torch.Generator().manual_seed(2024))


def _metric(family: TaskFamily) -> str:
    return "error" if family.is_classification else "excess_mse"


def curve(learner: Learner, tasks: Any, one_shot: bool = False) -> dict[int, dict[str, float]]:
    """Metrics after k steps of 32 points (one-shot: one step on the same k·32 points)."""
    points = {}
    for k in STEPS:
        if one_shot:
            n = min(NUM_TRAIN, k * BATCH)
            points[k] = evaluate_tasks(learner, _first(tasks, n), batch_size=n, num_steps=1, seed=1)
        else:
            points[k] = evaluate_tasks(learner, tasks, batch_size=BATCH, num_steps=k, seed=1)
    return points


def _first(tasks: Any, n: int) -> Any:
    """The tasks with their first ``n`` training points (what the first k mini-batches hold)."""
    order = torch.Generator().manual_seed(1)
    index = torch.rand(tasks.num_tasks, tasks.x_train.shape[1], generator=order).argsort(1)[:, :n]
    x = tasks.x_train.gather(1, index[..., None].expand(-1, -1, tasks.x_train.shape[-1]))
    y_index = index if tasks.y_train.dim() == 2 else index[..., None].expand(-1, -1, tasks.y_train.shape[-1])
    return type(tasks)(x, tasks.y_train.gather(1, y_index), tasks.x_query, tasks.y_query, tasks.f_query)


def parse_job(name: str) -> tuple[str, str, int, bool]:
    """``FAMILY/references`` or ``FAMILY/REGIME/SEED[/one-shot]`` as (family, regime or
    ``"references"``, seed, one-shot), or a ``ValueError`` naming what is wrong."""
    family_name, *rest = name.split("/")
    usage = f"a job is FAMILY/references or FAMILY/REGIME/SEED[/one-shot], got {name!r}"
    if family_name not in FAMILIES:
        raise ValueError(f"{usage}: unknown family {family_name!r} (one of {', '.join(FAMILIES)})")
    if rest == ["references"]:
        return family_name, "references", 0, False
    if len(rest) not in (2, 3) or rest[2:] not in ([], ["one-shot"]):
        raise ValueError(usage)
    if rest[0] not in REGIMES:
        raise ValueError(f"{usage}: unknown regime {rest[0]!r} (one of {', '.join(REGIMES)})")
    if not rest[1].isdigit():
        raise ValueError(f"{usage}: the seed must be a non-negative integer, got {rest[1]!r}")
    return family_name, rest[0], int(rest[1]), rest[2:] == ["one-shot"]


def run_job(name: str) -> dict[str, Any]:
    """Train and score one learner, or compute one family's references."""
    torch.set_num_threads(1)
    family_name, regime, seed, one_shot = parse_job(name)
    make_family, model = FAMILIES[family_name]
    family = make_family()
    tasks = _tasks(family)
    if regime == "references":
        return references(family, model, tasks)
    learner = build(regime, family, model, seed)
    settings = {**TRAINING, **(ONE_SHOT if one_shot else {})}
    iterations = ITERATIONS[regime]
    cpu, wall = time.process_time(), time.perf_counter()
    amortized.train(learner, family, iterations=iterations, seed=seed, **settings)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    result: dict[str, Any] = {
        "learner": learner.describe(),
        "iterations": iterations,
        "train_cpu_seconds": round(cpu),
        "train_wall_seconds": round(wall),
        "curve": curve(learner, tasks, one_shot),
    }
    if family_name == MAIN:
        result["ood"] = {}
        for shift, options in SHIFTS.items():
            shifted = LinearRegression(8, **{"noise": 0.5, **options})
            result["ood"][shift] = curve(learner, _tasks(shifted), one_shot)
    return result


def references(family: TaskFamily, model: Any, tasks: Any) -> dict[str, Any]:
    task = "classification" if family.is_classification else "regression"
    init = "zeros" if isinstance(model(), Linear) else "random"
    result: dict[str, Any] = {
        "sgd": _tuned_curves(family, lambda lr: SGD(model(), lr, task=task, init=init), tasks)
    }
    if isinstance(family, LinearRegression):
        bayes = BayesLinearRegression(family.input_dim, family.noise, family.weight_std, family.bias)
        result["bayes"] = curve(bayes, tasks, one_shot=True)
        if family.input_dim == 8:
            result["ood_bayes"] = {}
            for shift, options in SHIFTS.items():
                shifted = LinearRegression(8, **{"noise": 0.5, **options})
                reference = BayesLinearRegression(8, shifted.noise, shifted.weight_std, shifted.bias)
                result["ood_bayes"][shift] = curve(reference, _tasks(shifted), one_shot=True)
    if isinstance(family, LinearClassification):
        result["logistic_regression_error"] = _logistic_regression(tasks, family.temperature)
        result["bayes_error"] = 1 - torch.softmax(tasks.f_query, -1).amax(-1).mean().item()
    return result


def _job_path(out_dir: Path, name: str) -> Path:
    return out_dir / "regimes" / (name.replace("/", "__") + ".json")


def _quick() -> None:
    """Toy sizes for a smoke run (in every worker process)."""
    global STEPS, NUM_TASKS
    ITERATIONS.update(parametric=3, explicit=3, implicit=3)
    STEPS, NUM_TASKS = [1, 2], 8


def _run_and_save(args: tuple[str, str, bool]) -> str:
    name, out_dir, quick = args
    if quick:
        _quick()
    began = time.perf_counter()
    result = run_job(name)
    path = _job_path(Path(out_dir), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result))
    os.replace(temporary, path)
    return f"{name}: {time.perf_counter() - began:.0f} s"


def main(out_dir: Path, quick: bool = False, workers: int = 2) -> dict:
    """Run every job not saved yet (two at a time), then gather all saved jobs."""
    if quick:
        _quick()
        out_dir = out_dir / "quick"
    pending = [name for name in jobs(PLANNED) if not _job_path(out_dir, name).exists()]
    if quick:
        pending = [f"{MAIN}/{regime}/0" for regime in REGIMES] + [f"{MAIN}/parametric/0/one-shot"]
        pending.append(f"{MAIN}/references")
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for message in pool.imap_unordered(_run_and_save, [(name, str(out_dir), quick) for name in pending]):
            print(message, flush=True)
    return {
        name: json.loads(_job_path(out_dir, name).read_text())
        for name in jobs()
        if _job_path(out_dir, name).exists()
    }


# --------------------------------------------------------------------------------------------------
# Report


def _values(points: dict, metric: str) -> list[float]:
    return [points[k][metric] for k in sorted(points, key=int)]


def _seeds(result: dict, family: str, regime: str, suffix: str = "") -> list[dict]:
    """The saved runs of a learner over its seeds; those of the current defaults only, if any exist."""
    runs = [
        result[name]
        for name in (f"{family}/{regime}/{seed}{suffix}" for seed in SEEDS.get((family, regime), (0,)))
        if name in result
    ]
    current = [run for run in runs if not _before_defaults([run])]
    return current or runs


def _row(label: str, runs: list[list[float]], digits: str) -> str:
    cells = []
    for values in zip(*runs, strict=True):
        mean = sum(values) / len(values)
        spread = f" ({min(values):{digits}}–{max(values):{digits}})" if len(values) > 1 else ""
        cells.append(f"{mean:{digits}}{spread}")
    return f"| {label} | " + " | ".join(cells) + " |"


def moment_curve(family: LinearRegression) -> list[float]:
    """Excess MSE of the moment estimator ``w = mean([x, 1] · y)`` over the points read, per k.

    One gradient step from zero on all points read, or the average of per-batch such steps: where an
    iterative learner can only average per-batch estimates of raw targets (never residuals), this is
    the floor it converges to, ``≈ 1 + E|w|² / σ²`` times the Bayes excess error.
    """
    tasks = _tasks(family)
    values = []
    for k in STEPS:
        seen = _first(tasks, min(NUM_TRAIN, k * BATCH))
        features = torch.cat([seen.x_train, torch.ones_like(seen.x_train[..., :1])], -1)
        weights = (features * seen.y_train).mean(1)
        query = torch.cat([tasks.x_query, torch.ones_like(tasks.x_query[..., :1])], -1)
        values.append(float((query @ weights[..., None] - tasks.f_query).square().mean()))
    return values


def _newton_expected(learner: dict) -> bool:
    """Whether today's settings give the learner the Newton direction: asked for here for
    ``LatentUpdate``, the library's default for a ``LearnedUpdate`` whose model is small enough."""
    if learner["class"] == "LatentUpdate":
        return True
    config = {**learner["config"], "rule": {**learner["config"]["rule"], "inputs": None}}
    return LearnedUpdate.from_config(config).rule.spec.uses_newton


def _before_defaults(runs: list[dict]) -> bool:
    """Whether any run's learner was built before today's settings: a ``LearnedUpdate`` or
    ``LatentUpdate`` without the Newton direction where it is expected (:func:`_newton_expected`),
    an ``InContext`` without the ridge readout or, classifying, without the logistic base of its
    logits."""
    learners = [run["learner"] for run in runs if "learner" in run]
    return any(
        (
            learner["class"] in ("LearnedUpdate", "LatentUpdate")
            and "newton" not in learner["config"]["rule"]["inputs"]
            and _newton_expected(learner)
        )
        or (learner["class"] == "InContext" and learner["config"].get("ridge_features") is None)
        or (
            learner["class"] == "InContext"
            and learner["config"].get("state") == "logits"
            and not learner["config"].get("logistic_base")
        )
        for learner in learners
    )


def _label(label: str, runs: list[dict]) -> str:
    return f"{label} †" if _before_defaults(runs) else label


def _cpu_range(runs: list[dict]) -> str:
    seconds = [run["train_cpu_seconds"] for run in runs]
    return f"{min(seconds)}" if min(seconds) == max(seconds) else f"{min(seconds)}–{max(seconds)}"


def _rises(values: list[float]) -> float:
    """The largest relative rise from one k to the next (negative: it always fell)."""
    return max((later / earlier - 1 for earlier, later in itertools.pairwise(values)), default=0.0)


def report(result: dict) -> str:
    """Per family: each regime's curve (mean over seeds and the range), the references, the targets."""
    lines = [
        "Learners with the library's defaults, width 64, depth 2; meta-trained on horizons of 1–64 "
        "steps of 32 points over 512 points per task. Cells: mean over training seeds (range, when "
        "there are several). "
        "Bayes reads each point once (the exact posterior on the points seen).",
    ]
    steps = sorted(int(k) for k in next(iter(result.values()))["curve"])
    header = "| | " + " | ".join(f"k={k}" for k in steps) + " |"
    rule = "|" + " --- |" * (len(steps) + 1)
    targets: list[str] = []
    for family_name in FAMILIES:
        references = result.get(f"{family_name}/references")
        family = FAMILIES[family_name][0]()
        metric = _metric(family)
        present = {regime: _seeds(result, family_name, regime) for regime in REGIMES}
        if not any(present.values()) or references is None:
            continue
        bayes = _values(references["bayes"], metric) if "bayes" in references else None
        lines += ["", f"#### {family_name}: `{family!r}`", ""]
        budget = {regime: runs for regime, runs in present.items() if runs}
        lines.append(
            "Meta-training: "
            + "; ".join(
                f"{REGIMES[regime]} {runs[0]['iterations']} iterations, {_cpu_range(runs)} s CPU"
                for regime, runs in budget.items()
            )
            + f". Metric: `{metric}`"
            + (", and ÷ Bayes" if bayes else "")
            + ".",
        )
        lines += ["", header, rule]
        for regime, runs in present.items():
            if not runs:
                continue
            curves = [_values(run["curve"], metric) for run in runs]
            lines.append(_row(_label(f"{REGIMES[regime]} ({regime})", runs), curves, ".4f"))
            if bayes:
                ratios = [[a / b for a, b in zip(c, bayes, strict=True)] for c in curves]
                lines.append(_row("  ÷ Bayes", ratios, ".2f"))
            rises = [_rises(c) for c in curves]
            rise = f"largest rise from one k to the next {max(rises):+.1%}"
            check = []
            if bayes and family_name.startswith("linear-regression"):
                ratios = [[a / b for a, b in zip(c, bayes, strict=True)] for c in curves]
                worst_early = max(max(r[:2]) for r in ratios)
                worst_late = max(max(r[2:], default=0.0) for r in ratios)
                check.append(
                    f"≤ 3× Bayes at k ≤ 2: worst {worst_early:.2f}; ≤ 2× at k ≥ 4: worst {worst_late:.2f}"
                )
            if family.is_classification and 64 in steps:
                at_32 = [c[steps.index(32)] for c in curves]
                gap = max(at_32) - references["logistic_regression_error"]
                change = max(c[steps.index(64)] - c[steps.index(16)] for c in curves)
                check.append(f"worst error at k=32 {gap * 100:+.1f} points from logistic regression")
                check.append(f"k=16 → 64: worst change {change * 100:+.2f} points")
            sgd = _values(references["sgd"], metric)
            below = all(all(a < b for a, b in zip(c, sgd, strict=True)) for c in curves)
            check.append(f"below tuned SGD at every k: {'yes' if below else 'no'}")
            targets.append(f"- {family_name}, {REGIMES[regime]}: {rise}; " + "; ".join(check))
            twins = _seeds(result, family_name, regime, "/one-shot")
            if twins:
                twin_curves = [_values(run["curve"], metric) for run in twins]
                lines.append(_row(_label("  one-shot twin", twins), twin_curves, ".4f"))
                if bayes:
                    ratios = [
                        [a / b for a, b in zip(_values(run["curve"], metric), bayes, strict=True)]
                        for run in twins
                    ]
                    lines.append(_row("  ÷ Bayes", ratios, ".2f"))
        lines.append(_row("SGD, rate tuned per k", [_values(references["sgd"], metric)], ".4f"))
        if bayes:
            moments = moment_curve(family)
            lines.append(_row("Moment estimator mean([x, 1]·y)", [moments], ".4f"))
            lines.append(_row("  ÷ Bayes", [[a / b for a, b in zip(moments, bayes, strict=True)]], ".2f"))
            lines.append(_row("Bayes posterior mean", [bayes], ".4f"))
        if "logistic_regression_error" in references:
            lines.append(
                f"\nLogistic regression (prior-matched C, all 512 points): "
                f"{references['logistic_regression_error']:.4f}; "
                f"Bayes error: {references['bayes_error']:.4f}."
            )
        if family_name == MAIN:
            lines += _ood(result, references, metric, header, rule)
    if _before_defaults([run for name, run in result.items() if "learner" in run]):
        lines += [
            "",
            "† made before today's settings (LearnedUpdate, LatentUpdate: without the Newton "
            "direction, reading observations and gradients; InContext: without the ridge readout "
            "or, classifying, the logistic base); "
            "the same job run again uses them.",
        ]
    missing = [name for name in jobs(PLANNED) if name not in result]
    if missing:
        lines += [
            "",
            "Planned jobs not run yet (`python -m benchmarks regimes` runs them): " + ", ".join(missing),
        ]
    return "\n".join([*lines, "", "Targets of issue 15:", *targets])


def _ood(result: dict, references: dict, metric: str, header: str, rule: str) -> list[str]:
    lines = []
    for shift in SHIFTS:
        lines += [
            "",
            f"Out of distribution, {shift} ({SHIFTS[shift]}), without retraining:",
            "",
            header,
            rule,
        ]
        for regime in REGIMES:
            for suffix, label in (("", "iterative"), ("/one-shot", "one-shot")):
                runs = _seeds(result, MAIN, regime, suffix)
                if runs:
                    lines.append(
                        _row(
                            _label(f"{REGIMES[regime]} ({label})", runs),
                            [_values(r["ood"][shift], metric) for r in runs],
                            ".4f",
                        )
                    )
        lines.append(_row("Bayes posterior mean", [_values(references["ood_bayes"][shift], metric)], ".4f"))
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.regimes",
        description="Run single jobs and save them under benchmarks/results/regimes/.",
        epilog=f"families: {', '.join(FAMILIES)}; regimes: {', '.join(REGIMES)}. "
        "Example: linear-regression/implicit/1 linear-regression/references",
    )
    parser.add_argument(
        "jobs", nargs="+", metavar="JOB", help="FAMILY/references or FAMILY/REGIME/SEED[/one-shot]"
    )
    arguments = parser.parse_args()
    for job in arguments.jobs:
        try:
            parse_job(job)
        except ValueError as error:
            parser.error(str(error))
    for job in arguments.jobs:
        print(_run_and_save((job, str(Path(__file__).resolve().parent / "results"), False)), flush=True)
