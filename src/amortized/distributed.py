"""Data-parallel meta-training on torch.distributed: ranks started by ``torchrun``, gradients averaged by DDP.

How a run is split (``amortized.train`` does this by itself once a process group is initialised):

- **Tasks.** ``tasks_per_batch`` is the *global* task batch, whatever the world size. Every rank draws
  that batch and its mini-batch order from the iteration's generator ``(seed, iteration)``, exactly as
  one process would, and keeps its own slice: rank ``r`` of ``N`` trains on tasks
  ``r * T/N ... (r + 1) * T/N - 1``. Ranks train on distinct tasks, ``N`` ranks see exactly the tasks
  one process sees, and a checkpoint resumes on any world size. ``tasks_per_batch`` must be divisible
  by the world size. Each rank samples the whole batch and keeps a slice: that makes the data stream
  independent of the world size, at the cost of sampling ``N`` times (on a 2-core CPU, 7-11 ms per
  iteration for the shipped 16-task presets, against 300-400 ms for a one-process training step).
- **Gradients.** The learner is wrapped in ``DistributedDataParallel``. Learners are called through
  ``init_state``/``step``/``predict``, not ``forward``, so each part of the objective that is
  backpropagated on its own (a chunk of greedy steps, a window of truncated steps) runs as one
  forward of a small wrapper module. All but the iteration's last part run under ``no_sync`` and
  accumulate gradients locally; the last part's backward averages the accumulated gradients across
  ranks, and touches every parameter (with a zero gradient) so that DDP also averages parameters
  that only earlier parts reached, such as a learned initialisation. The average of the ranks'
  per-slice mean losses is the mean loss over the global batch, so ``N`` ranks follow the
  single-process run to float rounding.
- **Outputs.** Rank 0 alone evaluates, logs, shows progress and writes ``metrics.jsonl`` and
  checkpoints; on resume it reads the checkpoint and sends it to the other ranks.
- **Failures.** The process group has a timeout (``AMORTIZED_DIST_TIMEOUT`` seconds, default 600):
  a rank that dies or hangs makes the others stop with a :class:`~amortized.errors.DistributedError`
  instead of waiting forever.

Backends: ``gloo`` on CPU, ``nccl`` on GPUs, where each process uses the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from amortized.errors import ConfigError, DistributedError
from amortized.tasks.base import TaskBatch
from amortized.validation import check_choice

T = TypeVar("T")

TIMEOUT_ENV = "AMORTIZED_DIST_TIMEOUT"
DEFAULT_TIMEOUT = timedelta(seconds=600)
BACKENDS = ("gloo", "nccl")

_COMMUNICATION_FAILURE = ("gloo", "nccl", "connection", "timed out", "timeout", "broken pipe", "socket")


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that ``torchrun`` started (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank, 0 outside a process group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes in the default process group, 1 outside one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process logs and writes files: rank 0, or the only process."""
    return rank() == 0


def default_timeout() -> timedelta:
    """How long a collective waits for the other ranks: ``$AMORTIZED_DIST_TIMEOUT`` seconds, or 600."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


def init(
    backend: str | None = None,
    *,
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
    timeout: timedelta | None = None,
) -> torch.device:
    """Join the default process group and return the device this process trains on.

    Under ``torchrun`` every argument can be left out: rank, world size and the rendezvous come from
    the environment. ``backend`` defaults to ``nccl`` when CUDA is available and ``gloo`` otherwise;
    with ``nccl`` the device is ``cuda:LOCAL_RANK`` (and becomes the current CUDA device).
    Calling it again in a process that already joined returns the device without a new group.
    Outside ``torchrun`` (no ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` or ``MASTER_PORT`` to read)
    it raises a :class:`DistributedError` saying how to start the script.
    """
    if init_method == "env://" and not dist.is_initialized():
        given = {"RANK": rank, "WORLD_SIZE": world_size}
        missing = [
            name
            for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
            if given.get(name) is None and name not in os.environ
        ]
        if missing:
            raise DistributedError(
                f"distributed.init() reads its rank and rendezvous from the environment torchrun sets, "
                f"and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: start the "
                "script with `torchrun --nproc-per-node N script.py`, or meta-train a preset with "
                "`amortized run PRESET --nproc N`"
            )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    check_choice("backend", backend, BACKENDS)
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; install one that has")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=-1 if rank is None else rank,
            world_size=-1 if world_size is None else world_size,
            timeout=timeout or default_timeout(),
        )
    return device


def shutdown() -> None:
    """Leave the default process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_communication_failure(error: BaseException) -> bool:
    """Whether ``error`` comes from talking to other ranks (a dead or hung peer, a timeout)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(word in message for word in _COMMUNICATION_FAILURE)


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn a failed collective into a :class:`DistributedError` saying where and what to look at."""
    try:
        yield
    except Exception as error:
        if not is_communication_failure(error):
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DistributedError(
            f"rank {rank()} of {world_size()} lost contact with the other ranks during {what}: a rank "
            f"died, hung or was stopped (its own output says why), or the {TIMEOUT_ENV} timeout passed "
            f"({first_line})"
        ) from error


def check_split(tasks_per_batch: int, world_size: int) -> None:
    """Each rank must get the same number of tasks, so the average of their gradients is exact."""
    if tasks_per_batch % world_size:
        raise ConfigError(
            f"tasks_per_batch ({tasks_per_batch}) is the global task batch and must be divisible by "
            f"the world size ({world_size}); use a multiple of {world_size}"
        )


def rank_slice(
    tasks: TaskBatch, batches: list[tuple[Tensor, Tensor]], rank: int, world_size: int
) -> tuple[TaskBatch, list[tuple[Tensor, Tensor]]]:
    """Rank ``rank``'s equal, contiguous slice of a global task batch and of its mini-batches."""
    if world_size == 1:
        return tasks, batches
    share = tasks.num_tasks // world_size
    part = slice(rank * share, (rank + 1) * share)
    return tasks[part], [(x[part], y[part]) for x, y in batches]


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only; every rank returns its result, or raises the error it raised.

    Used for what must happen once (reading a checkpoint, creating a run folder) while every rank
    needs the outcome.
    """
    if world_size() == 1:
        return compute()
    outcome: list[Any] = [None, None]
    if is_main():
        try:
            outcome = [compute(), None]
        except Exception as error:
            outcome = [None, error]
    with guard("sharing rank 0's result"):
        dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


class _Forward(nn.Module):
    """Holds the learner so DDP sees its parameters; its forward runs whatever computation it is given.

    Learners are used through ``init_state``/``step``/``predict`` rather than ``forward``; routing each
    part of the objective through this module's forward is what lets DDP prepare its gradient sync.
    """

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, compute: Callable[..., Any], *args: Any) -> Any:
        return compute(*args)


class Replicas:
    """This process's part in meta-training: the trivial one alone, one of ``world_size`` ranks otherwise.

    Created by :func:`amortized.train`; in a process group of several ranks it wraps the learner in
    ``DistributedDataParallel`` (which makes rank 0's weights everyone's), moving it to ``cuda:LOCAL_RANK``
    first under ``nccl``.
    """

    def __init__(self, learner: nn.Module) -> None:
        self.rank, self.world_size = rank(), world_size()
        self._ddp: DistributedDataParallel | None = None
        if self.world_size > 1:
            if dist.get_backend() == "nccl":
                learner.to(torch.device("cuda", torch.cuda.current_device()))
            with guard("wrapping the learner in DistributedDataParallel"):
                self._ddp = DistributedDataParallel(_Forward(learner))
        self.device = next(learner.parameters()).device
        self._trained = [parameter for parameter in learner.parameters() if parameter.requires_grad]

    @property
    def distributed(self) -> bool:
        return self._ddp is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def check_divides(self, tasks_per_batch: int) -> None:
        """:func:`check_split` for this run's world size."""
        check_split(tasks_per_batch, self.world_size)

    def shard(
        self, tasks: TaskBatch, batches: list[tuple[Tensor, Tensor]]
    ) -> tuple[TaskBatch, list[tuple[Tensor, Tensor]]]:
        """This rank's slice of the global task batch and of its mini-batches, on the learner's device."""
        tasks, batches = rank_slice(tasks, batches, self.rank, self.world_size)
        if self.device.type == "cpu":
            return tasks, batches
        return self.place(tasks), [(x.to(self.device), y.to(self.device)) for x, y in batches]

    def place(self, tasks: TaskBatch) -> TaskBatch:
        """``tasks`` on the learner's device (sampling stays on the CPU, so every device sees the same)."""
        return tasks.to(self.device)

    def forward(self, compute: Callable[..., T], *args: Any, last: bool) -> T:
        """``compute(*args)`` as one forward of the learner.

        Alone: just the call. Distributed: through DDP, so the backward of the ``last`` part of an
        iteration averages the gradients (accumulated over all its parts) across ranks; the other
        parts accumulate locally (``no_sync``).
        """
        if self._ddp is None:
            return compute(*args)
        with nullcontext() if last else self._ddp.no_sync():
            return self._ddp(compute, *args)

    def backward(self, loss: Tensor, *, last: bool) -> None:
        """Backpropagate one part of an iteration's objective.

        In the ``last`` part of a distributed iteration every trained parameter joins the graph with a
        zero gradient: DDP's all-reduce waits for a gradient of each one, and that part may reach only
        some of them (a learned initialisation enters only the first greedy chunk or window), while
        what the earlier parts accumulated must be averaged all the same.
        """
        if last and self._ddp is not None:
            loss = loss + sum((parameter * 0).sum() for parameter in self._trained)
        loss.backward()

    def mean(self, value: float) -> float:
        """The average of ``value`` over the ranks (a non-finite value on any rank makes it non-finite)."""
        if self.world_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=_device_of_backend())
        dist.all_reduce(total)
        return float(total) / self.world_size

    def guard(self, what: str) -> AbstractContextManager[None]:
        """:func:`guard` when distributed; nothing to guard alone."""
        return guard(what) if self.distributed else nullcontext()

    def from_main(self, compute: Callable[[], T]) -> T:
        """:func:`from_main`: computed on rank 0, shared with every rank."""
        return from_main(compute)


def _device_of_backend() -> torch.device:
    """Where collectives' tensors live: the current GPU under ``nccl``, the CPU under ``gloo``."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
