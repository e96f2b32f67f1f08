"""The task state every learner carries through adaptation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor


def map_tensors(function: Callable[..., Tensor], *trees: Any) -> Any:
    """Apply ``function`` leaf-wise to tensors held in matching dataclasses, tuples or ``None``.

    A learner's ``carry`` is such a tree (e.g. Adam moments inside a rule's carry); this is how states
    are detached and concatenated without knowing what each learner keeps.
    """
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return function(*trees)
    if dataclasses.is_dataclass(first):
        parts = {
            field.name: map_tensors(function, *(getattr(tree, field.name) for tree in trees))
            for field in dataclasses.fields(first)
        }
        return type(first)(**parts)
    if isinstance(first, tuple):
        return tuple(map_tensors(function, *parts) for parts in zip(*trees, strict=True))
    raise TypeError(f"a state's carry holds tensors, dataclasses and tuples, not {type(first).__name__}")


@dataclass
class State:
    """What a learner knows about a batch of tasks after some steps of adaptation.

    ``value`` is the task representation: parameters ``θ`` ``[tasks, P]`` (parametric), a latent
    ``z`` ``[tasks, Z]`` (explicit), or query predictions ``[tasks, queries, out]`` (implicit, with
    ``query_x``). ``num_steps`` and ``num_seen`` (``[tasks]``) count the steps taken and points read:
    an update that sees them can shrink its steps as evidence accumulates, the way a posterior does.
    ``carry`` is what the update keeps from step to step besides the representation (optimizer
    moments, posterior statistics, memory tokens): a typed dataclass of tensors with tasks on dim 0,
    or ``None``.
    """

    value: Tensor
    num_steps: Tensor
    num_seen: Tensor
    carry: Any = None
    query_x: Tensor | None = None

    @classmethod
    def initial(cls, value: Tensor, carry: Any = None, query_x: Tensor | None = None) -> State:
        """A state before any data: zero steps, zero points."""
        zeros = torch.zeros(value.shape[0], dtype=value.dtype, device=value.device)
        return cls(value, zeros, zeros.clone(), carry, query_x)

    @property
    def num_tasks(self) -> int:
        return self.value.shape[0]

    def advance(self, value: Tensor, num_points: int, carry: Any = None) -> State:
        """The state after one step that read ``num_points`` points per task (``carry`` if it changed)."""
        return replace(
            self,
            value=value,
            num_steps=self.num_steps + 1,
            num_seen=self.num_seen + num_points,
            carry=self.carry if carry is None else carry,
        )

    def detach(self) -> State:
        """The same state cut from the autograd graph (greedy training between steps)."""
        return replace(self, value=self.value.detach(), carry=map_tensors(Tensor.detach, self.carry))

    @staticmethod
    def cat(states: list[State]) -> State:
        """Stack states of several task batches along the task dimension."""
        first = states[0]
        query_x = None if first.query_x is None else torch.cat([s.query_x for s in states])
        return State(
            torch.cat([s.value for s in states]),
            torch.cat([s.num_steps for s in states]),
            torch.cat([s.num_seen for s in states]),
            map_tensors(lambda *parts: torch.cat(parts), *(s.carry for s in states)),
            query_x,
        )

    def share(self, batch_points: int) -> Tensor:
        """``B / (seen + B)`` ``[tasks]``: the weight a new batch of ``B`` points gets in a running average.

        A posterior's update or a ``1/t`` step size shrinks by it as evidence accumulates.
        """
        return batch_points / (self.num_seen + batch_points)

    def progress_features(self, batch_points: int) -> Tensor:
        """Features of how much evidence the state holds, ``[tasks, 5]``, for learned updates.

        Includes the share a new batch of ``batch_points`` should get in a running average,
        ``B / (seen + B)`` (and its log), the quantity a posterior or a decaying step size is built on.
        """
        seen = self.num_seen
        share = self.share(batch_points)
        return torch.stack(
            [
                share,
                torch.log(share) / math.log(100.0),
                torch.log1p(seen) / math.log(1e4),
                torch.log1p(self.num_steps) / math.log(100.0),
                torch.rsqrt(1.0 + seen),
            ],
            dim=-1,
        )
