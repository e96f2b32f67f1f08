"""What every update rule shares: a frozen, validated spec, and the target it updates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.validation import check_keys


class Target(Protocol):
    """What a rule updates: a per-task value read by ``f(x; value)``, with the learner's loss.

    Composed learners are their rules' targets; the representation decides what ``value`` is (the
    parameters of a fixed model, a latent read by a decoder, query predictions).
    """

    input_dim: int
    output_dim: int
    num_classes: int | None

    @property
    def size(self) -> int:
        """Entries of a flat value ``[tasks, size]`` (rules that chunk the value into tokens)."""

    def forward_value(self, value: Tensor, x: Tensor) -> Tensor:
        """Predictions ``f(x; value)`` at ``x`` ``[tasks, points, D]``."""

    def loss_of(self, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
        """The per-task loss ``[tasks]`` on ``(x, y)`` as a function of the value."""


@dataclass(frozen=True)
class RuleSpec:
    """A rule's options as plain, frozen data; :meth:`build` makes the module holding its weights."""

    @classmethod
    def from_value(cls, value: RuleSpec | Mapping[str, Any] | None) -> RuleSpec:
        """The spec itself, the defaults for ``None``, or a spec from a table of options."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            options = check_keys("rule", value, [field.name for field in fields(cls)])
            try:
                return cls(**options)
            except ConfigError as error:
                raise ConfigError(f"rule.{error}") from None
        raise ConfigError(f"rule must be a {cls.__name__} or a table of its options, got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data (lists for tuples), as checkpoints and presets hold them."""
        return {
            name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()
        }

    def build(self, target: Target) -> nn.Module:
        raise NotImplementedError
