"""Learned learners as a representation refined by an update rule.

A :class:`ComposedLearner` holds a ``representation`` (what is adapted per task: the parameters of a
fixed model, or a latent read by a decoder) and a ``rule`` (how a mini-batch refines it: a gradient
step, a learned transformer update). The named learners of the parametric and explicit regimes are
these compositions; the rule is passed as its spec (:mod:`amortized.learners.rules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import Learner
from amortized.learners.rules import RuleSpec
from amortized.learners.state import State


class ComposedLearner(Learner):
    """A learner whose state value is a flat per-task vector, refined by a rule.

    Subclasses build ``self.representation`` (with ``size``, ``initial(num_tasks)`` and
    ``forward(value, x)``) and ``self.rule`` (built from a spec of type ``rule_type``).
    """

    rule_type: ClassVar[type[RuleSpec]]
    legacy_representation_keys: ClassVar[tuple[str, ...]] = ()
    """Weight names that checkpoints written before composition kept at the top level."""
    legacy_defaults: ClassVar[dict[str, Any]] = {}
    """Options added since, with the value a checkpoint that does not list them was built with."""
    legacy_rule_defaults: ClassVar[dict[str, Any]] = {}
    """The rule's defaults when its options were listed flat (before they became the recipe)."""

    representation: nn.Module
    rule: nn.Module

    @property
    def size(self) -> int:
        return self.representation.size

    def forward_value(self, value: Tensor, x: Tensor) -> Tensor:
        return self.representation(value, x)

    def loss_of(self, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda value: self.likelihood.loss(self.representation(value, x), y)

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        return self.rule.init(self.representation.initial(num_tasks))

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        return self.rule.step(self, state, x, y)

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        if x is None:
            raise ConfigError(f"{type(self).__name__}.predict needs the points x to predict")
        return self.representation(state.value, x)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights, including those saved before composition (``theta0``, ``chunks.…`` at the top)."""
        nested = {}
        for name, value in state_dict.items():
            if not name.startswith(("representation.", "rule.")):
                legacy = name.split(".")[0] in self.legacy_representation_keys
                name = f"{'representation' if legacy else 'rule'}.{name}"
            nested[name] = value
        return super().load_state_dict(nested, strict=strict, assign=assign)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Learner:
        """Rebuild from a checkpoint's config, including those that listed the rule's options flat."""
        config = {**cls.legacy_defaults, **config}
        option_names = set(cls.rule_type.__dataclass_fields__)
        flat = {name: config.pop(name) for name in list(config) if name in option_names}
        if flat:
            config["rule"] = {**cls.legacy_rule_defaults, **flat, **(config.get("rule") or {})}
        return cls(**config)
