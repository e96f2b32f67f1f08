"""Regression task families: linear, random MLP, sinusoid (MAML's), Gaussian process."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from amortized.errors import ConfigError
from amortized.tasks import _sampling as draw
from amortized.tasks.base import TaskBatch, TaskFamily
from amortized.validation import (
    MAX_MAGNITUDE,
    check_bool,
    check_choice,
    check_positive_int,
    check_range,
    check_real,
    check_widths,
)


def _split(batch_x: Tensor, batch_f: Tensor, noise: float, num_train: int, generator) -> TaskBatch:
    """Add observation noise to noiseless targets and cut train and query splits."""
    y = batch_f + noise * torch.randn(batch_f.shape, generator=generator)
    return TaskBatch(
        x_train=batch_x[:, :num_train],
        y_train=y[:, :num_train],
        x_query=batch_x[:, num_train:],
        y_query=y[:, num_train:],
        f_query=batch_f[:, num_train:],
    )


class LinearRegression(TaskFamily):
    """``y = w·x + b + ε`` with ``w, b ~ N(0, weight_std²)`` and ``ε ~ N(0, noise²)``.

    Inputs are standard normal, or uniform on [-1, 1]. ``params`` holds ``weights`` ``[tasks, dim, 1]``
    and ``bias`` ``[tasks, 1]`` (zero when ``bias=False``).
    """

    def __init__(
        self,
        dim: int,
        noise: float = 0.5,
        bias: bool = True,
        weight_std: float = 1.0,
        inputs: str = "normal",
    ) -> None:
        self.dim = check_positive_int("dim", dim)
        self.noise = check_real("noise", noise, low=0, high=MAX_MAGNITUDE)
        self.bias = check_bool("bias", bias)
        self.weight_std = check_real("weight_std", weight_std, low=0, high=MAX_MAGNITUDE)
        self.inputs = check_choice("inputs", inputs, ("normal", "uniform"))
        self.input_dim, self.output_dim = dim, 1

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        x = draw.inputs(self.inputs, (num_tasks, num_points, self.dim), generator)
        weights = self.weight_std * draw.normal((num_tasks, self.dim, 1), generator)
        bias = self.weight_std * draw.normal((num_tasks, 1), generator)
        if not self.bias:
            bias = torch.zeros_like(bias)
        f = x @ weights + bias[:, None, :]
        batch = _split(x, f, self.noise, num_train, generator)
        batch.params = {"weights": weights, "bias": bias}
        return batch


class NonlinearRegression(TaskFamily):
    """``y = g(x) + ε`` with ``g`` a random MLP (weights ~ N(0, 1/fan_in)) of the given hidden widths."""

    def __init__(
        self,
        dim: int,
        noise: float = 0.1,
        hidden: tuple[int, ...] = (32,),
        activation: str = "tanh",
        inputs: str = "normal",
    ) -> None:
        self.dim = check_positive_int("dim", dim)
        self.noise = check_real("noise", noise, low=0, high=MAX_MAGNITUDE)
        self.hidden = check_widths("hidden", hidden)
        self.activation = check_choice("activation", activation, tuple(draw.ACTIVATIONS))
        self.inputs = check_choice("inputs", inputs, ("normal", "uniform"))
        self.input_dim, self.output_dim = dim, 1

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """The data, plus each task's random MLP and its activations."""
        widths = [self.dim, *self.hidden, 1]
        return super().sample_bytes(num_tasks, num_points) + draw.random_mlp_bytes(
            num_tasks, num_points, widths
        )

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        x = draw.inputs(self.inputs, (num_tasks, num_points, self.dim), generator)
        params = draw.random_mlp(num_tasks, [self.dim, *self.hidden, 1], self.activation, generator)
        f = draw.apply_mlp(params, x, self.activation)
        batch = _split(x, f, self.noise, num_train, generator)
        batch.params = params
        return batch


class Sinusoid(TaskFamily):
    """MAML's sinusoid regression: ``y = A sin(x - φ)``, A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[-5, 5]."""

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        noise: float = 0.0,
    ) -> None:
        self.amplitude = check_range("amplitude", amplitude, high=MAX_MAGNITUDE)
        self.phase = check_range("phase", phase, positive=False, high=MAX_MAGNITUDE)
        self.x_range = check_range("x_range", x_range, positive=False, high=MAX_MAGNITUDE)
        if self.x_range[0] == self.x_range[1]:
            raise ConfigError(f"x_range must be (low, high) with low < high, got {x_range!r}")
        self.noise = check_real("noise", noise, low=0, high=MAX_MAGNITUDE)
        self.input_dim, self.output_dim = 1, 1

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        amplitude = draw.uniform((num_tasks, 1, 1), *self.amplitude, generator)
        phase = draw.uniform((num_tasks, 1, 1), *self.phase, generator)
        x = draw.uniform((num_tasks, num_points, 1), *self.x_range, generator)
        f = amplitude * torch.sin(x - phase)
        batch = _split(x, f, self.noise, num_train, generator)
        batch.params = {"amplitude": amplitude.view(-1), "phase": phase.view(-1)}
        return batch


class GaussianProcess(TaskFamily):
    """Functions from a GP with an RBF kernel; lengthscale and scale drawn uniformly per task.

    Inputs are uniform on ``[-x_bound, x_bound]^dim``. Sampling costs O((train + query)³) per task.
    """

    def __init__(
        self,
        dim: int = 1,
        lengthscale: tuple[float, float] = (0.25, 1.0),
        scale: tuple[float, float] = (0.5, 1.5),
        noise: float = 0.1,
        x_bound: float = 2.0,
    ) -> None:
        self.dim = check_positive_int("dim", dim)
        self.lengthscale = check_range("lengthscale", lengthscale, high=MAX_MAGNITUDE)
        self.scale = check_range("scale", scale, high=MAX_MAGNITUDE)
        self.noise = check_real("noise", noise, low=0, high=MAX_MAGNITUDE)
        self.x_bound = check_real("x_bound", x_bound, positive=True, high=MAX_MAGNITUDE)
        self.input_dim, self.output_dim = dim, 1

    def sample_bytes(self, num_tasks: int, num_points: int) -> int:
        """The data, plus three ``points²`` float64 matrices per task (distances, kernel, Cholesky)."""
        kernels = 3 * num_tasks * num_points**2 * torch.finfo(torch.float64).bits // 8
        return super().sample_bytes(num_tasks, num_points) + kernels

    def _sample(self, num_tasks, num_train, num_query, generator):
        num_points = num_train + num_query
        x = draw.uniform((num_tasks, num_points, self.dim), -self.x_bound, self.x_bound, generator)
        lengthscale = draw.uniform((num_tasks, 1, 1), *self.lengthscale, generator)
        scale = draw.uniform((num_tasks, 1, 1), *self.scale, generator)
        x64 = x.double()
        sq_dist = torch.cdist(x64, x64).square()
        kernel = scale.double() ** 2 * torch.exp(-0.5 * sq_dist / lengthscale.double() ** 2)
        kernel = kernel + 1e-6 * torch.eye(num_points, dtype=torch.float64)
        chol = torch.linalg.cholesky(kernel)
        f = (chol @ draw.normal((num_tasks, num_points, 1), generator).double()).float()
        batch = _split(x, f, self.noise, num_train, generator)
        batch.params = {"lengthscale": lengthscale.view(-1), "scale": scale.view(-1)}
        return batch
