"""Parametric learners: a fixed model ``f`` (linear, MLP) whose flat ``θ`` a learned rule produces.

- :class:`LearnedInit`: MAML (Meta-SGD with ``learn_lr``): gradient steps from a learned ``θ_0``.
- :class:`LearnedUpdate`: a transformer maps ``θ`` and the mini-batch (observations and/or the
  loss gradient) to an update. One step over all data is a hypernetwork; gradients only is a
  learned optimizer.
"""

from __future__ import annotations

from typing import Any

from amortized.learners.base import plain_arguments, seeded
from amortized.learners.composed import ComposedLearner
from amortized.learners.representations import ModelParameters
from amortized.learners.rules import GradientStep, TransformerUpdate
from amortized.learners.rules.transformer import LEGACY_TRANSFORMER_DEFAULTS
from amortized.models.predictors import Predictor, predictor_from_config


def _model(model: Predictor | dict) -> Predictor:
    return predictor_from_config(model) if isinstance(model, dict) else model


class LearnedInit(ComposedLearner):
    """MAML: ``θ ← θ - α ∇L(B; θ)`` from a learned ``θ_0`` (a :class:`GradientStep` rule).

    ``rule=GradientStep(learn_lr=True)`` learns ``α`` per parameter (Meta-SGD).
    """

    regime = "parametric"
    rule_type = GradientStep
    legacy_representation_keys = ("theta0",)

    def __init__(
        self,
        model: Predictor | dict,
        task: str = "regression",
        rule: GradientStep | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        model = _model(model)
        spec = GradientStep.from_value(rule)
        super().__init__(model.input_dim, model.output_dim, task, None)
        self.representation = ModelParameters(model, seed)
        self.rule = spec.build(self)
        self.config = {**config, "rule": spec.as_dict()}


class LearnedUpdate(ComposedLearner):
    """A learned update rule for the parameters of a fixed model (hypernetwork / learned optimizer).

    The rule is a :class:`TransformerUpdate`; its options (inputs, width, refinements, ...) are its spec's.
    """

    regime = "parametric"
    rule_type = TransformerUpdate
    legacy_rule_defaults = LEGACY_TRANSFORMER_DEFAULTS
    legacy_representation_keys = ("theta0",)

    def __init__(
        self,
        model: Predictor | dict,
        task: str = "regression",
        rule: TransformerUpdate | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        model = _model(model)
        spec = TransformerUpdate.from_value(rule)
        super().__init__(model.input_dim, model.output_dim, task, None)
        self.representation = ModelParameters(model, seed)
        with seeded(seed):
            self.rule = spec.build(self)
        self.config = {**config, "rule": self.rule.spec.as_dict()}
