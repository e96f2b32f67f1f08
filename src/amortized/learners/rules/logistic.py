"""A running logistic regression: the classification counterpart of the running ridge regression.

Ridge regression of one-hot labels is a poor classifier (a linear model of probabilities, which
classifies worse than logistic regression from the same points). Logistic regression has no finite
sufficient statistics, so it cannot be kept exactly over mini-batches; :class:`RunningLogistic`
keeps its online Newton estimate instead:
weights of a multinomial logistic model of the labels on the keys ``[x, 1]``, moved each batch by
the batch's share times the Newton direction of the batch's loss under the running mean of every
batch's Hessian (:class:`~amortized.learners.rules.curvature.RunningCurvature`). For squared loss
that step is recursive least squares; for the cross-entropy it tracks the maximum-likelihood fit of
every point read, re-reads included, at a ``P × P`` matrix per task (``P = (D + 1) · classes``).
Nothing in it is learned: it is the base an in-context learner's logits correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from amortized.learners.rules.curvature import RunningCurvature, loss_hessian


def with_intercept(x: Tensor) -> Tensor:
    """``[x, 1]`` ``[tasks, points, D + 1]``: the inputs of a linear model with an intercept."""
    return torch.cat([x, torch.ones_like(x[..., :1])], -1)


@dataclass
class RunningLogistic:
    """Weights ``[tasks, (D + 1) · classes]`` of the logistic model and the running mean of its Hessians."""

    weights: Tensor
    curvature: RunningCurvature

    @classmethod
    def zeros(cls, num_tasks: int, input_dim: int, num_classes: int, like: Tensor) -> RunningLogistic:
        weights = like.new_zeros(num_tasks, (input_dim + 1) * num_classes)
        return cls(weights, RunningCurvature.zeros_like(weights))

    def logits(self, x: Tensor) -> Tensor:
        """The model's logits ``[tasks, points, classes]`` at inputs ``x`` ``[tasks, points, D]``."""
        return _logits(self.weights, with_intercept(x), x.shape[-1])

    def update(self, x: Tensor, labels: Tensor, share: Tensor, num_seen: Tensor) -> RunningLogistic:
        """After a batch of inputs ``[tasks, B, D]`` and labels ``[tasks, B]`` with ``share`` ``[tasks]``
        of the ``num_seen`` ``[tasks]`` points read (this batch included). No graph: nothing is learned."""
        keys, input_dim = with_intercept(x).detach(), x.shape[-1]

        def loss_of(weights: Tensor) -> Tensor:
            logits = _logits(weights, keys, input_dim)
            return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)

        grad, hessian = loss_hessian(loss_of, self.weights)
        curvature = self.curvature.update(hessian, share)
        weights = self.weights - share[:, None] * curvature.newton(grad, num_seen)
        return RunningLogistic(weights, curvature)


def _logits(weights: Tensor, keys: Tensor, input_dim: int) -> Tensor:
    return keys @ weights.view(weights.shape[0], input_dim + 1, -1)
