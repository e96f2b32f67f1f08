"""Explicit learners: a latent ``z`` refined from the data, read by a learned decoder ``f_γ(x, z)``.

- :class:`LatentUpdate`: a transformer maps ``z`` and the mini-batch (observations and/or
  ``∂L/∂z`` through the decoder) to an update of ``z`` (neural-process style, iterated).
- :class:`LatentSGD`: ``z`` refined by plain gradient steps (CAVIA / prompt tuning): the
  non-amortized corner of the taxonomy, beside the amortized one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from amortized.learners.base import plain_arguments, seeded
from amortized.learners.composed import ComposedLearner
from amortized.learners.representations import Latent
from amortized.learners.rules import GradientStep, TransformerUpdate
from amortized.learners.rules.transformer import LEGACY_TRANSFORMER_DEFAULTS

LEGACY_LATENT_KEYS = ("z0", "decoder")
DEFAULT_INPUTS = ("observations", "gradients")
"""What ``LatentUpdate``'s rule reads unless told otherwise."""
LEGACY_LATENT_DEFAULTS: dict[str, Any] = {"linear_skip": False}
"""Checkpoints from before the linear skip was an option had none."""


class LatentUpdate(ComposedLearner):
    """A transformer refines ``z`` from the mini-batch; the decoder ``f_γ(x, z)`` predicts.

    The rule is a :class:`TransformerUpdate`; ``linear_skip`` (see
    :class:`amortized.learners.representations.LatentDecoder`) makes the decoder contain every linear
    model. Unless the rule's ``inputs`` say otherwise, it reads observations and gradients: the Newton
    direction (``"newton"``) is opt-in here, as its Hessian goes through the decoder (about 1.5× the
    cost of a step) and it has not been measured at the regimes benchmark's budget.
    """

    regime = "explicit"
    rule_type = TransformerUpdate
    legacy_rule_defaults = LEGACY_TRANSFORMER_DEFAULTS
    legacy_representation_keys = LEGACY_LATENT_KEYS
    legacy_defaults = LEGACY_LATENT_DEFAULTS

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        latent_dim: int = 32,
        decoder_hidden: tuple[int, ...] | list[int] = (64, 64),
        linear_skip: bool = True,
        skip_features: int = 0,
        rule: TransformerUpdate | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        spec = TransformerUpdate.from_value(rule)
        if spec.inputs is None:
            spec = replace(spec, inputs=DEFAULT_INPUTS)
        super().__init__(input_dim, output_dim, task, None)
        with seeded(seed):
            self.representation = Latent(
                input_dim, output_dim, latent_dim, decoder_hidden, linear_skip, skip_features
            )
            self.rule = spec.build(self)
        self.config = {**config, "rule": self.rule.spec.as_dict()}


class LatentSGD(ComposedLearner):
    """CAVIA: ``z ← z - α ∂L/∂z`` through the learned decoder, from a learned ``z_0``.

    The rule is a :class:`GradientStep`, with ``inner_lr`` 0.1 unless given. The decoder takes the
    same options as :class:`LatentUpdate`'s (``linear_skip``, ``skip_features``).
    """

    regime = "explicit"
    rule_type = GradientStep
    legacy_representation_keys = LEGACY_LATENT_KEYS
    legacy_defaults = LEGACY_LATENT_DEFAULTS

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        latent_dim: int = 32,
        decoder_hidden: tuple[int, ...] | list[int] = (64, 64),
        linear_skip: bool = True,
        skip_features: int = 0,
        rule: GradientStep | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        if rule is None or isinstance(rule, dict):
            rule = {"inner_lr": 0.1, **(rule or {})}
        spec = GradientStep.from_value(rule)
        super().__init__(input_dim, output_dim, task, None)
        with seeded(seed):
            self.representation = Latent(
                input_dim, output_dim, latent_dim, decoder_hidden, linear_skip, skip_features
            )
        self.rule = spec.build(self)
        self.config = {**config, "rule": spec.as_dict()}
