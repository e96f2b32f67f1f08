"""Checks at the public boundary, so mistakes surface as clear errors instead of torch internals."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from amortized.errors import ConfigError, DTypeError, LabelError, NonFiniteError, ShapeError


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int, or raise naming ``name`` if it is not a (strictly) positive integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a boolean (``True`` or ``False``, not ``1`` or ``"yes"``)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {type(value).__name__} {value!r}")
    return value


def check_real(name: str, value: object, *, low: float | None = None, positive: bool = False) -> float:
    """Return ``value`` as a finite float, at least ``low`` (strictly above 0 if ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise listing the valid ones."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value  # type: ignore[return-value]


def check_inputs(name: str, x: object, input_dim: int | None = None) -> Tensor:
    """Validate a batch of task inputs ``[tasks, points, features]`` of floats, all finite."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ShapeError(f"{name} must have shape [tasks, points, features], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DTypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if input_dim is not None and x.shape[-1] != input_dim:
        raise ShapeError(
            f"{name} has {x.shape[-1]} features but the learner was built for input width "
            f"{input_dim}; got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"{name} is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{name} contains NaN or infinity")
    return x


def check_targets(
    name: str, y: object, x: Tensor, *, num_classes: int | None, output_dim: int | None = None
) -> Tensor:
    """Validate targets for inputs ``x``: ``[tasks, points, out]`` floats or ``[tasks, points]`` labels."""
    if not isinstance(y, Tensor):
        raise DTypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if num_classes is None:
        if y.dim() != 3 or y.shape[:2] != x.shape[:2]:
            raise ShapeError(
                f"{name} must have shape [tasks, points, outputs] = [{x.shape[0]}, {x.shape[1]}, "
                f"{output_dim or 'out'}] to match the inputs, got {tuple(y.shape)}"
            )
        if output_dim is not None and y.shape[-1] != output_dim:
            raise ShapeError(f"{name} has {y.shape[-1]} outputs but the learner predicts {output_dim}")
        if not y.is_floating_point():
            raise DTypeError(f"{name} must be a floating-point tensor for regression, got {y.dtype}")
        if not torch.isfinite(y).all():
            raise NonFiniteError(f"{name} contains NaN or infinity")
        return y
    if y.dim() != 2 or y.shape != x.shape[:2]:
        raise ShapeError(
            f"{name} must have shape [tasks, points] = [{x.shape[0]}, {x.shape[1]}] of class "
            f"labels, got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise DTypeError(f"{name} must hold integer class labels, got {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise LabelError(
            f"{name} holds labels in [{int(y.min())}, {int(y.max())}] but the learner has "
            f"{num_classes} classes (labels must be in [0, {num_classes - 1}])"
        )
    return y.long()
