"""Parametric learners: a fixed model ``f`` (linear, MLP) whose flat ``θ`` a learned rule produces.

- :class:`LearnedInit`: MAML (Meta-SGD with ``learn_lr``): SGD steps from a learned ``θ_0``.
- :class:`LearnedUpdate`: a transformer maps ``θ`` and the mini-batch (observations and/or the
  loss gradient) to an update. One step over all data is a hypernetwork; gradients only is a
  learned optimizer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from amortized.learners._shared import (
    _GradientStep,
    _TransformerUpdate,
    seeded,
)
from amortized.learners.base import plain_arguments
from amortized.learners.state import State
from amortized.models.predictors import Predictor, predictor_from_config


def _model(model: Predictor | dict) -> Predictor:
    return predictor_from_config(model) if isinstance(model, dict) else model


class LearnedInit(_GradientStep):
    """MAML: ``θ ← θ - α ∇L(B; θ)`` from a learned ``θ_0``; ``learn_lr`` learns ``α`` per parameter."""

    regime = "parametric"

    def __init__(
        self,
        model: Predictor | dict,
        task: str = "regression",
        inner_lr: float = 0.01,
        learn_lr: bool = False,
        first_order: bool = False,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        model = _model(model)
        super().__init__(model.input_dim, model.output_dim, task, None)
        self.model = model
        self.theta0 = nn.Parameter(model.init(torch.Generator().manual_seed(seed)))
        self._init_step_size(model.num_params, inner_lr, learn_lr, first_order)
        self.config = config

    def _forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.model(value, x)

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return State.initial(self.theta0.expand(num_tasks, -1))


class LearnedUpdate(_TransformerUpdate):
    """A learned update rule for the parameters of a fixed model (hypernetwork / learned optimizer)."""

    regime = "parametric"

    def __init__(
        self,
        model: Predictor | dict,
        task: str = "regression",
        inputs: tuple[str, ...] | list[str] = ("observations", "gradients"),
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        chunk_size: int = 32,
        memory_tokens: int = 0,
        refinements: int = 1,
        scale_by_share: bool = False,
        momentum: bool = False,
        taper_refinements: bool = False,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        model = _model(model)
        super().__init__(model.input_dim, model.output_dim, task, None)
        self.model = model
        with seeded(seed):
            self._build(
                model.num_params,
                inputs,
                width,
                depth,
                heads,
                chunk_size,
                memory_tokens,
                refinements,
                scale_by_share,
                momentum,
                taper_refinements,
            )
        self.theta0 = nn.Parameter(model.init(torch.Generator().manual_seed(seed)))
        self.config = config

    def _forward(self, value: Tensor, x: Tensor) -> Tensor:
        return self.model(value, x)

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return self._initial(self.theta0.expand(num_tasks, -1))
