"""The evaluation protocol: curves over steps ``k`` and dataset size ``N``, in and out of distribution.

Every learner is scored on the same tasks and reads the same mini-batch sequence (one generator seed
per evaluation), so differences between learners are differences between learners, not between
draws. Metrics are means over tasks with their standard errors. The step curve fixes the number of
training points per task, so ``k`` beyond one pass re-reads the data; the size curve reads ``N``
points in one pass at a fixed mini-batch size. A one-shot learner reads, in one step, the points an
iterative learner has read after ``k`` steps (or the whole data set, for the size curve).

The cost curve measures wall time and peak tensor memory of one adaptation as ``N`` grows: the
memory of an iterative learner is bounded by its mini-batch, a one-shot learner's grows with ``N``.
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from amortized.errors import ConfigError
from amortized.learners.base import Learner, last_state, minibatches, refinements
from amortized.learners.baselines import tune_learning_rate
from amortized.learners.state import State
from amortized.models.likelihoods import Categorical, Gaussian, likelihood
from amortized.progress import Progress
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import check_choice, check_int_list, check_keys, check_positive_int, check_seed

TUNE_SEED_OFFSET = 100_003
"""Learning rates are tuned on tasks drawn from ``seed + TUNE_SEED_OFFSET``, never the evaluation tasks."""


@dataclass
class EvaluationConfig:
    """How learners are evaluated (the ``[evaluation]`` table of a preset)."""

    steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128])
    """Numbers of adaptation steps ``k`` for the step curve; include some beyond the trained ones."""
    sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512, 1024])
    """Training-set sizes ``N`` for the size curve (one pass at ``batch_size``)."""
    batch_size: int = 32
    num_train: int = 512
    """Training points per task for the step curve; ``k > num_train / batch_size`` re-reads them."""
    num_query: int = 128
    num_tasks: int = 256
    seed: int = 987_654_321
    """Seeds the evaluation tasks and mini-batch order; far from the seeds training draws tasks from."""
    tune_tasks: int = 64
    """Tasks (drawn apart from the evaluation tasks) on which baseline learning rates are tuned."""
    cost_sizes: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    cost_tasks: int = 8
    ood: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named out-of-distribution settings, each a table of task-family overrides."""

    def __post_init__(self) -> None:
        self.steps = check_int_list("evaluation.steps", self.steps)
        self.sizes = check_int_list("evaluation.sizes", self.sizes)
        self.cost_sizes = check_int_list("evaluation.cost_sizes", self.cost_sizes)
        for name in ("batch_size", "num_train", "num_query", "num_tasks", "tune_tasks", "cost_tasks"):
            check_positive_int(f"evaluation.{name}", getattr(self, name))
        check_seed("evaluation.seed", self.seed)
        if not isinstance(self.ood, dict) or not all(isinstance(v, dict) for v in self.ood.values()):
            raise ConfigError(f"evaluation.ood must map names to tables of family options, got {self.ood!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationConfig:
        """Build from plain data, naming any unknown key and listing the valid ones."""
        return cls(**check_keys("evaluation", values, [f.name for f in fields(cls)]))


Likelihood = Gaussian | Categorical
TUNE_MODES = ("per_k", "once")
"""How a baseline's learning rate is tuned: for every ``k`` (and ``N``), or once for the largest."""


def family_likelihood(family: TaskFamily) -> Likelihood:
    """The likelihood metrics are computed with: the family's own noise, the same for every learner."""
    return likelihood(family.likelihood, family.noise)


def summarize(metrics: dict[str, Tensor]) -> dict[str, float]:
    """Mean over tasks and its standard error, ``<metric>`` and ``<metric>_stderr``, per metric."""
    out: dict[str, float] = {}
    for name, values in metrics.items():
        values = values.double()
        out[name] = float(values.mean())
        count = values.numel()
        out[f"{name}_stderr"] = float(values.std() / math.sqrt(count)) if count > 1 else 0.0
    return out


def _score(learner: Learner, state: State, tasks: TaskBatch, metrics_of: Likelihood) -> dict[str, float]:
    prediction = learner.predict(state, tasks.x_query)
    return summarize(metrics_of.metrics(prediction, tasks.y_query, tasks.f_query))


def _first_pass(x: Tensor, y: Tensor, batch_size: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """The mini-batches of the first pass of the evaluation sequence (what iterative learners read first)."""
    return list(minibatches(x, y, batch_size, None, torch.Generator().manual_seed(seed)))


def _checked(learner: Learner, tasks: TaskBatch) -> TaskBatch:
    """``tasks`` on the learner's device, their training points and query inputs checked once."""
    tasks = learner.place(tasks)
    x, y = learner.check_data("train", tasks.x_train, tasks.y_train)
    return replace(tasks, x_train=x, y_train=y, x_query=learner.check_inputs("query_x", tasks.x_query))


def _states(learner: Learner, query_x: Tensor, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[State]:
    """The states of an adaptation over checked ``batches`` (not checked again), for tasks whose
    query inputs are ``query_x``."""
    return refinements(learner, learner.init_state(len(query_x), query_x), batches)


def _one_step(learner: Learner, tasks: TaskBatch, x: Tensor, y: Tensor) -> tuple[State, float]:
    began = time.perf_counter()
    state = last_state(_states(learner, tasks.x_query, [(x, y)]))
    return state, time.perf_counter() - began


def step_curve(
    learner: Learner,
    tasks: TaskBatch,
    *,
    steps: Sequence[int],
    batch_size: int,
    seed: int,
    one_shot: bool = False,
    metrics_of: Likelihood | None = None,
) -> list[dict[str, float]]:
    """Metrics after each ``k`` in ``steps`` of one adaptation over the evaluation sequence.

    The sequence is ``minibatches(..., batch_size, generator seeded with seed)``: passes over each
    task's training points, reshuffled per pass. A one-shot learner takes one step on the points the
    first ``k`` mini-batches hold (all points once ``k`` covers a pass). ``seconds`` is the wall time
    of the adaptation up to ``k`` for the whole batch of tasks.
    """
    metrics_of = metrics_of or learner.likelihood
    tasks = _checked(learner, tasks)
    x, y = tasks.x_train, tasks.y_train
    steps = sorted(steps)
    points: list[dict[str, float]] = []
    with torch.no_grad():
        if one_shot:
            batches = _first_pass(x, y, batch_size, seed)
            done: dict[int, dict[str, float]] = {}
            for k in steps:
                used = min(k, len(batches))
                if used not in done:
                    batch_x = torch.cat([b[0] for b in batches[:used]], 1)
                    batch_y = torch.cat([b[1] for b in batches[:used]], 1)
                    state, seconds = _one_step(learner, tasks, batch_x, batch_y)
                    done[used] = {
                        "points_seen": batch_x.shape[1],
                        **_score(learner, state, tasks, metrics_of),
                    }
                    done[used]["seconds"] = seconds
                points.append({"k": k, **done[used]})
            return points
        wanted, seconds = set(steps), 0.0
        order = torch.Generator().manual_seed(seed)
        states = _states(learner, tasks.x_query, minibatches(x, y, batch_size, steps[-1], order))
        for k in range(1, steps[-1] + 1):
            began = time.perf_counter()
            state = next(states)
            seconds += time.perf_counter() - began
            if k in wanted:
                seen = int(state.num_seen[0])
                points.append({"k": k, "points_seen": seen, **_score(learner, state, tasks, metrics_of)})
                points[-1]["seconds"] = seconds
    return points


def size_curve(
    learner: Learner,
    tasks: TaskBatch,
    *,
    sizes: Sequence[int],
    batch_size: int,
    seed: int,
    one_shot: bool = False,
    metrics_of: Likelihood | None = None,
) -> list[dict[str, float]]:
    """Metrics after one pass over the first ``N`` training points of each task, for ``N`` in ``sizes``.

    Data sets are nested (each ``N`` extends the previous one), which lowers the variance of the
    curve. Iterative learners read ``ceil(N / batch_size)`` mini-batches; one-shot learners read all
    ``N`` points in one step.
    """
    metrics_of = metrics_of or learner.likelihood
    tasks = _checked(learner, tasks)
    x, y = tasks.x_train, tasks.y_train
    if max(sizes) > x.shape[1]:
        raise ConfigError(f"size curve needs {max(sizes)} training points per task, tasks have {x.shape[1]}")
    points: list[dict[str, float]] = []
    with torch.no_grad():
        for size in sorted(sizes):
            subset_x, subset_y = x[:, :size], y[:, :size]
            if one_shot:
                state, seconds = _one_step(learner, tasks, subset_x, subset_y)
                k = 1
            else:
                order = torch.Generator().manual_seed(seed)
                began = time.perf_counter()
                state = last_state(
                    _states(learner, tasks.x_query, minibatches(subset_x, subset_y, batch_size, None, order))
                )
                k = int(state.num_steps[0])
                seconds = time.perf_counter() - began
            point = {"n": size, "k": k, "points_seen": size, **_score(learner, state, tasks, metrics_of)}
            point["seconds"] = seconds
            points.append(point)
    return points


@dataclass
class TaskSuite:
    """The fixed evaluation tasks of one run: for the step curve, the size curve and each shift."""

    family: TaskFamily
    steps: TaskBatch
    sizes: TaskBatch
    ood: dict[str, tuple[TaskFamily, TaskBatch]]

    @classmethod
    def sample(
        cls, family: TaskFamily, ood_families: dict[str, TaskFamily], config: EvaluationConfig
    ) -> TaskSuite:
        """Draw every evaluation task from ``config.seed`` (the same for every learner)."""

        def draw(source: TaskFamily, num_train: int, offset: int) -> TaskBatch:
            generator = torch.Generator().manual_seed(config.seed + offset)
            return source.sample(config.num_tasks, num_train, config.num_query, generator)

        shifted = {
            name: (f, draw(f, config.num_train, 10 + i)) for i, (name, f) in enumerate(ood_families.items())
        }
        return cls(family, draw(family, config.num_train, 0), draw(family, max(config.sizes), 1), shifted)


Curves = dict[str, Any]


def learner_curves(
    learner: Learner,
    suite: TaskSuite,
    config: EvaluationConfig,
    *,
    one_shot: bool = False,
    ood_learners: dict[str, Learner] | None = None,
    progress: Progress | None = None,
) -> Curves:
    """Step, size and out-of-distribution step curves of one learner.

    ``ood_learners`` replaces the learner for a shift (the Bayes reference of a family with other
    noise is another learner). ``progress`` is told each curve as it starts.
    """
    progress = progress or Progress("", "", enabled=False)
    common = {"batch_size": config.batch_size, "seed": config.seed, "one_shot": one_shot}
    metrics_of = family_likelihood(suite.family)
    progress.expect(2 + len(suite.ood))
    progress.start(f"step curve, k up to {max(config.steps)}")
    curves: Curves = {
        "steps": step_curve(learner, suite.steps, steps=config.steps, metrics_of=metrics_of, **common)
    }
    progress.start(f"size curve, N up to {max(config.sizes)}")
    curves["size"] = size_curve(learner, suite.sizes, sizes=config.sizes, metrics_of=metrics_of, **common)
    curves["ood"] = {}
    for name, (family, tasks) in suite.ood.items():
        progress.start(f"step curve out of distribution ({name})")
        shifted = (ood_learners or {}).get(name, learner)
        curves["ood"][name] = step_curve(
            shifted, tasks, steps=config.steps, metrics_of=family_likelihood(family), **common
        )
    return curves


def baseline_curves(
    make_learner: Callable[[float], Learner],
    suite: TaskSuite,
    config: EvaluationConfig,
    *,
    grid: Sequence[float],
    tune: str = "per_k",
    tune_steps: int | None = None,
    progress: Progress | None = None,
) -> Curves:
    """Curves of a per-task optimizer whose learning rate is tuned on separate tasks.

    ``tune="per_k"`` tunes a rate for every ``k`` (and every ``N`` of the size curve), the best a
    practitioner with a validation set can do; ``"once"`` tunes one rate at ``tune_steps`` steps.
    The rates tuned on the training distribution are kept out of distribution. Each point records
    its ``lr``. ``progress`` is told each tuning and curve as it starts.
    """
    progress = progress or Progress("", "", enabled=False)
    check_choice("tune", tune, TUNE_MODES)
    common = {"batch_size": config.batch_size, "num_tasks": config.tune_tasks, "num_query": config.num_query}
    seed = config.seed + TUNE_SEED_OFFSET

    def tuned(num_steps: int, num_train: int) -> float:
        lr, _ = tune_learning_rate(
            make_learner, suite.family, grid, num_steps=num_steps, num_train=num_train, seed=seed, **common
        )
        return lr

    metrics_of = family_likelihood(suite.family)
    if tune == "once":
        progress.expect(1)
        progress.start(f"tuning the learning rate at k={tune_steps or max(config.steps)}")
        lr = tuned(tune_steps or max(config.steps), config.num_train)
        curves = learner_curves(make_learner(lr), suite, config, progress=progress)
        for point in itertools.chain(curves["steps"], curves["size"], *curves["ood"].values()):
            point["lr"] = lr
        return curves

    progress.expect(len(config.steps) + 1 + len(config.sizes))
    rates = {}
    for k in config.steps:
        progress.start(f"tuning the learning rate at k={k}")
        rates[k] = tuned(k, config.num_train)
    progress.start("step curves at the tuned rates")
    curves: Curves = {"steps": [], "size": [], "ood": {name: [] for name in suite.ood}}
    for k, lr in rates.items():
        learner = make_learner(lr)
        kwargs = {"steps": [k], "batch_size": config.batch_size, "seed": config.seed}
        curves["steps"] += [
            {**p, "lr": lr} for p in step_curve(learner, suite.steps, metrics_of=metrics_of, **kwargs)
        ]
        for name, (family, tasks) in suite.ood.items():
            points = step_curve(learner, tasks, metrics_of=family_likelihood(family), **kwargs)
            curves["ood"][name] += [{**p, "lr": lr} for p in points]
    for size in config.sizes:
        progress.start(f"tuning the learning rate and the size curve at N={size}")
        lr = tuned(-(-size // config.batch_size), size)
        points = size_curve(
            make_learner(lr),
            suite.sizes,
            sizes=[size],
            batch_size=config.batch_size,
            seed=config.seed,
            metrics_of=metrics_of,
        )
        curves["size"] += [{**p, "lr": lr} for p in points]
    return curves


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensors that torch operations create while active: an in-process memory estimate.

    Counts each new storage once (views and in-place results share their input's storage) until the
    last tensor holding it is freed. Allocator internals and memory an operation frees before
    returning are not seen, so this is a lower bound on the working memory, but a faithful one for
    comparing how memory grows with ``N``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._live: dict[int, list[int]] = {}

    def _release(self, pointer: int) -> None:
        entry = self._live.get(pointer)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[pointer]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)
        }
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            pointer = storage.data_ptr()
            if pointer == 0 or pointer in inputs:
                continue
            entry = self._live.get(pointer)
            if entry is None:
                entry = self._live[pointer] = [storage.nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(tensor, self._release, pointer)
        return out


def cost_curve(
    learner: Learner,
    family: TaskFamily,
    *,
    sizes: Sequence[int],
    batch_size: int,
    num_tasks: int,
    num_query: int,
    seed: int,
    one_shot: bool = False,
) -> list[dict[str, float]]:
    """Wall time and peak tensor memory of one adaptation (one pass, or one step) over ``N`` points.

    Both cover the learner's work (``init_state`` and every ``step``), not the data set or its
    shuffled order, which any learner holds alike. Time is measured without the memory meter (which
    slows every operation down), after a warm-up adaptation on the smallest size.
    """
    tasks = family.sample(num_tasks, max(sizes), num_query, torch.Generator().manual_seed(seed))
    x, y = learner.check_data("train", tasks.x_train, tasks.y_train)
    query_x = learner.check_inputs("query_x", tasks.x_query)
    points = []
    with torch.no_grad():
        for size in [min(sizes), *sorted(sizes)]:
            chunk = size if one_shot else min(batch_size, size)
            order = torch.Generator().manual_seed(seed)
            batches = list(minibatches(x[:, :size], y[:, :size], chunk, None, order))
            began = time.perf_counter()
            last_state(_states(learner, query_x, batches))
            seconds = time.perf_counter() - began
            with PeakTensorMemory() as meter:
                last_state(_states(learner, query_x, batches))
            points.append({"n": size, "k": len(batches), "seconds": seconds, "peak_bytes": meter.peak})
    return points[1:]


def add_reference_ratios(results: dict[str, Any]) -> None:
    """Add ``<metric>_ratio`` (learner / Bayes reference, same ``k`` or ``N``) to every curve point."""
    reference = results.get("reference")
    if not reference:
        return
    metric = results["metric"]
    ref = reference["curves"]

    def attach(points: list[dict], ref_points: list[dict], key: str) -> None:
        by_key = {p[key]: p[metric] for p in ref_points}
        for point in points:
            base = by_key.get(point[key])
            if base is not None and base > 0:
                point[f"{metric}_ratio"] = point[metric] / base

    for entry in [*results["learners"].values(), reference]:
        curves = entry["curves"]
        attach(curves["steps"], ref["steps"], "k")
        attach(curves["size"], ref["size"], "n")
        for name, points in curves.get("ood", {}).items():
            attach(points, ref.get("ood", {}).get(name, []), "k")
