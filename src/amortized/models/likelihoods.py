"""Likelihoods: the training loss and the evaluation metrics of a task's predictions, per task."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from amortized.errors import ConfigError

if TYPE_CHECKING:
    from amortized.tasks.causal import OrderMetrics
    from amortized.tasks.generative import SampleMetrics


def mse(pred: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per task: ``[tasks, points, out]`` -> ``[tasks]``."""
    return (pred - y).square().sum(-1).mean(-1)


def gaussian_nll(mean: Tensor, y: Tensor, noise: float) -> Tensor:
    """Negative log-likelihood per point under ``N(mean, noise²)``, averaged per task."""
    squared = (mean - y).square().sum(-1) / (2 * noise**2)
    return (squared + y.shape[-1] * (math.log(noise) + 0.5 * math.log(2 * math.pi))).mean(-1)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per task: logits ``[tasks, points, classes]``, labels ``[tasks, points]``."""
    losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    return losses.view(y.shape).mean(-1)


def error_rate(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of misclassified points per task."""
    return (logits.argmax(-1) != y).float().mean(-1)


class Gaussian:
    """Regression with Gaussian noise: the loss is the MSE, the NLL uses a fixed noise scale."""

    name = "gaussian"
    main_metric = "mse"

    def __init__(self, noise: float | None = None) -> None:
        self.noise = noise if noise and noise > 0 else 1.0

    def loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return mse(pred, y)

    def metrics(self, pred: Tensor, y: Tensor, f_true: Tensor | None = None) -> dict[str, Tensor]:
        """MSE and NLL per task; with noiseless targets, the excess MSE ``E[(f̂(x) - f(x))²]``."""
        out = {"mse": mse(pred, y), "nll": gaussian_nll(pred, y, self.noise)}
        if f_true is not None:
            out["excess_mse"] = mse(pred, f_true)
        return out


class Categorical:
    """Classification: the loss is the cross-entropy; with true logits, the excess error rate."""

    name = "categorical"
    main_metric = "error"

    def loss(self, pred: Tensor, y: Tensor) -> Tensor:
        return cross_entropy(pred, y)

    def metrics(self, pred: Tensor, y: Tensor, f_true: Tensor | None = None) -> dict[str, Tensor]:
        """Error rate and NLL per task; with true logits, error minus the Bayes error rate."""
        out = {"error": error_rate(pred, y), "nll": cross_entropy(pred, y)}
        if f_true is not None:
            bayes_error = 1.0 - torch.softmax(f_true, -1).amax(-1).mean(-1)
            out["excess_error"] = (
                1.0
                - torch.softmax(f_true, -1).gather(-1, pred.argmax(-1, keepdim=True)).squeeze(-1).mean(-1)
                - bayes_error
            )
        return out


if TYPE_CHECKING:
    Likelihood = Gaussian | Categorical | SampleMetrics | OrderMetrics


def likelihood(name: str, noise: float | None = None) -> Likelihood:
    """The likelihood called ``name``: ``"gaussian"``, ``"categorical"``, ``"samples"`` or ``"order"``.

    ``"samples"`` scores generated samples and ``"order"`` causal orders; both are defined with their
    tasks (:mod:`amortized.tasks.generative`, :mod:`amortized.tasks.causal`).
    """
    if name == "gaussian":
        return Gaussian(noise)
    if name == "categorical":
        return Categorical()
    if name == "samples":
        from amortized.tasks.generative import SampleMetrics

        return SampleMetrics()
    if name == "order":
        from amortized.tasks.causal import OrderMetrics

        return OrderMetrics()
    raise ConfigError(f"unknown likelihood {name!r}; choose 'gaussian', 'categorical', 'samples' or 'order'")
