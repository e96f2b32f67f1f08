"""Classification task families: labels drawn from ``softmax(g(x) / temperature)``."""

from __future__ import annotations

import torch

from amortized.tasks import _sampling as draw
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import (
    MAX_MAGNITUDE,
    check_choice,
    check_int,
    check_positive_int,
    check_real,
    check_widths,
)


def _labelled(x, logits, num_train, generator) -> TaskBatch:
    """Draw labels from the logits and cut train and query splits."""
    num_tasks, num_points, num_classes = logits.shape
    probs = torch.softmax(logits, dim=-1).reshape(-1, num_classes)
    y = torch.multinomial(probs, 1, generator=generator).view(num_tasks, num_points)
    return TaskBatch(
        x_train=x[:, :num_train],
        y_train=y[:, :num_train],
        x_query=x[:, num_train:],
        y_query=y[:, num_train:],
        f_query=logits[:, num_train:],
    )


class LinearClassification(TaskFamily):
    """Labels ~ ``softmax(W x / temperature)`` with ``W ~ N(0, 1)``, ``x ~ N(0, I)``.

    ``params`` holds ``weights`` ``[tasks, dim, classes]``; ``f_query`` the true logits ``W x / τ``.
    """

    def __init__(
        self, dim: int, num_classes: int = 2, temperature: float = 1.0, inputs: str = "normal"
    ) -> None:
        self.dim = check_positive_int("dim", dim)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.temperature = check_real("temperature", temperature, low=1 / MAX_MAGNITUDE)
        self.inputs = check_choice("inputs", inputs, ("normal", "uniform"))
        self.input_dim, self.output_dim = dim, num_classes

    def _sample(self, num_tasks, num_train, num_query, generator):
        x = draw.inputs(self.inputs, (num_tasks, num_train + num_query, self.dim), generator)
        weights = draw.normal((num_tasks, self.dim, self.num_classes), generator)
        batch = _labelled(x, x @ weights / self.temperature, num_train, generator)
        batch.params = {"weights": weights}
        return batch


class NonlinearClassification(TaskFamily):
    """Labels ~ ``softmax(g(x) / temperature)`` with ``g`` a random MLP (weights ~ N(0, 1/fan_in))."""

    def __init__(
        self,
        dim: int,
        num_classes: int = 2,
        hidden: tuple[int, ...] = (32,),
        activation: str = "tanh",
        temperature: float = 0.3,
        inputs: str = "normal",
    ) -> None:
        self.dim = check_positive_int("dim", dim)
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.hidden = check_widths("hidden", hidden)
        self.activation = check_choice("activation", activation, tuple(draw.ACTIVATIONS))
        self.temperature = check_real("temperature", temperature, low=1 / MAX_MAGNITUDE)
        self.inputs = check_choice("inputs", inputs, ("normal", "uniform"))
        self.input_dim, self.output_dim = dim, num_classes

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """The data, plus each task's random MLP and its activations."""
        widths = [self.dim, *self.hidden, self.num_classes]
        return super().sample_bytes(num_tasks, num_points) + draw.random_mlp_bytes(
            num_tasks, num_points, widths
        )

    def _sample(self, num_tasks, num_train, num_query, generator):
        x = draw.inputs(self.inputs, (num_tasks, num_train + num_query, self.dim), generator)
        widths = [self.dim, *self.hidden, self.num_classes]
        params = draw.random_mlp(num_tasks, widths, self.activation, generator)
        logits = draw.apply_mlp(params, x, self.activation) / self.temperature
        batch = _labelled(x, logits, num_train, generator)
        batch.params = params
        return batch
