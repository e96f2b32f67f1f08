"""Random draws shared by the synthetic task families."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from amortized.memory import FLOAT_BYTES
from amortized.validation import check_choice


def normal(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator)


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None):
    return low + (high - low) * torch.rand(shape, generator=generator)


def inputs(kind: str, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Standard normal inputs, or uniform on [-1, 1]."""
    check_choice("inputs", kind, ("normal", "uniform"))
    return normal(shape, generator) if kind == "normal" else uniform(shape, -1.0, 1.0, generator)


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def random_mlp(
    num_tasks: int,
    widths: list[int],
    activation: str,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """Per-task weights of an MLP with ``widths`` (input first), scaled by 1/sqrt(fan_in)."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        params[f"weight{i}"] = normal((num_tasks, fan_in, fan_out), generator) / fan_in**0.5
        params[f"bias{i}"] = normal((num_tasks, 1, fan_out), generator) * 0.1
    return params


def random_mlp_bytes(num_tasks: int, num_points: int, widths: list[int]) -> int:
    """Bytes of :func:`random_mlp`'s weights and of its activations at ``num_points`` points, per task."""
    weights = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(widths))
    return num_tasks * (weights + num_points * sum(widths[1:])) * FLOAT_BYTES


def apply_mlp(params: dict[str, Tensor], x: Tensor, activation: str) -> Tensor:
    """Evaluate per-task MLP weights from :func:`random_mlp` on ``x`` ``[tasks, points, in]``."""
    num_layers = len(params) // 2
    h = x
    for i in range(num_layers):
        h = torch.baddbmm(params[f"bias{i}"], h, params[f"weight{i}"])
        if i < num_layers - 1:
            h = ACTIVATIONS[activation](h)
    return h


def standardise_by_train(values: Tensor, num_train: int) -> tuple[Tensor, Tensor, Tensor]:
    """Centre and scale ``values`` ``[tasks, points, k]`` by the first ``num_train`` points' mean and
    standard deviation per task and column (constant columns, such as padding, are only centred).
    Returns the result and the statistics, to put other values on the same scale."""
    std, mean = torch.std_mean(values[:, :num_train], dim=1, keepdim=True, correction=0)
    scale = torch.where(std > 1e-6, std, torch.ones_like(std))
    return (values - mean) / scale, mean, scale
