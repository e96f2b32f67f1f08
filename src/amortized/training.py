"""Meta-training: fit a learner's rule over a task family so that adaptation works on new tasks.

Each iteration draws a batch of tasks, rolls the learner over ``k`` mini-batches of each task's
training split and averages the query loss after every step (``final``: after the last one).
Objectives:

- ``greedy``: the state is detached between steps, so each step learns to improve on whatever state
  it is given. States are rolled out without a graph, then the one-step losses of ``chunk`` steps
  at a time are computed in one batched forward: memory does not grow with ``k``.
- ``truncated``: gradients cross ``truncation`` consecutive steps (windows), then the state is cut.
- ``full``: gradients cross every step (MAML's meta-gradient through its inner loop).
- ``final``: gradients cross every step and only the last step's query loss counts. As ``k`` is
  drawn per iteration every horizon is still trained, a long one as much as a short one, and the
  query loss (most of a step's cost for a generator) is computed once per iteration.

Every iteration's randomness comes from ``(seed, iteration)``, so a resumed run is identical to an
uninterrupted one.

In a process group of several ranks (``torchrun``), training is data parallel: each rank trains on its
slice of every iteration's global batch of ``tasks_per_batch`` tasks, DDP averages the gradients, and
rank 0 alone evaluates and writes; see :mod:`amortized.distributed`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from amortized.checkpoints import (
    checkpoint_identity,
    load_checkpoint,
    previous_path,
    save_checkpoint,
    write_text_atomic,
)
from amortized.distributed import Replicas
from amortized.errors import ConfigError, NonFiniteError, ShapeError
from amortized.folders import lock_folder
from amortized.learners.base import Learner, adapt, minibatches
from amortized.learners.state import State
from amortized.progress import Progress
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import (
    MAX_MAGNITUDE,
    check_choice,
    check_device,
    check_int_or_range,
    check_keys,
    check_positive_int,
    check_real,
    check_seed,
)

OBJECTIVES = ("greedy", "truncated", "full", "final")
RESUME_KEYS = ("weights", "optimizer", "iteration", "history", "train_seconds")
"""What training reads from its checkpoint to continue."""
LOSS_SCALES = ("linear", "log")
T = TypeVar("T")


@dataclass
class TrainConfig:
    """Meta-training settings, as plain data (saved in checkpoints and run folders)."""

    iterations: int = 1000
    tasks_per_batch: int = 16
    batch_size: int | tuple[int, int] = 32
    """Points per mini-batch; a pair ``(low, high)`` draws it log-uniformly per iteration (one-shot
    learners trained on context sizes from ``low`` to ``high``)."""
    num_steps: int | tuple[int, int] = 8
    """Steps per task; a pair ``(low, high)`` draws ``k`` log-uniformly per iteration."""
    num_train: int | None = None
    """Training points per task; ``None`` is ``k * batch_size`` (every step sees new points)."""
    num_query: int = 64
    objective: str = "greedy"
    loss_scale: str = "linear"
    """``"log"`` trains on the log of each task's query loss, so late steps, whose losses are small,
    count as much as early ones (their relative improvement is what is trained)."""
    truncation: int = 4
    chunk: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_tasks: int = 64
    checkpoint_every: int = 100
    on_nonfinite: str = "raise"
    seed: int = 0

    def __post_init__(self) -> None:
        for option in fields(self):  # numpy scalars as Python numbers, which checkpoints can hold
            value = getattr(self, option.name)
            if isinstance(value, np.generic):
                setattr(self, option.name, value.item())
        for name in ("iterations", "tasks_per_batch", "num_query", "truncation", "chunk"):
            check_positive_int(name, getattr(self, name))
        self.batch_size = check_int_or_range("batch_size", self.batch_size)
        for name in ("eval_every", "checkpoint_every", "warmup", "eval_tasks"):
            check_positive_int(name, getattr(self, name), allow_zero=True)
        check_seed("seed", self.seed)
        self.num_steps = check_int_or_range("num_steps", self.num_steps)
        if self.num_train is not None:
            check_positive_int("num_train", self.num_train)
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("loss_scale", self.loss_scale, LOSS_SCALES)
        check_choice("on_nonfinite", self.on_nonfinite, ("raise", "skip"))
        check_real("lr", self.lr, positive=True, high=MAX_MAGNITUDE)
        check_real("grad_clip", self.grad_clip, positive=True)
        check_real("weight_decay", self.weight_decay, low=0)

    @property
    def max_steps(self) -> int:
        return self.num_steps[1] if isinstance(self.num_steps, tuple) else self.num_steps

    @property
    def max_batch_size(self) -> int:
        return self.batch_size[1] if isinstance(self.batch_size, tuple) else self.batch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from plain data, naming any unknown key and listing the valid ones."""
        return cls(**check_keys("train", values, [f.name for f in fields(cls)]))


@dataclass
class TrainResult:
    """What meta-training produced: the history of logged metrics and the time it took."""

    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    """Wall time of the meta-training iterations."""
    iterations: int = 0
    checkpoint: Path | None = None
    train_cpu_seconds: float = 0.0
    """CPU time of this process's meta-training iterations (all its threads)."""


def iteration_generator(seed: int, iteration: int) -> torch.Generator:
    """The generator for one iteration's tasks and mini-batch order (seeds wrap at torch's 2**64)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + iteration) % 2**64)


def draw_num_steps(num_steps: int | tuple[int, int], generator: torch.Generator) -> int:
    """``k`` (or a batch size) for one iteration: fixed, or log-uniform over the range."""
    if isinstance(num_steps, int):
        return num_steps
    low, high = num_steps
    u = float(torch.rand((), generator=generator))
    return min(high, int(math.exp(math.log(low) + u * (math.log(high + 1) - math.log(low)))))


@dataclass(frozen=True)
class _QueryLoss:
    """The per-task query loss of one task batch, on the objective's scale (``loss_scale``)."""

    tasks: TaskBatch
    loss_scale: str

    def __call__(self, learner: Learner, state: State, repeats: int = 1) -> Tensor:
        """``[tasks * repeats]`` for a state stacked over ``repeats`` copies of the tasks."""
        x_query = self.tasks.x_query.repeat(repeats, 1, 1)
        y_query = self.tasks.y_query.repeat(repeats, *([1] * (self.tasks.y_query.dim() - 1)))
        loss = learner.query_loss(state, x_query, y_query)
        return torch.log(loss + 1e-6) if self.loss_scale == "log" else loss


def _step_loss(
    learner: Learner, state: State, x: Tensor, y: Tensor, query_loss: _QueryLoss, repeats: int
) -> Tensor:
    """Per-task query loss ``[tasks * repeats]`` after one step from a state stacked over ``repeats``."""
    return query_loss(learner, learner._step(state, x, y), repeats)


def _window_loss(
    learner: Learner,
    state: State,
    batches: list,
    query_loss: _QueryLoss,
    num_steps: int,
    last_only: bool = False,
) -> tuple[Tensor, State]:
    """Summed query losses (each over ``num_steps``) of the steps from ``state``, or the last step's
    alone (``last_only``), and the last state."""
    total = None
    for index, (batch_x, batch_y) in enumerate(batches):
        state = learner._step(state, batch_x, batch_y)
        if last_only and index < len(batches) - 1:
            continue
        loss = query_loss(learner, state).mean() / num_steps
        total = loss if total is None else total + loss
    return total, state


Forward = Callable[..., Any]
"""How a part of the objective is computed: ``forward(compute, *args, last=...)`` calls ``compute(*args)``
(:meth:`~amortized.distributed.Replicas.forward` does it through DDP, syncing on the ``last`` part)."""


def _direct(compute: Callable[..., T], *args: Any, last: bool) -> T:
    """``compute(*args)``: the forward of a single process."""
    return compute(*args)


def _greedy(
    learner: Learner, tasks: TaskBatch, batches: list, chunk: int, query_loss: _QueryLoss, forward: Forward
) -> Iterator[tuple[Tensor, bool]]:
    """Greedy objective: each step's loss from the detached previous state, ``chunk`` steps per part."""
    num_steps = len(batches)
    states = [learner.init_state(tasks.num_tasks, tasks.x_query)]
    with torch.no_grad():
        for batch_x, batch_y in batches[:-1]:
            states.append(learner._step(states[-1].detach(), batch_x, batch_y))
    if len({batch_x.shape[1] for batch_x, _ in batches}) > 1:
        chunk = 1
    for start in range(0, num_steps, chunk):
        group = range(start, min(start + chunk, num_steps))
        last = group.stop == num_steps
        losses = forward(
            _step_loss,
            learner,
            State.cat([states[i] if i == 0 else states[i].detach() for i in group]),
            torch.cat([batches[i][0] for i in group]),
            torch.cat([batches[i][1] for i in group]),
            query_loss,
            len(group),
            last=last,
        )
        yield losses.sum() / (tasks.num_tasks * num_steps), last


def _windowed(
    learner: Learner,
    tasks: TaskBatch,
    batches: list,
    window: int,
    query_loss: _QueryLoss,
    forward: Forward,
    last_only: bool = False,
) -> Iterator[tuple[Tensor, bool]]:
    """Gradients through ``window`` consecutive steps, the state cut between windows: one part each.
    ``last_only`` (one window): the last step's query loss alone."""
    num_steps = len(batches)
    state = learner.init_state(tasks.num_tasks, tasks.x_query)
    for start in range(0, num_steps, window):
        last = start + window >= num_steps
        loss, state = forward(
            _window_loss,
            learner,
            state.detach() if start else state,
            batches[start : start + window],
            query_loss,
            1 if last_only else num_steps,
            last_only,
            last=last,
        )
        yield loss, last


def loss_parts(
    learner: Learner,
    tasks: TaskBatch,
    batches: list[tuple[Tensor, Tensor]],
    *,
    objective: str = "greedy",
    truncation: int = 4,
    chunk: int = 8,
    loss_scale: str = "linear",
    forward: Forward = _direct,
) -> Iterator[tuple[Tensor, bool]]:
    """One task batch's meta-objective as parts ``(loss, last)`` to backpropagate one after another.

    The objective is the query loss after every step over ``batches``, averaged over steps and tasks
    (the parts sum to it), with gradients crossing steps as ``objective`` says (see the module
    docstring); ``last`` marks the final part, whose backward syncs a distributed run. The
    mini-batches and query points are checked here, once (cast to the learner's dtype and moved to
    its device); the steps then run unchecked. Bad options are refused when it is called.
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("loss_scale", loss_scale, LOSS_SCALES)
    batches = [learner.check_data("batch", x, y) for x, y in batches]
    x_query, y_query = learner.check_data("query", tasks.x_query, tasks.y_query)
    for x, _ in batches:
        if x.shape[0] != tasks.num_tasks:
            raise ShapeError(
                f"a mini-batch holds {x.shape[0]} tasks but tasks {tasks.num_tasks}; they must match"
            )
    tasks = replace(tasks, x_query=x_query, y_query=y_query)
    query_loss = _QueryLoss(tasks, loss_scale)
    if objective == "greedy":
        return _greedy(learner, tasks, batches, chunk, query_loss, forward)
    window = truncation if objective == "truncated" else len(batches)
    return _windowed(learner, tasks, batches, window, query_loss, forward, objective == "final")


def _backward(loss: Tensor, replicas: Replicas | None, last: bool) -> float:
    """Backpropagate one part of the objective (``last``: the iteration's last) and return its value.

    A part that reaches no trainable parameter (a window of first-order MAML with a fixed step size
    after the first) has no gradient and is only counted. Alone, a non-finite loss stops the
    iteration at once. The ranks of a distributed run all finish
    the iteration's backward passes (a rank that stopped early would leave the others waiting in
    DDP's all-reduce) and ``train`` checks their averaged loss.
    """
    if replicas is None or not replicas.distributed:
        _check_finite(loss)
        if loss.requires_grad:
            loss.backward()
    else:
        replicas.backward(loss, last=last)
    return loss.item()


def meta_loss(
    learner: Learner,
    tasks: TaskBatch,
    batches: list[tuple[Tensor, Tensor]],
    *,
    objective: str = "greedy",
    truncation: int = 4,
    chunk: int = 8,
    loss_scale: str = "linear",
    replicas: Replicas | None = None,
) -> float:
    """Backpropagate one task batch's meta-objective into the learner's ``.grad``, part by part
    (:func:`loss_parts`), and return its value: one iteration of :func:`train` before the optimizer
    step. With ``replicas`` of a distributed run, ``tasks`` is this rank's slice, each part runs
    through DDP and the last one's backward averages the gradients across ranks.
    """
    forward = _direct if replicas is None else replicas.forward
    options = {"objective": objective, "truncation": truncation, "chunk": chunk, "loss_scale": loss_scale}
    parts = loss_parts(learner, tasks, batches, **options, forward=forward)
    return sum(_backward(loss, replicas, last) for loss, last in parts)


class _NonFiniteLoss(Exception):
    pass


def _check_finite(loss: Tensor) -> None:
    if not torch.isfinite(loss):
        raise _NonFiniteLoss


def _learning_rate(config: TrainConfig, iteration: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if iteration < config.warmup:
        return config.lr * (iteration + 1) / config.warmup
    progress = (iteration - config.warmup) / max(1, config.iterations - config.warmup)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def evaluate_tasks(
    learner: Learner, tasks: TaskBatch, *, batch_size: int, num_steps: int, seed: int
) -> dict[str, float]:
    """Mean query loss and metrics after ``num_steps`` steps of adaptation on fixed tasks."""
    tasks = learner.place(tasks)
    state = adapt(
        learner,
        tasks.x_train,
        tasks.y_train,
        batch_size=batch_size,
        num_steps=num_steps,
        query_x=tasks.x_query,
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        prediction = learner.predict(state, tasks.x_query)
        metrics = learner.likelihood.metrics(prediction, tasks.y_query, tasks.f_query)
        metrics["loss"] = learner.likelihood.loss(prediction, tasks.y_query)
    return {name: float(value.mean()) for name, value in metrics.items()}


def run_description(learner: Learner, family: TaskFamily, config: TrainConfig) -> dict[str, Any]:
    """What a training checkpoint is of (its learner, settings and task family), as plain data.

    Saved in every checkpoint; its :func:`~amortized.checkpoints.checkpoint_identity` lets resume use
    the previous checkpoint when the last one is damaged.
    """
    return {"learner": learner.describe(), "train_config": asdict(config), "family": repr(family)}


def train(
    learner: Learner,
    family: TaskFamily,
    config: TrainConfig | None = None,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | str = True,
    threads: int | None = 1,
    device: str | torch.device | None = None,
    tensorboard: bool = False,
    **options: Any,
) -> TrainResult:
    """Meta-train ``learner`` on tasks from ``family``; options are :class:`TrainConfig` fields.

    With ``out_dir``, writes ``checkpoint.pt`` every ``checkpoint_every`` iterations and at the end,
    and ``metrics.jsonl``; ``resume=True`` continues from the checkpoint there, giving the same
    weights and metrics as an uninterrupted run. ``out_dir`` is locked while training: another
    process writing into it is refused (:class:`~amortized.errors.FolderLockedError`).
    ``tensorboard=True`` also writes the scalars of ``metrics.jsonl`` (``loss``, ``lr``, ``eval_*``...,
    by iteration) as TensorBoard events in ``out_dir/tensorboard`` (``tensorboard --logdir
    out_dir``); it needs the ``tensorboard`` package (``pip install tensorboard``).

    ``progress`` (on by default; a string is the name to show, ``False`` hides it) shows how far
    training has got: a bar on a terminal, elsewhere (a log file, a pipe) a line at every tenth of
    the iterations and at least every 30 seconds (see :mod:`amortized.progress`).

    ``threads`` is torch's CPU threads while training (see :func:`torch_threads`): 1 by default, as
    on the command line, since the models are small and threads that compete for busy cores slow
    torch down many times over; ``None`` keeps torch's setting (``torch.set_num_threads``), e.g.
    for a large model on an idle machine.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) moves the learner there first; by
    default it trains where its weights are. Tasks are sampled on the CPU (the same for every device)
    and moved to the learner's device once per iteration; the checkpoint is device-free.

    In a process group of several ranks (see :mod:`amortized.distributed`), ``tasks_per_batch`` is
    the global batch, split evenly over the ranks; rank 0 alone evaluates, shows progress and writes
    ``out_dir``, and the checkpoint resumes on any number of ranks.
    """
    if config is None:
        config = TrainConfig.from_dict(options)
    elif options:
        config = TrainConfig.from_dict({**asdict(config), **options})
    if threads is not None:
        threads = check_positive_int("threads", threads)
    _check_compatible(learner, family)
    if device is not None:
        learner.to(check_device("device", device))
    out = Path(out_dir) if out_dir is not None else None
    if tensorboard and out is None:
        raise ConfigError("tensorboard=True needs out_dir: the events are written in out_dir/tensorboard")
    replicas = Replicas(learner)
    replicas.check_divides(config.tasks_per_batch)
    with ExitStack() as held:
        if out is not None:
            replicas.from_main(lambda: held.enter_context(lock_folder(out)))
        curves = None
        if tensorboard and replicas.is_main:
            curves = _TensorBoardCurves(out / "tensorboard")
            held.callback(curves.close)
        held.enter_context(torch_threads(threads))
        return _train(learner, family, config, replicas, out, resume=resume, progress=progress, curves=curves)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run on ``count`` torch CPU threads, restoring torch's setting after; ``None`` keeps it.

    Small models run fastest on one thread when cores are shared: an adaptation step of a few dozen
    tokens took 5 ms on one thread and 50-200 ms on two that waited on each other (2 busy cores).
    """
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _TensorBoardCurves:
    """The records of ``metrics.jsonl`` as TensorBoard scalars in ``folder``, by iteration.

    Made before training, so that a missing ``tensorboard`` package stops it at once. Each training
    session writes the whole history again (as ``metrics.jsonl`` is rewritten on resume), in place
    of the event files already in ``folder``: a resumed run shows each iteration once.
    """

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "tensorboard=True needs the tensorboard package: pip install tensorboard"
            ) from None
        self._folder, self._new_writer = folder, SummaryWriter
        self._writer: Any = None

    def restart(self, history: list[dict[str, Any]]) -> None:
        """Replace the folder's events with those of ``history``, the records kept so far."""
        self._folder.mkdir(parents=True, exist_ok=True)
        for events in self._folder.glob("events.out.tfevents.*"):
            events.unlink()
        self._writer = self._new_writer(str(self._folder))
        for record in history:
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        """Every number of ``record`` but its iteration, as a scalar at that iteration."""
        for name, value in record.items():
            if name != "iteration":
                self._writer.add_scalar(name, value, record["iteration"])

    def close(self) -> None:
        """Write what is pending and close the event file, if one was opened."""
        if self._writer is not None:
            self._writer.close()


@dataclass
class _Tally:
    """How far meta-training got: iterations done, their records, and the wall and CPU seconds spent."""

    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


class _RunFiles:
    """What one training run keeps in ``out``: ``checkpoint.pt``, ``metrics.jsonl`` and, if asked,
    TensorBoard events. Only rank 0 writes (other ranks, and runs without ``out``, write nothing)."""

    def __init__(
        self, out: Path | None, run: dict[str, Any], writes: bool, curves: _TensorBoardCurves | None
    ) -> None:
        self.checkpoint = out / "checkpoint.pt" if out is not None else None
        self.metrics = out / "metrics.jsonl" if out is not None else None
        self.run, self.writes, self.curves = run, writes and out is not None, curves

    def resume_from(self) -> dict[str, Any] | None:
        """The saved checkpoint to continue from (``None`` if there is none)."""
        if self.checkpoint is None or not (
            self.checkpoint.exists() or previous_path(self.checkpoint).exists()
        ):
            return None
        return load_checkpoint(self.checkpoint, identity=checkpoint_identity(self.run), keys=RESUME_KEYS)

    def restart(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the records with those kept so far (a resumed run logs each iteration once)."""
        if self.writes:
            self.metrics.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.metrics, "".join(json.dumps(record) + "\n" for record in history))
        if self.curves is not None:
            self.curves.restart(history)

    def append(self, record: dict[str, Any]) -> None:
        if self.writes:
            with open(self.metrics, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.curves is not None:
            self.curves.add(record)

    def save(self, learner: Learner, optimizer: torch.optim.Optimizer, tally: _Tally) -> None:
        """Checkpoint the weights and optimizer after ``tally.iteration`` iterations, atomically."""
        if not self.writes:
            return
        for name, value in learner.state_dict().items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise NonFiniteError(
                    f"refusing to save non-finite weights ({name}) at iteration {tally.iteration}"
                )
        save_checkpoint(
            self.checkpoint,
            {
                **self.run,
                "weights": learner.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": tally.iteration,
                "history": tally.history,
                "train_seconds": tally.seconds,
                "train_cpu_seconds": tally.cpu_seconds,
            },
        )


def _draw(family: TaskFamily, config: TrainConfig, iteration: int) -> tuple[int, TaskBatch, list]:
    """Iteration ``iteration``'s number of steps, global task batch and mini-batches (seeded by it)."""
    generator = iteration_generator(config.seed, iteration)
    num_steps = draw_num_steps(config.num_steps, generator)
    batch_size = config.batch_size
    if isinstance(batch_size, tuple):
        batch_size = draw_num_steps(batch_size, generator)
    num_train = config.num_train or num_steps * batch_size
    tasks = family.sample(config.tasks_per_batch, num_train, config.num_query, generator)
    return num_steps, tasks, list(minibatches(tasks.x_train, tasks.y_train, batch_size, num_steps, generator))


def _evaluation_tasks(family: TaskFamily, config: TrainConfig) -> TaskBatch:
    """The fixed held-out tasks of the periodic evaluation (their own seed, away from training's)."""
    num_train = config.num_train or config.max_steps * config.max_batch_size
    generator = torch.Generator().manual_seed(((config.seed + 1) * 1_000_003 - 1) % 2**64)
    return family.sample(config.eval_tasks, num_train, config.num_query, generator)


def _train(
    learner: Learner,
    family: TaskFamily,
    config: TrainConfig,
    replicas: Replicas,
    out: Path | None,
    *,
    resume: bool,
    progress: bool | str,
    curves: _TensorBoardCurves | None,
) -> TrainResult:
    """:func:`train` once its arguments are checked, ``out``, if any, is locked and threads are set."""
    optimizer = torch.optim.AdamW(learner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    files = _RunFiles(out, run_description(learner, family, config), replicas.is_main, curves)
    tally = _Tally()
    payload = replicas.from_main(files.resume_from) if resume else None
    if payload is not None:
        learner.load_state_dict(payload["weights"])
        optimizer.load_state_dict(payload["optimizer"])
        tally = _Tally(
            payload["iteration"],
            payload["history"],
            payload["train_seconds"],
            payload.get("train_cpu_seconds", 0.0),
        )
    files.restart(tally.history)
    evaluates = config.eval_every and config.eval_tasks and replicas.is_main
    eval_tasks = _evaluation_tasks(family, config) if evaluates else None  # evaluate_tasks places them
    start = saved = tally.iteration
    shown = Progress(
        progress if isinstance(progress, str) else type(learner).__name__,
        "meta-training",
        config.iterations,
        initial=start,
        unit="iterations",
        enabled=bool(progress) and replicas.is_main,
    )
    skipped, stepping = 0, False
    learner.train()
    try:
        for iteration in range(start, config.iterations):
            began, began_cpu = time.perf_counter(), time.process_time()
            num_steps, tasks, batches = _draw(family, config, iteration)
            tasks, batches = replicas.shard(tasks, batches)
            lr = _learning_rate(config, iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            try:
                with replicas.guard(f"meta-training iteration {iteration + 1}"):
                    loss = meta_loss(
                        learner,
                        tasks,
                        batches,
                        objective=config.objective,
                        truncation=config.truncation,
                        chunk=config.chunk,
                        loss_scale=config.loss_scale,
                        replicas=replicas,
                    )
                    loss = replicas.mean(loss)
                if not math.isfinite(loss):
                    raise _NonFiniteLoss
                grad_norm = torch.nn.utils.clip_grad_norm_(learner.parameters(), config.grad_clip)
                if not torch.isfinite(grad_norm):
                    raise _NonFiniteLoss
            except _NonFiniteLoss:
                optimizer.zero_grad(set_to_none=True)
                if config.on_nonfinite == "skip":
                    skipped += 1
                    continue
                last = (
                    f"the last good checkpoint is {files.checkpoint}" if files.checkpoint else "no checkpoint"
                )
                raise NonFiniteError(
                    f"non-finite meta-training loss at iteration {iteration}; {last} "
                    "(lower lr, or set on_nonfinite='skip')"
                ) from None
            stepping = True
            optimizer.step()
            tally.seconds += time.perf_counter() - began
            tally.cpu_seconds += time.process_time() - began_cpu
            record = {"iteration": iteration + 1, "loss": loss, "lr": lr, "num_steps": num_steps}
            record["seconds"] = round(tally.seconds, 3)
            if skipped:
                record["skipped"] = skipped
            tally.history.append(record)
            tally.iteration = done = iteration + 1
            stepping = False
            if eval_tasks is not None and (done % config.eval_every == 0 or done == config.iterations):
                learner.eval()
                evaluation = evaluate_tasks(
                    learner,
                    eval_tasks,
                    batch_size=config.max_batch_size,
                    num_steps=config.max_steps,
                    seed=config.seed + 1,
                )
                learner.train()
                record.update({f"eval_{name}": value for name, value in evaluation.items()})
            files.append(record)
            shown.update(1, note=f"loss {loss:.4f}")
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                files.save(learner, optimizer, tally)
                saved = done
    except KeyboardInterrupt:
        if not stepping and tally.iteration > saved:
            files.save(learner, optimizer, tally)  # Ctrl-C keeps every finished iteration; --resume goes on
        raise
    shown.close()
    learner.eval()
    final_saved = config.checkpoint_every and config.iterations % config.checkpoint_every == 0
    tally.iteration = config.iterations  # skipped iterations count as done: the run is finished
    if start < config.iterations and not final_saved:
        files.save(learner, optimizer, tally)
    return TrainResult(tally.history, tally.seconds, config.iterations, files.checkpoint, tally.cpu_seconds)


def _check_compatible(learner: Learner, family: TaskFamily) -> None:
    """The learner must match the family's input width, output width and kind of task."""
    if not isinstance(learner, Learner):
        raise ConfigError(f"learner must be an amortized Learner, got {type(learner).__name__}")
    if not isinstance(family, TaskFamily):
        raise ConfigError(f"family must be an amortized TaskFamily, got {type(family).__name__}")
    if learner.input_dim != family.input_dim:
        raise ConfigError(
            f"learner input width {learner.input_dim} does not match the family's {family.input_dim}"
        )
    if learner.output_dim != family.output_dim or (learner.num_classes is None) == family.is_classification:
        kind = "classification" if family.is_classification else "regression"
        raise ConfigError(
            f"learner ({learner.task}, {learner.output_dim} outputs) does not fit the family "
            f"({kind}, {family.output_dim} outputs)"
        )
    if not any(p.requires_grad for p in learner.parameters()):
        raise ConfigError(f"{type(learner).__name__} has nothing to meta-train")
