"""Fixed predictors ``f(x; θ)`` as functions of a flat parameter vector, batched over tasks.

``θ`` is ``[tasks, num_params]`` (or ``[num_params]``, shared by all tasks) and ``x`` is
``[tasks, points, input_dim]``; the output is ``[tasks, points, output_dim]``. Layers are evaluated
with batched matrix products (one ``baddbmm`` per layer for all tasks), the fastest way to run
per-task weights on CPU and the one that keeps MAML's second-order meta-gradient cheap.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from amortized.errors import ConfigError, ShapeError
from amortized.memory import check_parameters
from amortized.validation import check_bool, check_choice, check_positive_int, check_widths

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu}


class Predictor:
    """A fixed model family; layer ``i`` has a weight ``[fan_in, fan_out]`` and a bias ``[fan_out]``."""

    kind: str

    def __init__(self, widths: list[int], activation: str, bias: bool) -> None:
        self.widths = widths
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.bias = check_bool("bias", bias)
        self.shapes: list[tuple[int, int]] = list(itertools.pairwise(widths))
        sizes = [fan_in * fan_out + (fan_out if bias else 0) for fan_in, fan_out in self.shapes]
        self.num_params = sum(sizes)
        check_parameters(f"a {self.kind} model of widths {widths}", self.num_params)

    @property
    def input_dim(self) -> int:
        return self.widths[0]

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def init(self, generator: torch.Generator | None = None) -> Tensor:
        """A flat parameter vector with the usual fan-in scaling (weights ~ N(0, 1/fan_in), bias 0)."""
        chunks = []
        for fan_in, fan_out in self.shapes:
            chunks.append(torch.randn(fan_in * fan_out, generator=generator) / math.sqrt(fan_in))
            if self.bias:
                chunks.append(torch.zeros(fan_out))
        return torch.cat(chunks)

    def layers(self, theta: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """Split ``θ`` ``[tasks, P]`` into per-layer ``(weight [tasks, in, out], bias [tasks, 1, out])``."""
        out, offset = [], 0
        for fan_in, fan_out in self.shapes:
            weight = theta[:, offset : offset + fan_in * fan_out].reshape(-1, fan_in, fan_out)
            offset += fan_in * fan_out
            bias = None
            if self.bias:
                bias = theta[:, offset : offset + fan_out].reshape(-1, 1, fan_out)
                offset += fan_out
            out.append((weight, bias))
        return out

    def __call__(self, theta: Tensor, x: Tensor) -> Tensor:
        """Evaluate ``f(x; θ)`` for every task."""
        if theta.dim() == 1:
            theta = theta.expand(x.shape[0], -1)
        if theta.shape[-1] != self.num_params or theta.shape[0] != x.shape[0]:
            raise ShapeError(
                f"theta must be [{x.shape[0]}, {self.num_params}] for inputs of shape "
                f"{tuple(x.shape)}, got {tuple(theta.shape)}"
            )
        if x.shape[-1] != self.input_dim:
            raise ShapeError(f"x has {x.shape[-1]} features, the model expects {self.input_dim}")
        h = x
        activation = ACTIVATIONS[self.activation]
        layers = self.layers(theta)
        for i, (weight, bias) in enumerate(layers):
            h = torch.bmm(h, weight) if bias is None else torch.baddbmm(bias, h, weight)
            if i < len(layers) - 1:
                h = activation(h)
        return h

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "kind")
        return f"{type(self).__name__}({args})"


class Linear(Predictor):
    """``f(x; θ) = x W + b``."""

    kind = "linear"

    def __init__(self, input_dim: int, output_dim: int = 1, bias: bool = True) -> None:
        check_positive_int("input_dim", input_dim)
        check_positive_int("output_dim", output_dim)
        super().__init__([input_dim, output_dim], "relu", bias)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "bias": self.bias,
        }


class MLP(Predictor):
    """A multilayer perceptron with the given hidden widths and activation."""

    kind = "mlp"

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        hidden: tuple[int, ...] = (40, 40),
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        check_positive_int("input_dim", input_dim)
        check_positive_int("output_dim", output_dim)
        hidden = check_widths("hidden", hidden)
        super().__init__([input_dim, *hidden, output_dim], activation, bias)
        self.hidden = hidden

    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "bias": self.bias,
        }


def predictor_from_config(config: dict[str, Any]) -> Predictor:
    """Rebuild a predictor from its ``config``."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind == "linear":
        return Linear(**config)
    if kind == "mlp":
        config["hidden"] = tuple(config.get("hidden", (40, 40)))
        return MLP(**config)
    raise ConfigError(f"unknown predictor kind {kind!r}; choose 'linear' or 'mlp'")
