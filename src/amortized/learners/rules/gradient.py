"""The gradient step: ``v ← v - α ∇_v L(B; v)``, what MAML, Meta-SGD and CAVIA adapt with."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from amortized.learners.base import loss_gradient
from amortized.learners.rules.spec import RuleSpec, Target
from amortized.learners.state import State
from amortized.validation import MAX_MAGNITUDE, check_bool, check_real


@dataclass(frozen=True)
class GradientStep(RuleSpec):
    """A gradient step of size ``inner_lr`` per entry of the state; ``learn_lr`` meta-learns it.

    Meta-gradients flow through the inner gradient (second order) unless ``first_order``.
    """

    inner_lr: float = 0.01
    learn_lr: bool = False
    first_order: bool = False

    def __post_init__(self) -> None:
        inner_lr = check_real("inner_lr", self.inner_lr, positive=True, high=MAX_MAGNITUDE)
        object.__setattr__(self, "inner_lr", inner_lr)
        check_bool("learn_lr", self.learn_lr)
        check_bool("first_order", self.first_order)

    def build(self, target: Target) -> GradientStepRule:
        return GradientStepRule(self, target)


class GradientStepRule(nn.Module):
    """The module of a :class:`GradientStep`: its (learned or fixed) log step sizes."""

    def __init__(self, spec: GradientStep, target: Target) -> None:
        super().__init__()
        self.spec = spec
        log_lr = torch.full((target.size,), math.log(spec.inner_lr))
        if spec.learn_lr:
            self.log_lr = nn.Parameter(log_lr)
        else:
            self.register_buffer("log_lr", log_lr)

    def init(self, value: Tensor) -> State:
        return State.initial(value)

    def step(self, target: Target, state: State, x: Tensor, y: Tensor) -> State:
        create_graph = torch.is_grad_enabled() and not self.spec.first_order
        grad, _ = loss_gradient(target.loss_of(x, y), state.value, create_graph=create_graph)
        return state.advance(state.value - self.log_lr.exp() * grad, x.shape[1])
