"""Causal tasks: a task is a random structural causal model, its data observational samples of it.

:class:`RandomSCM` draws a DAG over a random number of variables, a linear or nonlinear mechanism per
variable and Gaussian noise, and samples the SCM. The target is a topological order of the DAG: a
learner predicts one score per variable, and the predicted order sorts the variables by increasing
score. :class:`OrderMetrics` scores it by the fraction of true edges it violates (a parent placed
after its child); a random order violates half of them on average.

Layout in a :class:`TaskBatch` (the variables of a family are padded to ``max_variables = D``):

- ``x_train`` ``[tasks, N, D]``: the samples; the ``d`` variables of a task are the first ``d``
  columns (their labels are a random permutation of the causal order), the padding columns are 0.
- ``y_train`` ``[tasks, N, D]``: the mask of present variables (1.0 or 0.0), repeated per sample,
  so a learner reading mini-batches knows which columns are variables.
- ``x_query`` ``[tasks, D, D]``: one query per variable, the one-hot of its column (0 for padding).
- ``y_query`` ``[tasks, D, D]``: the adjacency matrix, ``y_query[t, i, j] = 1`` for an edge ``i → j``.
  A learner's prediction at the queries is the scores ``[tasks, D, 1]``.

The queries are the variables, so ``num_query`` in :meth:`RandomSCM.sample` is accepted (the task
protocol asks for it) and does not change the batch. ``params`` holds ``adjacency``, the true causal
position of each variable (``order``; padding gets ``D``), ``num_variables`` and ``nonlinear``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from amortized.errors import ConfigError, ShapeError
from amortized.memory import FLOAT_BYTES
from amortized.tasks import _sampling as draw
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import MAX_MAGNITUDE, check_bool, check_positive_int, check_range, check_real


def order_ranks(scores: Tensor) -> Tensor:
    """Each variable's position ``[tasks, D]`` in the order that sorts ``scores`` ``[tasks, D, 1]`` upward.

    Ties keep the variables' column order, so all-equal scores are the order of the columns.
    """
    order = torch.argsort(scores.squeeze(-1), dim=-1, stable=True)
    return torch.argsort(order, dim=-1)


def _check_pair(scores: Tensor, adjacency: Tensor) -> None:
    tasks, size = adjacency.shape[0], adjacency.shape[-1]
    if adjacency.shape != (tasks, size, size) or scores.shape != (tasks, size, 1):
        raise ShapeError(
            f"order scores must be [tasks, D, 1] and the adjacency [tasks, D, D], got {tuple(scores.shape)} "
            f"and {tuple(adjacency.shape)}"
        )


def edge_violations(scores: Tensor, adjacency: Tensor) -> Tensor:
    """Fraction ``[tasks]`` of edges ``i → j`` whose parent ``i`` comes after ``j`` in the predicted order.

    A task without edges violates none (0).
    """
    _check_pair(scores, adjacency)
    rank = order_ranks(scores)
    after = (rank[:, :, None] > rank[:, None, :]).to(adjacency.dtype)
    return (adjacency * after).sum((1, 2)) / adjacency.sum((1, 2)).clamp_min(1)


def ranking_loss(scores: Tensor, adjacency: Tensor) -> Tensor:
    """Mean over edges ``i → j`` of ``softplus(s_i - s_j)`` per task: a smooth count of violated edges."""
    _check_pair(scores, adjacency)
    gap = scores - scores.transpose(1, 2)
    return (adjacency * F.softplus(gap)).sum((1, 2)) / adjacency.sum((1, 2)).clamp_min(1)


class OrderMetrics:
    """The role a likelihood plays for prediction, for order scores: ``loss`` and ``metrics`` per task.

    ``violations`` (the main metric) is the fraction of true edges the predicted order violates;
    ``ranking_loss`` is the smooth loss order learners are trained on.
    """

    name = "order"
    main_metric = "violations"

    def loss(self, scores: Tensor, adjacency: Tensor) -> Tensor:
        return ranking_loss(scores, adjacency)

    def metrics(self, scores: Tensor, adjacency: Tensor, f_true: Tensor | None = None) -> dict[str, Tensor]:
        return {
            "violations": edge_violations(scores, adjacency),
            "ranking_loss": ranking_loss(scores, adjacency),
        }


class RandomSCM(TaskFamily):
    """Random SCMs over ``variables`` (a range, inclusive) variables with Gaussian noise.

    Per task: the number of variables ``d``; a random causal order; each pair ``(earlier, later)`` an
    edge with probability ``min(1, 2 p / (d - 1))`` for an expected number of parents ``p`` uniform
    in ``expected_parents``; noise scales log-uniform in ``noise``. With probability
    ``nonlinear_share`` the task's mechanisms are random one-hidden-layer tanh networks of the
    parents (``hidden`` units), otherwise linear with weights of magnitude uniform in ``weight`` and
    random sign. With ``standardize`` (the default), every variable is centred and scaled by the
    training split's statistics: marginal variances, which grow along the causal order of such
    simulations and give the order away, then carry no information.
    """

    noise = None

    def __init__(
        self,
        variables: tuple[int, int] = (3, 10),
        expected_parents: tuple[float, float] = (0.5, 2.0),
        nonlinear_share: float = 0.5,
        weight: tuple[float, float] = (0.5, 2.0),
        noise: tuple[float, float] = (0.3, 1.0),
        hidden: int = 8,
        standardize: bool = True,
    ) -> None:
        low, high = check_range("variables", variables, integer=True)
        if low < 2:
            raise ConfigError(f"variables must be a range starting at >= 2, got {variables!r}")
        self.variables = (low, high)
        self.expected_parents = check_range("expected_parents", expected_parents, high=MAX_MAGNITUDE)
        self.nonlinear_share = check_real("nonlinear_share", nonlinear_share, low=0, high=1)
        self.weight = check_range("weight", weight, high=MAX_MAGNITUDE)
        self.noise = check_range("noise", noise, high=MAX_MAGNITUDE)
        self.hidden = check_positive_int("hidden", hidden)
        self.standardize = check_bool("standardize", standardize)
        self.input_dim = self.output_dim = high

    @property
    def max_variables(self) -> int:
        return self.variables[1]

    @property
    def likelihood(self) -> str:
        """``"order"``: predicted orders are scored by :class:`OrderMetrics`."""
        return "order"

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """The data, plus the nonlinear mechanisms' weights and hidden units (``hidden`` per edge, point)."""
        size = self.max_variables
        hidden = num_tasks * (size + num_points) * size * self.hidden * FLOAT_BYTES
        return super().sample_bytes(num_tasks, num_points) + hidden

    def _graphs(self, num_tasks: int, generator) -> tuple[Tensor, Tensor, Tensor]:
        """Adjacency ``[tasks, D, D]``, causal position per variable ``[tasks, D]``, present mask."""
        size = self.max_variables
        low, high = self.variables
        count = low + torch.randint(high - low + 1, (num_tasks, 1), generator=generator)
        present = torch.arange(size) < count
        # Present variables get a random permutation of positions 0..d-1, padding keeps position D.
        keys = torch.rand(num_tasks, size, generator=generator).masked_fill(~present, 2.0)
        position = torch.argsort(torch.argsort(keys, dim=1), dim=1).masked_fill(~present, size)
        parents = draw.uniform((num_tasks, 1, 1), *self.expected_parents, generator)
        probability = (2 * parents / (count[:, :, None] - 1)).clamp(max=1.0)
        earlier = position[:, :, None] < position[:, None, :]
        pair = present[:, :, None] & present[:, None, :] & earlier
        adjacency = (torch.rand(num_tasks, size, size, generator=generator) < probability) & pair
        return adjacency.float(), position, present

    def _mechanisms(self, adjacency: Tensor, generator) -> dict[str, Tensor]:
        """Per-task weights of both mechanism kinds (zero off the edges) and which kind each task uses."""
        num_tasks, size = adjacency.shape[:2]
        sign = torch.randint(2, (num_tasks, size, size), generator=generator) * 2.0 - 1.0
        linear = sign * draw.uniform((num_tasks, size, size), *self.weight, generator) * adjacency
        shape = (num_tasks, size, size, self.hidden)
        first = draw.normal(shape, generator) * adjacency[..., None]
        bias = draw.uniform((num_tasks, 1, size, self.hidden), -1.0, 1.0, generator)
        second = draw.normal((num_tasks, size, self.hidden), generator) * 2.0 / math.sqrt(self.hidden)
        nonlinear = draw.uniform((num_tasks,), 0.0, 1.0, generator) < self.nonlinear_share
        return {"linear": linear, "first": first, "bias": bias, "second": second, "nonlinear": nonlinear}

    def _propagate(self, noise: Tensor, mechanism: Callable[[Tensor], Tensor]) -> Tensor:
        """Ancestral sampling by fixed-point iteration ``x = f(x) + noise``: exact after ``D`` rounds."""
        x = noise
        if len(noise):
            for _ in range(self.max_variables):
                x = mechanism(x) + noise
        return x

    def _sample(self, num_tasks, num_train, num_query, generator):
        adjacency, position, present = self._graphs(num_tasks, generator)
        mechanisms = self._mechanisms(adjacency, generator)
        size = self.max_variables
        scale = torch.exp(draw.uniform((num_tasks, 1, size), *map(math.log, self.noise), generator))
        mask = present[:, None, :].float()
        noise = scale * draw.normal((num_tasks, num_train, size), generator) * mask
        nonlinear = mechanisms["nonlinear"]
        x = noise.clone()
        weights = mechanisms["linear"][~nonlinear]
        x[~nonlinear] = self._propagate(noise[~nonlinear], lambda values: values @ weights)
        has_parents = (adjacency[nonlinear].sum(1) > 0).float()[:, None, :]
        first, bias, second = (mechanisms[k][nonlinear] for k in ("first", "bias", "second"))

        def network(values: Tensor) -> Tensor:
            hidden = torch.tanh(torch.einsum("tni,tijh->tnjh", values, first) + bias)
            return torch.einsum("tnjh,tjh->tnj", hidden, second) * has_parents

        x[nonlinear] = self._propagate(noise[nonlinear], network)
        if self.standardize:
            x = draw.standardise_by_train(x, num_train)[0] * mask
        queries = torch.diag_embed(present.float())
        return TaskBatch(
            x_train=x,
            y_train=mask.expand(-1, num_train, -1).contiguous(),
            x_query=queries,
            y_query=adjacency,
            params={
                "adjacency": adjacency,
                "order": position,
                "num_variables": present.sum(-1),
                "nonlinear": nonlinear.float(),
            },
        )
