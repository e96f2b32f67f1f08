"""Running statistics over mini-batches, exact for any split of the data into batches.

A batch of ``B`` points gets the weight ``B / (seen + B)``
(:meth:`amortized.learners.state.State.share`), so averaging batch statistics one step at a time
gives the statistics of all points read, whatever the batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def running_average(old: Tensor, new: Tensor, share: Tensor) -> Tensor:
    """``old`` moved towards ``new`` by ``share`` ``[tasks]`` (broadcast over the other dims)."""
    share = share.view(-1, *([1] * (old.dim() - 1)))
    return old + share * (new - old)


@dataclass
class RunningMoments:
    """Running mean and mean square ``[tasks, D]`` of the values read so far."""

    mean: Tensor
    square: Tensor

    def update(self, values: Tensor, share: Tensor) -> RunningMoments:
        """The moments after a batch of ``values`` ``[tasks, B, D]`` with weight ``share``."""
        return RunningMoments(
            running_average(self.mean, values.mean(1), share),
            running_average(self.square, values.square().mean(1), share),
        )

    @property
    def scale(self) -> Tensor:
        """The standard deviation (at least 1e-3)."""
        return (self.square - self.mean.square()).clamp_min(1e-6).sqrt()


@dataclass
class RunningAttention:
    """Attention of fixed queries over every point read so far, kept as running statistics.

    Softmax attention pooling is a ratio of two means over the points, ``mean(e^s v) / mean(e^s)``
    (``s`` a query's score for a point, ``v`` the point's value), so both means can be kept as running
    averages: the pooled result after any number of batches equals one pass over all the points at
    once. ``offset`` is the largest score seen per query, subtracted before exponentiating so the
    means stay finite.
    """

    numerator: Tensor
    """``mean(e^(s - offset) v)`` ``[tasks, heads, queries, head_width]``."""
    denominator: Tensor
    """``mean(e^(s - offset))`` ``[tasks, heads, queries]``."""
    offset: Tensor
    """The largest score so far ``[tasks, heads, queries]``."""

    @classmethod
    def empty(cls, like: Tensor) -> RunningAttention:
        """Statistics before any point, shaped like ``like`` ``[tasks, heads, queries, head_width]``."""
        return cls(torch.zeros_like(like), like.new_zeros(like.shape[:-1]), like.new_zeros(like.shape[:-1]))

    def update(self, scores: Tensor, values: Tensor, share: Tensor) -> RunningAttention:
        """The statistics after a batch: ``scores`` ``[tasks, heads, queries, B]``, ``values``
        ``[tasks, heads, B, head_width]``, with weight ``share`` (1 for the first batch)."""
        first = (share == 1).view(-1, 1, 1)
        batch_max = scores.detach().amax(-1)
        offset = torch.where(first, batch_max, torch.maximum(self.offset, batch_max))
        # Old statistics are rescaled to the new offset; before any point there are none to keep.
        rescale = torch.where(first, 0.0, torch.exp(self.offset - offset))
        weights = torch.exp(scores - offset[..., None])
        share = share.view(-1, 1, 1)
        kept = (1 - share) * rescale
        batch_mean = weights @ values / scores.shape[-1]
        numerator = kept[..., None] * self.numerator + share[..., None] * batch_mean
        denominator = kept * self.denominator + share * weights.mean(-1)
        return RunningAttention(numerator, denominator, offset)

    def read(self) -> Tensor:
        """The pooled values ``[tasks, heads, queries, head_width]``."""
        return self.numerator / self.denominator[..., None]
