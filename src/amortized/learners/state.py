"""The task state every learner carries through adaptation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class State:
    """What a learner knows about a batch of tasks after some steps of adaptation.

    ``value`` is the task representation: parameters ``θ`` ``[tasks, P]`` (parametric), a latent
    ``z`` ``[tasks, Z]`` (explicit), or query predictions ``[tasks, queries, out]`` (implicit, with
    ``query_x``). ``num_steps`` and ``num_seen`` (``[tasks]``) count the steps taken and points read:
    an update that sees them can shrink its steps as evidence accumulates, the way a posterior does.
    ``memory`` holds running statistics (optimizer moments, posterior precision, memory tokens),
    each with tasks on dim 0.
    """

    value: Tensor
    num_steps: Tensor
    num_seen: Tensor
    memory: dict[str, Tensor] = field(default_factory=dict)
    query_x: Tensor | None = None

    @classmethod
    def initial(
        cls, value: Tensor, memory: dict[str, Tensor] | None = None, query_x: Tensor | None = None
    ) -> State:
        """A state before any data: zero steps, zero points."""
        zeros = torch.zeros(value.shape[0], dtype=value.dtype, device=value.device)
        return cls(value, zeros, zeros.clone(), dict(memory or {}), query_x)

    @property
    def num_tasks(self) -> int:
        return self.value.shape[0]

    def advance(self, value: Tensor, num_points: int, memory: dict[str, Tensor] | None = None):
        """The state after one step that read ``num_points`` points per task."""
        return replace(
            self,
            value=value,
            num_steps=self.num_steps + 1,
            num_seen=self.num_seen + num_points,
            memory=self.memory if memory is None else memory,
        )

    def detach(self) -> State:
        """The same state cut from the autograd graph (greedy training between steps)."""
        return State(
            self.value.detach(),
            self.num_steps,
            self.num_seen,
            {k: v.detach() for k, v in self.memory.items()},
            self.query_x,
        )

    @staticmethod
    def cat(states: list[State]) -> State:
        """Stack states of several task batches along the task dimension."""
        first = states[0]
        query_x = None if first.query_x is None else torch.cat([s.query_x for s in states])
        return State(
            torch.cat([s.value for s in states]),
            torch.cat([s.num_steps for s in states]),
            torch.cat([s.num_seen for s in states]),
            {k: torch.cat([s.memory[k] for s in states]) for k in first.memory},
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
