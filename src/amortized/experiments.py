"""Running an experiment into a run folder: meta-train every learner, evaluate, write results.

A run folder holds ``config.toml`` (the resolved preset), ``learners/NAME/`` (``checkpoint.pt``,
``metrics.jsonl``, a cached ``evaluation.json``), ``baselines/NAME/evaluation.json``, the merged
``metrics.jsonl``, ``results.json``, ``report.md`` and the plots. A run that was stopped (Ctrl-C, a
kill) is finished by running it again on the same folder: finished learners are not retrained,
interrupted ones continue from their last checkpoint, and cached evaluations are reused.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from amortized import __version__
from amortized.checkpoints import checkpoint_identity, load_checkpoint, previous_path, write_text_atomic
from amortized.config import BaselineSpec, Experiment, LearnerSpec
from amortized.distributed import is_main
from amortized.errors import CheckpointError, ConfigError, RunFileError
from amortized.evaluation import (
    TaskSuite,
    add_reference_ratios,
    baseline_curves,
    cost_curve,
    family_likelihood,
    learner_curves,
)
from amortized.folders import read_json, read_jsonl
from amortized.learners import Learner, adapt
from amortized.lifeline import end_with_parent
from amortized.preset_files import dump_toml, read_toml
from amortized.progress import Progress
from amortized.training import run_description, train
from amortized.validation import check_device

RESULTS_FORMAT = "amortized-results"
RESULTS_VERSION = 1
SAMPLE_TASKS = 4
"""Tasks of a generative family whose generated samples ``results.json`` keeps for the report."""


class RunFolder:
    """The folder one run writes: ``config.toml``, ``learners/NAME/``, ``baselines/NAME/``, results."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.toml")
    results_path = property(lambda self: self.path / "results.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")

    def learner_dir(self, name: str) -> Path:
        return self.path / "learners" / name

    def baseline_dir(self, name: str) -> Path:
        return self.path / "baselines" / name

    @classmethod
    def create(cls, path: str | os.PathLike, experiment: Experiment) -> RunFolder:
        """A new run folder holding the resolved preset; refuses a folder that already holds a run."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"{run.path} is a file, not a folder; choose another --out")
        if run.path.exists() and any(run.path.iterdir()):
            hint = (
                f"finish that run with --resume {run.path} or choose another --out"
                if run.config_path.is_file()
                else "it is not a run folder (no config.toml); choose another --out"
            )
            raise ConfigError(f"{run.path} already exists and is not empty; {hint}")
        run.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run.config_path, dump_toml(experiment.config))
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunFolder:
        run = cls(path)
        if not run.path.exists():
            raise ConfigError(f"{run.path} does not exist")
        if not run.config_path.is_file():
            raise ConfigError(f"{run.path} is not a run folder (no config.toml)")
        return run

    def experiment(self) -> Experiment:
        """The experiment ``config.toml`` describes; what is wrong with that file is named with it."""
        config = read_toml(self.config_path)
        try:
            return Experiment.from_config(str(config.get("preset", self.path.name)), config)
        except ConfigError as error:
            raise ConfigError(f"{self.config_path}: {error}") from None

    def read_results(self) -> dict[str, Any]:
        """``results.json``; a missing, damaged or foreign one is an error saying how to write it again."""
        if not self.results_path.is_file():
            raise ConfigError(f"{self.path} has no results.json yet; run: amortized evaluate {self.path}")
        hint = f"write it again with: amortized evaluate {self.path}"
        results = read_json(self.results_path, hint)
        if results.get("format") != RESULTS_FORMAT:
            raise RunFileError(
                f"{self.results_path} is not an {RESULTS_FORMAT} file (its format is "
                f"{results.get('format')!r}); {hint}"
            )
        return results


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _weights_digest(learner: Learner) -> str:
    """A digest of a learner's weights, so a cached evaluation is never reused for retrained weights."""
    digest = hashlib.sha256()
    for name, value in sorted(learner.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cached(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """A cached evaluation, if it was computed for the same settings (a damaged one is recomputed)."""
    if not path.is_file():
        return None
    try:
        payload = read_json(path)
    except RunFileError:
        return None
    return payload if payload.get("fingerprint") == fingerprint else None


# --------------------------------------------------------------------------------------------------
# Running


Log = Callable[[str], None]


@dataclass
class Trained:
    """A meta-trained learner and what its training took."""

    learner: Learner
    train_seconds: float
    iterations: int
    train_cpu_seconds: float = 0.0


ADDED_OPTIONS: dict[str, tuple[Any, ...]] = {
    "history": (0,),
    "state": ("logits", "predictions"),
    "ridge_features": (None,),
    "logistic_base": (False,),
    "base_gate": (False,),
    "skip_features": (0,),
}
"""Options added since checkpoints were first written, with the values older checkpoints were built
with (``state``: ``InContext``'s, which resolves to one of those by task; ``ridge_features``,
``logistic_base``: ``InContext`` without the ridge readout or the logistic base, so a run of today's
default refuses an older checkpoint; ``base_gate``: ``InContext`` without the gate; ``skip_features``:
``LatentUpdate`` whose skip reads ``[x, 1]`` only)."""


def _agree(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a saved config matches the current one, tables included, at any depth.

    An option the checkpoint does not list agrees only if it was added to the library since
    (:data:`ADDED_OPTIONS`) and the current config keeps the value older checkpoints were built with.
    """
    for key in current.keys() - saved.keys():
        if current[key] not in ADDED_OPTIONS.get(key, ()):
            return False
    return all(
        _agree(saved[key], current[key])
        if isinstance(saved[key], dict) and isinstance(current[key], dict)
        else saved[key] == current[key]
        for key in saved.keys() & current.keys()
    )


def _restore(
    run: RunFolder, spec: LearnerSpec, experiment: Experiment, device: torch.device | None = None
) -> tuple[Learner, Trained | None]:
    """The learner built from its spec (on ``device``, if given), and, if its checkpoint finished
    training, the trained learner.

    A checkpoint written for another learner, training config or task family is refused rather than
    mixed in or scored on tasks it was not trained for.
    """
    learner = spec.build(experiment.family).to(device)
    path = run.learner_dir(spec.name) / "checkpoint.pt"
    if not path.exists() and not previous_path(path).exists():
        return learner, None
    expected = checkpoint_identity(run_description(learner, experiment.family, spec.train))
    payload = load_checkpoint(
        path, identity=expected, keys=("learner", "weights", "iteration", "train_seconds")
    )
    saved = payload.get("learner", {})
    described = learner.describe()
    if (
        saved.get("class") != described["class"]
        or not _agree(saved.get("config", {}), described["config"])
        or not _agree(payload.get("train_config", {}), asdict(spec.train))
    ):
        raise CheckpointError(
            f"{path} was written for another learner or training config than {run.config_path} "
            "describes; move it away or start a new run"
        )
    family = repr(experiment.family)
    if payload.get("family", family) != family:
        raise CheckpointError(
            f"{path} was trained on {payload['family']}, but {run.config_path} describes {family}; "
            "restore the [family] it was trained on (score other tasks with [evaluation.ood.NAME]) "
            "or start a new run"
        )
    try:
        learner.load_state_dict(payload["weights"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path} holds weights this version of {described['class']} cannot load (the learner "
            f"changed since it was written); start a new run. {str(error).splitlines()[0]}"
        ) from None
    if payload["iteration"] < spec.train.iterations:
        return spec.build(experiment.family).to(device), None
    learner.eval()
    cpu = payload.get("train_cpu_seconds", 0.0)
    return learner, Trained(learner, payload["train_seconds"], payload["iteration"], cpu)


def train_learners(
    experiment: Experiment,
    run: RunFolder,
    *,
    progress: bool = True,
    log: Log = print,
    jobs: int = 1,
    device: str | torch.device | None = None,
) -> dict[str, Trained]:
    """Meta-train every learner into the run folder; finished ones are loaded, stopped ones resumed.

    Training runs on this process's torch threads (the command line's ``--threads``) and on
    ``device`` (the CPU by default). With ``jobs > 1``, learners train in that many processes at
    once (each with this process's torch threads); every learner's training is seeded on its own,
    so the weights do not depend on ``jobs``.
    """
    device = _device(device)
    trained: dict[str, Trained] = {}
    pending: list[tuple[str, LearnerSpec, Learner]] = []
    for index, spec in enumerate(experiment.learners, start=1):
        learner, done = _restore(run, spec, experiment, device)
        mode = "one-shot" if spec.one_shot else "iterative"
        header = f"[{index}/{len(experiment.learners)}] {spec.name} ({learner.regime}, {mode})"
        if done is not None:
            log(f"{header}: trained already ({done.iterations} iterations)")
            trained[spec.name] = done
        else:
            pending.append((header, spec, learner))
    if jobs > 1 and len(pending) > 1:
        specs = [spec for _, spec, _ in pending]
        for header, spec, _ in pending:
            log(f"{header}: meta-training for {spec.train.iterations} iterations")
        names = [spec.name for spec in specs]
        _in_processes(_train_in_process, run, names, jobs, log, "trained", progress=progress, device=device)
        for spec in specs:
            trained[spec.name] = _restore(run, spec, experiment, device)[1]
    else:
        for header, spec, learner in pending:
            log(f"{header}: meta-training for {spec.train.iterations} iterations")
            folder = run.learner_dir(spec.name)
            result = train(
                learner,
                experiment.family,
                spec.train,
                out_dir=folder,
                resume=True,
                progress=progress and spec.name,
                threads=None,  # the caller's (the CLI's --threads)
            )
            trained[spec.name] = Trained(
                learner, result.train_seconds, result.iterations, result.train_cpu_seconds
            )
            _merge_metrics(run, experiment)
    _merge_metrics(run, experiment)
    return {spec.name: trained[spec.name] for spec in experiment.learners}


def _in_processes(
    work: Callable[[str, str, int, str, bool], str],
    run: RunFolder,
    names: list[str],
    jobs: int,
    log: Log,
    done: str,
    *,
    progress: bool,
    device: torch.device,
) -> None:
    """``work(run folder, name, threads, device, progress)`` for every name, in ``jobs`` fresh
    processes at once.

    The workers' progress comes as lines on stderr (bars of several processes would overwrite each
    other). They end when this process ends, even by SIGKILL (:mod:`amortized.lifeline`).
    """
    threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(jobs, len(names)), mp_context=context, initializer=end_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {
            pool.submit(work, str(run.path), name, threads, str(device), progress): name for name in names
        }
        for future in as_completed(futures):
            log(f"{futures[future]}: {done} ({future.result()})")


def _train_in_process(path: str, name: str, threads: int, device: str, progress: bool) -> str:
    """Meta-train the learner ``name`` of the run folder at ``path`` (in a worker process)."""
    torch.set_num_threads(threads)
    run = RunFolder.open(path)
    experiment = run.experiment()
    spec = next(spec for spec in experiment.learners if spec.name == name)
    learner = spec.build(experiment.family).to(device)
    result = train(
        learner,
        experiment.family,
        spec.train,
        out_dir=run.learner_dir(name),
        resume=True,
        progress=progress and name,
        threads=None,  # the parent's, set above
    )
    return f"{result.iterations} iterations, {result.train_cpu_seconds:.0f} s of CPU"


def load_trained(
    experiment: Experiment, run: RunFolder, device: str | torch.device | None = None
) -> dict[str, Trained]:
    """The trained learners of a run folder (on ``device``, the CPU by default); names the ones that
    still need training."""
    device = _device(device)
    restored = {spec.name: _restore(run, spec, experiment, device)[1] for spec in experiment.learners}
    missing = [name for name, done in restored.items() if done is None]
    if missing:
        raise ConfigError(
            f"learner(s) {', '.join(missing)} in {run.path} are not fully trained; finish them with: "
            f"amortized train --resume {run.path}"
        )
    return restored


def _merge_metrics(run: RunFolder, experiment: Experiment) -> None:
    """Gather every learner's training curve into the run's ``metrics.jsonl`` (a ``learner`` key each).

    A learner's last record cut short by a kill or a full disk is dropped from its file.
    """
    if not is_main():
        return
    lines = []
    for spec in experiment.learners:
        path = run.learner_dir(spec.name) / "metrics.jsonl"
        if path.is_file():
            for record in read_jsonl(path, repair=True):
                lines.append(json.dumps({"learner": spec.name, **record}))
    write_text_atomic(run.metrics_path, "".join(line + "\n" for line in lines))


class _Evaluator:
    """Evaluates the entries of one experiment on one task suite, caching each entry's curves."""

    def __init__(
        self, experiment: Experiment, run: RunFolder, log: Log, progress: bool, device: torch.device
    ) -> None:
        self.experiment, self.run, self.log, self.progress = experiment, run, log, progress
        self.device = device
        self.config = experiment.evaluation
        self.suite = TaskSuite.sample(experiment.family, experiment.ood_families, self.config)
        self.settings = (experiment.config["family"], experiment.config.get("evaluation", {}))

    def cached(
        self, folder: Path, name: str, compute: Callable[[Progress], dict[str, Any]], *key: Any
    ) -> dict:
        """``compute(progress)``, or its result cached in ``folder/evaluation.json`` for the same settings.

        The entry records the wall and CPU seconds its computation took.
        """
        path = folder / "evaluation.json"
        if self.device.type != "cpu":  # numbers and costs depend on it (CPU caches keep their key)
            key = (*key, str(self.device))
        fingerprint = _fingerprint(self.settings, *key)
        found = _cached(path, fingerprint)
        if found is not None:
            self.log(f"{name}: evaluation cached")
            return found
        self.log(f"{name}: evaluating")
        began, began_cpu = time.perf_counter(), time.process_time()
        progress = Progress(name, "evaluating", unit="parts", enabled=self.progress)
        computed = compute(progress)
        progress.close()
        entry = {
            **computed,
            "evaluation_seconds": time.perf_counter() - began,
            "evaluation_cpu_seconds": time.process_time() - began_cpu,
            "fingerprint": fingerprint,
        }
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(entry))
        return entry

    def cost(self, learner: Learner, one_shot: bool, progress: Progress) -> list[dict[str, float]]:
        """Time and memory of one adaptation against ``N``: one part of an evaluation's ``progress``."""
        config = self.config
        progress.start(f"time and memory of one adaptation, N up to {max(config.cost_sizes)}")
        return cost_curve(
            learner,
            self.experiment.family,
            sizes=config.cost_sizes,
            batch_size=config.batch_size,
            num_tasks=config.cost_tasks,
            num_query=config.num_query,
            seed=config.seed,
            one_shot=one_shot,
        )

    def learner(self, spec: LearnerSpec, item: Trained) -> dict[str, Any]:
        def compute(progress: Progress) -> dict[str, Any]:
            progress.expect(1)  # the cost curve
            curves = learner_curves(
                item.learner, self.suite, self.config, one_shot=spec.one_shot, progress=progress
            )
            return {"curves": curves, "cost": self.cost(item.learner, spec.one_shot, progress)}

        key = (_weights_digest(item.learner), asdict(spec.train), spec.one_shot)
        entry = self.cached(self.run.learner_dir(spec.name), spec.name, compute, *key)
        return {
            "class": spec.cls,
            "regime": item.learner.regime,
            "iterative": not spec.one_shot,
            "train_seconds": item.train_seconds,
            "train_cpu_seconds": item.train_cpu_seconds,
            "train_iterations": item.iterations,
            "trained_steps": spec.train.max_steps,
            "objective": spec.train.objective,
            "loss_scale": spec.train.loss_scale,
            "seed": spec.train.seed,
            **_timing(entry),
            "curves": entry["curves"],
            "cost": entry["cost"],
        }

    def baseline(self, spec: BaselineSpec) -> dict[str, Any]:
        make = self._make(spec)

        def compute(progress: Progress) -> dict[str, Any]:
            progress.expect(1)  # the cost curve
            if spec.is_fixed:
                learner = make(None)
                return {
                    "curves": learner_curves(learner, self.suite, self.config, progress=progress),
                    "cost": self.cost(learner, False, progress),
                }
            curves = baseline_curves(
                make,
                self.suite,
                self.config,
                grid=spec.lr_grid,
                tune=spec.tune,
                tune_steps=spec.tune_steps,
                progress=progress,
            )
            return {"curves": curves, "cost": self.cost(make(spec.lr_grid[0]), False, progress)}

        key = (spec.cls, spec.kwargs, spec.lr_grid, spec.tune, spec.tune_steps)
        entry = self.cached(self.run.baseline_dir(spec.name), spec.name, compute, *key)
        return {
            "class": spec.cls,
            "regime": "baseline",
            "iterative": True,
            "train_seconds": 0.0,
            "train_cpu_seconds": 0.0,
            "tune": spec.tune,
            "lr_grid": spec.lr_grid,
            **_timing(entry),
            "curves": entry["curves"],
            "cost": entry["cost"],
        }

    def _make(self, spec: BaselineSpec) -> Callable[[float | None], Learner]:
        """The baseline's constructor (a learning rate to a learner), building on the run's device."""
        make = spec.make(self.experiment.family)
        return lambda lr: make(lr).to(self.device)

    def reference(self, spec: BaselineSpec) -> dict[str, Any]:
        """The Bayes posterior on the points seen so far (one step on them: data is never counted twice)."""
        shifted = {
            name: spec.reference(family).to(self.device)
            for name, family in self.experiment.ood_families.items()
        }

        def compute(progress: Progress) -> dict[str, Any]:
            learner = spec.reference(self.experiment.family).to(self.device)
            return {
                "curves": learner_curves(
                    learner, self.suite, self.config, one_shot=True, ood_learners=shifted, progress=progress
                )
            }

        entry = self.cached(self.run.baseline_dir(spec.name), spec.name, compute, spec.cls)
        return {"name": spec.name, "class": spec.cls, **_timing(entry), "curves": entry["curves"]}

    def samples(self, trained: dict[str, Trained]) -> dict[str, Any]:
        """Held-out and generated samples of the first step-curve tasks, for the report's plot.

        Every generator reads each task's training points once (one-shot learners in one step) and
        transports the tasks' query noise.
        """
        tasks = self.suite.steps[:SAMPLE_TASKS]
        generators = {
            spec.name: (trained[spec.name].learner, spec.one_shot) for spec in self.experiment.learners
        }
        for spec in self.experiment.baselines:
            if spec.is_fixed:
                generators[spec.name] = (self._make(spec)(None), False)
        generated = {}
        for name, (learner, one_shot) in generators.items():
            state = adapt(
                learner,
                tasks.x_train,
                tasks.y_train,
                batch_size=tasks.num_train if one_shot else self.config.batch_size,
                generator=torch.Generator().manual_seed(self.config.seed),
            )
            with torch.no_grad():
                generated[name] = learner.predict(state, tasks.x_query).cpu().round(decimals=4).tolist()
        return {"truth": tasks.y_query.round(decimals=4).tolist(), "generated": generated}


def _timing(entry: dict[str, Any]) -> dict[str, float]:
    """The wall and CPU seconds a cached evaluation took (0 for caches written before they were kept)."""
    return {key: entry.get(key, 0.0) for key in ("evaluation_seconds", "evaluation_cpu_seconds")}


def _evaluate_in_process(path: str, name: str, threads: int, device: str, progress: bool) -> str:
    """Evaluate the learner or baseline ``name`` of a run folder into its cache (in a worker process)."""
    torch.set_num_threads(threads)
    run = RunFolder.open(path)
    experiment = run.experiment()
    evaluator = _Evaluator(experiment, run, lambda message: None, progress, torch.device(device))
    for spec in experiment.learners:
        if spec.name == name:
            evaluator.learner(spec, _restore(run, spec, experiment, torch.device(device))[1])
    for spec in experiment.baselines:
        if spec.name == name:
            (evaluator.reference if spec.is_reference else evaluator.baseline)(spec)
    return "cached in its folder"


def evaluate_experiment(
    experiment: Experiment,
    run: RunFolder,
    trained: dict[str, Trained],
    *,
    log: Log = print,
    jobs: int = 1,
    progress: bool = True,
    command: Sequence[str] = (),
    started: float | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Evaluate every learner, baseline and the reference on the same tasks; write ``results.json``.

    Each entry's curves are cached in its folder (``evaluation.json``) and reused while the settings
    and weights are unchanged, so a resumed run does not recompute them. With ``jobs > 1`` the
    entries are evaluated in that many processes at once (the numbers do not depend on ``jobs``).
    ``progress`` shows each entry's progress through its curves (see :mod:`amortized.progress`).
    ``command`` (the command line) and ``started`` (its ``time.time()`` at start) go into the
    results' ``provenance``. Baselines and references with weights compute on ``device`` (the CPU by
    default; weightless ones, such as the Bayes posterior, on the CPU), the trained learners given
    on theirs; the evaluation tasks are drawn on the CPU.
    """
    device = _device(device)
    if jobs > 1:
        names = [spec.name for spec in experiment.learners] + [spec.name for spec in experiment.baselines]
        log(f"evaluating {len(names)} learners and baselines in {min(jobs, len(names))} processes")
        _in_processes(
            _evaluate_in_process, run, names, jobs, log, "evaluated", progress=progress, device=device
        )
    evaluator = _Evaluator(experiment, run, log, progress, device)
    family = experiment.family
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "preset": experiment.name,
        "description": experiment.description,
        "family": repr(family),
        "task": {"categorical": "classification", "gaussian": "regression"}.get(
            family.likelihood, family.likelihood
        ),
        "metric": family_likelihood(family).main_metric,
        "evaluation": {k: v for k, v in asdict(experiment.evaluation).items() if k != "ood"},
        "ood": {name: repr(shifted) for name, shifted in experiment.ood_families.items()},
        "learners": {},
        "reference": None,
    }
    for spec in experiment.learners:
        results["learners"][spec.name] = evaluator.learner(spec, trained[spec.name])
    for spec in experiment.baselines:
        if spec.is_reference:
            results["reference"] = evaluator.reference(spec)
        else:
            results["learners"][spec.name] = evaluator.baseline(spec)
    if family.likelihood == "samples":
        results["samples"] = evaluator.samples(trained)
    add_reference_ratios(results)
    results["provenance"] = provenance(experiment, results, command, started, device)
    write_text_atomic(run.results_path, json.dumps(results, indent=1))
    return results


def _device(device: str | torch.device | None) -> torch.device:
    """The run's device, checked (the CPU when not given)."""
    return torch.device("cpu") if device is None else check_device("device", device)


def git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit of the git checkout ``folder``'s files are tracked in, and whether it has changes.

    ``None`` when there is no such checkout (an installed package, no git): nothing to record.
    """

    def git(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(folder), *arguments], capture_output=True, text=True, timeout=10, check=True
        )

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # a checkout of this package, not one around it
        commit = git("rev-parse", "HEAD").stdout.strip()
        changed = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": changed}


def provenance(
    experiment: Experiment,
    results: dict[str, Any],
    command: Sequence[str],
    started: float | None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """How the results were made: command, versions, commit, device, seeds, and the CPU and wall
    time spent.

    Times are sums over learners and baselines of their meta-training and evaluation (cached
    evaluations count what they took when computed; entries may have run in parallel), and the
    wall time of this command.
    """
    entries = [*results["learners"].values(), *([results["reference"]] if results["reference"] else [])]

    def total(key: str) -> float:
        return round(sum(entry.get(key, 0.0) for entry in entries), 3)

    times = {
        "train_cpu_seconds": total("train_cpu_seconds"),
        "train_wall_seconds": total("train_seconds"),
        "evaluation_cpu_seconds": total("evaluation_cpu_seconds"),
        "evaluation_wall_seconds": total("evaluation_seconds"),
    }
    return {
        "command": shlex.join(command) if command else None,
        "amortized": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_commit(Path(__file__).resolve().parent),
        "device": str(device or torch.device("cpu")),
        "seeds": {
            "train": {spec.name: spec.train.seed for spec in experiment.learners},
            "evaluation": experiment.evaluation.seed,
        },
        **times,
        "cpu_seconds": round(times["train_cpu_seconds"] + times["evaluation_cpu_seconds"], 3),
        "wall_seconds": round(times["train_wall_seconds"] + times["evaluation_wall_seconds"], 3),
        "command_wall_seconds": round(time.time() - started, 3) if started is not None else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
