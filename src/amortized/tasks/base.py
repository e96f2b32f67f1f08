"""The task interface: a family samples batches of tasks, each a train split and a query split."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from amortized.memory import FLOAT_BYTES, check_memory
from amortized.validation import check_positive_int


@dataclass
class TaskBatch:
    """A batch of tasks as tensors ``[tasks, points, ...]``.

    Regression targets are ``[tasks, points, outputs]`` floats; classification targets are
    ``[tasks, points]`` int64 labels. ``f_query`` holds the noiseless query targets (regression:
    ``f(x_query)``; classification: the true class logits) where the family knows them, so excess
    error can be computed exactly. ``params`` holds the true task parameters where they exist.
    """

    x_train: Tensor
    y_train: Tensor
    x_query: Tensor
    y_query: Tensor
    f_query: Tensor | None = None
    params: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return self.x_train.shape[0]

    @property
    def num_train(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_query(self) -> int:
        return self.x_query.shape[1]

    def to(self, target: torch.dtype | torch.device | str) -> TaskBatch:
        """Cast the floating-point tensors (inputs, regression targets) to a ``dtype``, or move every
        tensor to a device (itself if they are there already)."""

        def cast(t: Tensor | None) -> Tensor | None:
            if t is None:
                return t
            if isinstance(target, torch.dtype):
                return t.to(target) if t.is_floating_point() else t
            return t.to(target)

        changes = {f.name: cast(getattr(self, f.name)) for f in fields(self) if f.name != "params"}
        return replace(self, **changes, params={k: cast(v) for k, v in self.params.items()})

    def __getitem__(self, index: slice | Tensor) -> TaskBatch:
        """Select tasks."""

        def pick(t: Tensor | None) -> Tensor | None:
            return t[index] if t is not None else None

        changes = {f.name: pick(getattr(self, f.name)) for f in fields(self) if f.name != "params"}
        return replace(self, **changes, params={k: v[index] for k, v in self.params.items()})


class TaskFamily(ABC):
    """A distribution over tasks. Subclasses implement ``_sample``; ``sample`` validates sizes.

    Families whose sampling holds tensors larger than the data (a kernel matrix, per-task networks)
    add them in :meth:`sample_bytes`, so sizes beyond the memory budget are refused before sampling.
    """

    input_dim: int
    output_dim: int
    num_classes: int | None = None
    noise: float | None = None

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    @property
    def likelihood(self) -> str:
        """``"categorical"`` for classification families, ``"gaussian"`` for regression."""
        return "categorical" if self.is_classification else "gaussian"

    def sample(
        self,
        num_tasks: int,
        num_train: int,
        num_query: int,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``num_tasks`` tasks with ``num_train`` training and ``num_query`` query points each.

        The same generator state gives the same tasks. Without a generator, torch's global RNG is used.
        """
        check_positive_int("num_tasks", num_tasks)
        check_positive_int("num_train", num_train)
        check_positive_int("num_query", num_query)
        self.check_sample_size(
            f"num_tasks={num_tasks}, num_train={num_train}, num_query={num_query}",
            num_tasks,
            num_train + num_query,
        )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return self._sample(num_tasks, num_train, num_query, generator)

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """An estimate of the bytes sampling ``num_tasks`` tasks of ``num_points`` points allocates.

        Inputs, targets and noiseless targets as float32; a lower bound, cheap to compute.
        """
        return num_tasks * num_points * (self.input_dim + 2 * self.output_dim) * FLOAT_BYTES

    def check_sample_size(self, what: str, num_tasks: int, num_points: int) -> None:
        """Refuse (a one-line ``ConfigError`` naming ``what``) tasks whose :meth:`sample_bytes` exceed
        the memory budget (:mod:`amortized.memory`)."""
        check_memory(
            what,
            self.sample_bytes(num_tasks, num_points),
            held=f"the tasks of {type(self).__name__} ({self.input_dim} inputs per point)",
            remedy="sample fewer tasks or points",
        )

    @abstractmethod
    def _sample(
        self, num_tasks: int, num_train: int, num_query: int, generator: torch.Generator | None
    ) -> TaskBatch: ...

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}"
            for k, v in vars(self).items()
            if not k.startswith("_") and k not in ("input_dim", "output_dim")
        )
        return f"{type(self).__name__}({args})"
