"""The two-layer perceptron the learners embed their inputs with."""

from __future__ import annotations

from torch import nn

from amortized.memory import check_parameters


def mlp(inputs: int, width: int, outputs: int | None = None) -> nn.Sequential:
    """``Linear(inputs, width) → GELU → Linear(width, outputs or width)``, refused before it is built
    if its weights exceed the memory budget."""
    check_parameters(f"width={width}", (inputs + 1) * width + (width + 1) * (outputs or width))
    return nn.Sequential(nn.Linear(inputs, width), nn.GELU(), nn.Linear(width, outputs or width))
