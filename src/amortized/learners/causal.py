"""Implicit learners of causal tasks, and the references they are compared with.

:class:`OrderScores` predicts a causal order of a :class:`~amortized.tasks.RandomSCM` task as one
score per variable, refined each step from exact running summaries of the samples seen (a pass in
mini-batches gives the same statistics as one step on all points).

References, with nothing learned (regime ``"baseline"``): :class:`RandomOrder` and
:class:`VarianceOrder` (sorting by marginal variance, the shortcut unstandardised SCM simulations
give away).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from amortized.errors import ShapeError
from amortized.learners.base import Learner, plain_arguments, seeded
from amortized.learners.running import RunningMoments, running_average
from amortized.learners.state import State
from amortized.nn import ProgressEmbedding, Transformer, mlp
from amortized.validation import check_positive_int, check_seed


@dataclass
class OrderSummaries:
    """Running averages over the samples: mean ``[tasks, D]``, ``E[x xᵀ]`` ``[tasks, D, D]``, and the
    learned pair ``[tasks, D, D, W]`` and single-variable ``[tasks, D, W]`` embeddings."""

    mean: Tensor
    cross: Tensor
    pairs: Tensor
    singles: Tensor


class OrderScores(Learner):
    """Predicts a causal order of SCM tasks as one score per variable (sorted upwards: causes first).

    The state keeps exact running averages over the samples seen: the first and second moments of
    the variables (mean and ``E[x xᵀ]``), and learned embeddings of every variable ``ψ(z_i)`` and of
    every ordered pair ``φ(z_i, z_j)`` of each sample, standardised by the running moments (a
    learned, nonlinear generalisation of the covariance matrix). From the moments come the Gaussian
    statistics: each variable's log variance and ``R²`` (the share of its variance the others
    explain linearly) and each pair's correlation and partial correlation.

    A step updates the averages with the mini-batch, then builds one token per variable (its
    summaries, mask and current score, plus progress); tokens receive messages along every pair
    (``[φ_ij, φ_ji, correlation, partial correlation, token_j]``), then a transformer over the
    variables outputs a change of every score. The score head starts at zero: untrained, all scores
    tie and the order is that of the columns, which the tasks label at random. The state's value is
    the scores ``[tasks, D, 1]``; ``input_dim`` is the family's number of variables ``D`` (its
    ``max_variables``).
    """

    regime = "implicit"

    def __init__(
        self,
        input_dim: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        pair_width: int = 32,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, input_dim, "order")
        self.pair_width = check_positive_int("pair_width", pair_width)
        width = check_positive_int("width", width)
        with seeded(seed):
            self.pairs = mlp(2, pair_width)
            self.singles = mlp(1, pair_width)
            self.variables = mlp(pair_width + 4, width)
            self.messages = mlp(2 * pair_width + 2 + width, width)
            self.progress = ProgressEmbedding(5, width)
            self.transformer = Transformer(width, depth, heads)
            self.head = nn.Linear(width, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        size = self.input_dim
        if query_x is not None and query_x.shape[1:] != (size, size):
            raise ShapeError(
                f"query_x must be the variable queries [tasks, {size}, {size}], got {tuple(query_x.shape)}"
            )
        weight = self.head.weight
        summaries = OrderSummaries(
            weight.new_zeros(num_tasks, size),
            weight.new_zeros(num_tasks, size, size),
            weight.new_zeros(num_tasks, size, size, self.pair_width),
            weight.new_zeros(num_tasks, size, self.pair_width),
        )
        return State.initial(weight.new_zeros(num_tasks, size, 1), summaries, query_x)

    @staticmethod
    def _gaussian_statistics(
        mean: Tensor, cross: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Scale, log variance and ``R²`` per variable, correlation and partial correlation per pair."""
        covariance = cross - mean[..., :, None] * mean[..., None, :]
        scale = torch.diagonal(covariance, dim1=1, dim2=2).clamp_min(1e-6).sqrt()
        pair_mask = mask[..., :, None] * mask[..., None, :]
        correlation = covariance / (scale[..., :, None] * scale[..., None, :]) * pair_mask
        eye = torch.eye(mask.shape[-1], dtype=mask.dtype, device=mask.device)
        precision = torch.linalg.inv(correlation * (1 - eye) + eye * (1 + 1e-3))
        diagonal = torch.diagonal(precision, dim1=1, dim2=2)
        explained = (1 - 1 / diagonal) * mask
        partial = (
            -precision / (diagonal[..., :, None] * diagonal[..., None, :]).sqrt() * pair_mask * (1 - eye)
        )
        return scale, 2 * scale.log() * mask, explained, correlation * (1 - eye), partial

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        """Refine the scores from samples ``x`` ``[tasks, B, D]`` with the variable mask ``y``."""
        batch, size = x.shape[1], x.shape[2]
        share = state.share(batch)
        mask = y.amax(1)
        mean = running_average(state.carry.mean, x.mean(1), share)
        cross = running_average(state.carry.cross, x.transpose(1, 2) @ x / batch, share)
        scale, log_variance, explained, correlation, partial = self._gaussian_statistics(mean, cross, mask)
        z = (x - mean[:, None]) / scale[:, None] * mask[:, None]
        pair_inputs = torch.stack(torch.broadcast_tensors(z[..., :, None], z[..., None, :]), -1)
        pairs = running_average(state.carry.pairs, self.pairs(pair_inputs).mean(1), share)
        singles = running_average(state.carry.singles, self.singles(z[..., None]).mean(1), share)
        scores = state.value
        features = [singles, log_variance[..., None], explained[..., None], mask[..., None], scores]
        tokens = self.variables(torch.cat(features, -1))
        edges = [
            pairs,
            pairs.transpose(1, 2),
            correlation[..., None],
            partial[..., None],
            tokens[:, None].expand(-1, size, -1, -1),
        ]
        weights = mask[:, None, :, None] / mask.sum(-1).clamp_min(1)[:, None, None, None]
        tokens = tokens + (self.messages(torch.cat(edges, -1)) * weights).sum(2)
        tokens = tokens + self.progress(state.progress_features(batch))
        scores = scores + self.head(self.transformer(tokens))
        return state.advance(scores, batch, OrderSummaries(mean, cross, pairs, singles))

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        """The scores ``[tasks, D, 1]``; ``x``, if given, must be the variable queries of the tasks."""
        if x is not None and x.shape != (state.num_tasks, self.input_dim, self.input_dim):
            raise ShapeError(
                f"OrderScores predicts one score per variable: x must be the variable queries "
                f"[{state.num_tasks}, {self.input_dim}, {self.input_dim}], got {tuple(x.shape)}"
            )
        return state.value


class RandomOrder(Learner):
    """A uniformly random order per task (scores drawn from ``seed``), whatever the data."""

    regime = "baseline"

    def __init__(self, input_dim: int, seed: int = 0) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, input_dim, "order")
        self.seed = check_seed("seed", seed)
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        generator = torch.Generator().manual_seed(self.seed)
        return State.initial(torch.rand(num_tasks, self.input_dim, 1, generator=generator), query_x=query_x)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        return state.advance(state.value, x.shape[1])

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        return state.value


class VarianceOrder(Learner):
    """Orders variables by their marginal variance over the samples read (smallest first).

    In SCM simulations without standardisation, variance tends to grow along the causal order, so
    this shortcut scores well there; on standardised data every variance is 1 and it is random.
    """

    regime = "baseline"

    def __init__(self, input_dim: int) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, input_dim, "order")
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        zeros = torch.zeros(num_tasks, self.input_dim)
        return State.initial(zeros[..., None], RunningMoments(zeros, torch.zeros_like(zeros)), query_x)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        moments = state.carry.update(x, state.share(x.shape[1]))
        return state.advance(moments.scale.square()[..., None], x.shape[1], moments)

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        return state.value
