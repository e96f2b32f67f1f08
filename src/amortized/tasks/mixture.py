"""Broad priors over tabular tasks: mixtures of linear and nonlinear tasks of random width.

These are the priors the bundled scikit-learn estimators (:mod:`amortized.estimators`) are
meta-trained on. Each task looks like a standardised table the estimator would be given:

- a random number of informative features ``d`` (log-uniform in ``[min_dim, max_dim]``), the rest of
  the ``max_dim`` columns zero, exactly as the estimator pads narrower inputs with zeros;
- correlated features (a random mixing of Gaussian latents), standardised with the training split's
  statistics, as the estimator standardises with the statistics of the data it is fitted on;
- a target that is linear in the features for a share ``linear_share`` of the tasks and a random
  MLP of them otherwise.

Three options, off by default, make the tables look more like real ones: ``irrelevant`` features the
target ignores, ``transformed`` features observed through a skewing, heavy-tailing or discretising map
of the latent the target reads (so a linear target is no longer linear in what the learner sees), and
``missing`` entries, set to the column's mean as the estimators impute NaN. Each is a task's share,
drawn uniformly from ``[0, option]``.

Regression targets are scaled to unit signal variance plus noise of a random level, then
standardised with the training split's statistics (as the estimator standardises ``y``).
Classification tasks have a random number of classes ``C`` in ``[2, max_classes]``; labels occupy
``0..C-1`` and the true logits of the absent classes are ``-inf``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from amortized.errors import ConfigError
from amortized.memory import FLOAT_BYTES
from amortized.tasks import _sampling as draw
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import (
    MAX_MAGNITUDE,
    check_int,
    check_positive_int,
    check_range,
    check_real,
    check_widths,
)


def _log_uniform(shape: tuple[int, ...], low: float, high: float, generator) -> Tensor:
    return torch.exp(draw.uniform(shape, math.log(low), math.log(high), generator))


class _TabularPrior(TaskFamily):
    """Shared draws: widths, correlated standardised inputs, linear or MLP functions of them."""

    def __init__(
        self,
        max_dim: int,
        min_dim: int,
        linear_share: float,
        hidden: tuple[int, ...],
        correlation: float,
        irrelevant: float,
        transformed: float,
        missing: float,
    ) -> None:
        self.max_dim = check_positive_int("max_dim", max_dim)
        self.min_dim = check_positive_int("min_dim", min_dim)
        if self.min_dim > self.max_dim:
            raise ConfigError(f"min_dim must be <= max_dim, got min_dim={min_dim}, max_dim={max_dim}")
        self.linear_share = check_real("linear_share", linear_share, low=0, high=1)
        self.hidden = check_widths("hidden", hidden)
        self.correlation = check_real("correlation", correlation, low=0, high=MAX_MAGNITUDE)
        self.irrelevant = check_real("irrelevant", irrelevant, low=0, high=1)
        self.transformed = check_real("transformed", transformed, low=0, high=1)
        self.missing = check_real("missing", missing, low=0, high=1)
        self.input_dim = max_dim

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """The data, plus each task's mixing matrix, random MLP and its activations."""
        widths = [self.max_dim, *self.hidden, self.output_dim]
        mixing = num_tasks * self.max_dim**2 * FLOAT_BYTES
        reshaped = (self.transformed > 0) * 4 * num_tasks * num_points * self.max_dim * FLOAT_BYTES
        return (
            super().sample_bytes(num_tasks, num_points)
            + mixing
            + reshaped
            + draw.random_mlp_bytes(num_tasks, num_points, widths)
        )

    def _inputs(self, num_tasks: int, num_points: int, generator) -> tuple[Tensor, Tensor]:
        """Inputs ``[tasks, points, max_dim]`` with ``d`` informative columns, and the column mask."""
        low, high = math.log(self.min_dim), math.log(self.max_dim + 1)
        dims = torch.exp(draw.uniform((num_tasks,), low, high, generator)).floor().clamp(max=self.max_dim)
        mask = (torch.arange(self.max_dim) < dims[:, None]).float()[:, None, :]
        latent = draw.normal((num_tasks, num_points, self.max_dim), generator)
        strength = draw.uniform((num_tasks, 1, 1), 0.0, self.correlation, generator)
        mixing = draw.normal((num_tasks, self.max_dim, self.max_dim), generator) / math.sqrt(self.max_dim)
        x = latent @ (torch.eye(self.max_dim) + strength * mixing)
        return x * mask, mask

    def _relevant(self, mask: Tensor, generator) -> Tensor:
        """The informative columns the target reads: each is ignored with a task's probability, uniform
        in ``[0, irrelevant]``; the first is always read."""
        if not self.irrelevant:
            return mask
        share = draw.uniform((mask.shape[0], 1, 1), 0.0, self.irrelevant, generator)
        read = draw.uniform(mask.shape, 0.0, 1.0, generator) >= share
        read[..., 0] = True
        return mask * read

    def _observed(self, x: Tensor, generator) -> Tensor:
        """The columns as the learner sees them: a task's share (uniform in ``[0, transformed]``) of
        them through a random map of the column ``z`` the target reads (scaled to unit variance):
        ``exp(a·z)`` (skewed), ``sinh(b·z) / b`` (heavy-tailed), or one of 2 to 5 levels cut at random
        thresholds (ordinal or binary)."""
        if not self.transformed:
            return x
        num_tasks, _, width = x.shape
        z = x / x.std(1, keepdim=True).clamp_min(1e-6)
        share = draw.uniform((num_tasks, 1, 1), 0.0, self.transformed, generator)
        chosen = draw.uniform((num_tasks, 1, width), 0.0, 1.0, generator) < share
        kind = torch.randint(3, (num_tasks, 1, width), generator=generator)
        skewed = torch.exp(draw.uniform((num_tasks, 1, width), 0.5, 1.5, generator) * z)
        strength = draw.uniform((num_tasks, 1, width), 1.0, 2.5, generator)
        heavy = torch.sinh(strength * z) / strength
        cuts = draw.normal((num_tasks, 1, width, 4), generator)
        used = torch.arange(4) < torch.randint(1, 5, (num_tasks, 1, width, 1), generator=generator)
        levels = ((z[..., None] > cuts) & used).sum(-1).to(x.dtype)
        mapped = torch.where(kind == 0, skewed, torch.where(kind == 1, heavy, levels))
        return torch.where(chosen, mapped, x)

    def _with_missing(self, x: Tensor, generator) -> Tensor:
        """Standardised columns with a task's share (uniform in ``[0, missing]``) of entries set to 0,
        the column's mean: what the estimators read for NaN."""
        if not self.missing:
            return x
        share = draw.uniform((x.shape[0], 1, 1), 0.0, self.missing, generator)
        return x.masked_fill(draw.uniform(x.shape, 0.0, 1.0, generator) < share, 0.0)

    def _function(self, x: Tensor, read: Tensor, num_outputs: int, generator) -> Tensor:
        """Per-task functions of the columns of ``x`` that ``read`` marks: linear for a share of
        tasks, a random MLP for the others.

        The MLP reads ``x`` rescaled by ``sqrt(max_dim / d)`` (``d`` columns read), so its hidden
        units are as nonlinear for a task with few informative features as for one with many.
        """
        num_tasks, x = x.shape[0], x * read
        params = draw.random_mlp(num_tasks, [self.max_dim, *self.hidden, num_outputs], "tanh", generator)
        widen = (self.max_dim / read.sum(-1, keepdim=True)).sqrt()
        nonlinear = draw.apply_mlp(params, x * widen, "tanh")
        weights = draw.normal((num_tasks, self.max_dim, num_outputs), generator)
        linear = x @ weights
        is_linear = (draw.uniform((num_tasks, 1, 1), 0.0, 1.0, generator) < self.linear_share).float()
        return is_linear * _unit_scale(linear) + (1 - is_linear) * _unit_scale(nonlinear)


def _unit_scale(values: Tensor) -> Tensor:
    """Centred and scaled to unit standard deviation per task (over points and outputs)."""
    centred = values - values.mean(1, keepdim=True)
    return centred / centred.flatten(1).std(1).clamp_min(1e-6)[:, None, None]


class MixtureRegression(_TabularPrior):
    """Regression tasks of random width and noise, linear or nonlinear, with standardised ``x`` and ``y``.

    The noise standard deviation relative to the signal's is log-uniform in ``noise``.
    ``f_query`` is the noiseless target on the same standardised scale as ``y_query``.
    """

    def __init__(
        self,
        max_dim: int = 32,
        min_dim: int = 1,
        linear_share: float = 0.5,
        hidden: tuple[int, ...] = (32,),
        correlation: float = 1.0,
        noise: tuple[float, float] = (0.05, 1.0),
        irrelevant: float = 0.0,
        transformed: float = 0.0,
        missing: float = 0.0,
    ) -> None:
        super().__init__(
            max_dim, min_dim, linear_share, hidden, correlation, irrelevant, transformed, missing
        )
        self.noise = check_range("noise", noise, high=MAX_MAGNITUDE)
        self.output_dim = 1

    def _sample(self, num_tasks, num_train, num_query, generator):
        x, mask = self._inputs(num_tasks, num_train + num_query, generator)
        f = self._function(x, self._relevant(mask, generator), 1, generator)
        noise = _log_uniform((num_tasks, 1, 1), *self.noise, generator)
        y = f + noise * draw.normal(f.shape, generator)
        x, _, _ = draw.standardise_by_train(self._observed(x, generator), num_train)
        x = self._with_missing(x, generator)
        y, mean, scale = draw.standardise_by_train(y, num_train)
        f = (f - mean) / scale
        return TaskBatch(
            x_train=x[:, :num_train] * mask,
            y_train=y[:, :num_train],
            x_query=x[:, num_train:] * mask,
            y_query=y[:, num_train:],
            f_query=f[:, num_train:],
            params={"noise": noise.view(-1), "dims": mask.sum((1, 2))},
        )


class MixtureClassification(_TabularPrior):
    """Classification tasks with a random number of classes in ``[2, max_classes]``, random width.

    True logits are ``g(x) · sharpness + bias``: ``g`` linear or a random MLP scaled to unit
    variance, ``sharpness`` log-uniform in ``sharpness`` (how separable the classes are) and a
    per-class bias of standard deviation ``imbalance`` (unequal class frequencies). The learner
    predicts ``max_classes`` logits; a task with ``C`` classes uses labels ``0..C-1`` only and its
    absent classes have true logit ``-inf``.
    """

    def __init__(
        self,
        max_dim: int = 32,
        max_classes: int = 10,
        min_dim: int = 1,
        linear_share: float = 0.5,
        hidden: tuple[int, ...] = (32,),
        correlation: float = 1.0,
        sharpness: tuple[float, float] = (1.0, 10.0),
        imbalance: float = 0.5,
        irrelevant: float = 0.0,
        transformed: float = 0.0,
        missing: float = 0.0,
    ) -> None:
        super().__init__(
            max_dim, min_dim, linear_share, hidden, correlation, irrelevant, transformed, missing
        )
        self.max_classes = check_int("max_classes", max_classes, low=2)
        self.sharpness = check_range("sharpness", sharpness, high=MAX_MAGNITUDE)
        self.imbalance = check_real("imbalance", imbalance, low=0, high=MAX_MAGNITUDE)
        self.num_classes = self.output_dim = max_classes

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        x, mask = self._inputs(num_tasks, num_points, generator)
        classes = 2 + torch.randint(self.max_classes - 1, (num_tasks,), generator=generator)
        present = torch.arange(self.max_classes) < classes[:, None]
        sharpness = _log_uniform((num_tasks, 1, 1), *self.sharpness, generator)
        bias = self.imbalance * draw.normal((num_tasks, 1, self.max_classes), generator)
        logits = self._function(x, self._relevant(mask, generator), self.max_classes, generator)
        logits = logits * sharpness + bias
        logits = logits.masked_fill(~present[:, None, :], -math.inf)
        probs = torch.softmax(logits, -1).reshape(-1, self.max_classes)
        y = torch.multinomial(probs, 1, generator=generator).view(num_tasks, num_points)
        x, _, _ = draw.standardise_by_train(self._observed(x, generator), num_train)
        x = self._with_missing(x * mask, generator)
        return TaskBatch(
            x_train=x[:, :num_train],
            y_train=y[:, :num_train],
            x_query=x[:, num_train:],
            y_query=y[:, num_train:],
            f_query=logits[:, num_train:],
            params={"num_classes": classes, "dims": mask.sum((1, 2))},
        )
