"""The two-layer perceptron the learners embed their inputs with."""

from __future__ import annotations

from torch import nn


def mlp(inputs: int, width: int, outputs: int | None = None) -> nn.Sequential:
    """``Linear(inputs, width) → GELU → Linear(width, outputs or width)``."""
    return nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, outputs or width))
