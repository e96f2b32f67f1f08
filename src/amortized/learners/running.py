"""Running averages over mini-batches, exact for any split of the data into batches.

A batch of ``B`` points gets the weight ``B / (seen + B)``
(:meth:`amortized.learners.state.State.share`), so averaging batch statistics one step at a time
gives the statistics of all points read, whatever the batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

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
