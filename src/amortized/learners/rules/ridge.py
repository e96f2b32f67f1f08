"""A running ridge regression: the evidence an in-context learner keeps from every mini-batch it read.

Attention reads one mini-batch and forgets it at the next step; the sufficient statistics of a
linear readout do not have to be forgotten. :class:`RunningRidge` keeps the running means of
``k kᵀ`` and ``k vᵀ`` over every point read (each batch weighted by its share of the points, re-reads
included), so after any number of steps :meth:`RunningRidge.readout` at a query's key is the ridge
regression of the values on the keys of all the points read, as if they had been read at once, at
memory ``K × K`` per task whatever their number. This is the mesa layer of von Oswald et al. (2023),
an attention layer that solves a least-squares problem in context, run over mini-batches the way
recursive least squares runs; with keys that contain ``[x, 1]`` its readout contains the posterior
mean of Bayesian linear regression.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from amortized.learners.running import running_average

MAX_KEYS = 1024
"""The most keys a running ridge regression keeps: a ``K × K`` matrix per task, solved every step."""


@dataclass
class RunningRidge:
    """Running means of ``k kᵀ`` ``[tasks, K, K]`` and ``k vᵀ`` ``[tasks, K, V]`` over the points read."""

    gram: Tensor
    cross: Tensor

    @classmethod
    def zeros(cls, num_tasks: int, num_keys: int, num_values: int, like: Tensor) -> RunningRidge:
        return cls(
            like.new_zeros(num_tasks, num_keys, num_keys), like.new_zeros(num_tasks, num_keys, num_values)
        )

    def update(self, keys: Tensor, values: Tensor, share: Tensor) -> RunningRidge:
        """After a batch of keys ``[tasks, B, K]`` and values ``[tasks, B, V]`` with ``share`` ``[tasks]``
        of the points read."""
        points = keys.shape[1]
        gram = keys.transpose(1, 2) @ keys / points
        cross = keys.transpose(1, 2) @ values / points
        gram, cross = running_average(self.gram, gram, share), running_average(self.cross, cross, share)
        return RunningRidge(gram, cross)

    def readout(self, keys: Tensor, num_seen: Tensor, penalty: Tensor) -> tuple[Tensor, Tensor]:
        """Ridge predictions ``[tasks, Q, V]`` at keys ``[tasks, Q, K]`` and their leverage ``[tasks, Q, 1]``.

        The weights solve ``(Σ k kᵀ + diag(penalty)) w = Σ k vᵀ`` over the ``num_seen`` ``[tasks]`` points
        read (zero before any), ``penalty`` ``[K]`` being a prior precision per key (relative to the
        noise's); the leverage ``kᵀ (Σ k kᵀ + diag(penalty))⁻¹ k`` is the predictive variance in units of
        the noise variance, which falls as evidence near the query grows.
        """
        count = num_seen.clamp(min=1).to(keys.dtype)[:, None, None]
        system = self.gram + torch.diag_embed(penalty.expand(keys.shape[0], -1) / count[..., 0])
        solved = torch.linalg.solve(system, torch.cat([self.cross, keys.transpose(1, 2)], -1))
        predictions = keys @ solved[..., : self.cross.shape[-1]]
        leverage = (keys * solved[..., self.cross.shape[-1] :].transpose(1, 2)).sum(-1, keepdim=True) / count
        return predictions, leverage
