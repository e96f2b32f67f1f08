"""Checks at the public boundary, so mistakes surface as clear errors instead of torch internals."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from amortized.errors import ConfigError, DTypeError, LabelError, NonFiniteError, ShapeError

MAX_MAGNITUDE = 1e6
"""The largest value a scale option may take: a learning rate, a noise level, an amplitude, an input
range. Data computed in float32 overflows once squares pass 3e38 (values near 1e19), so a larger
scale can only give infinities; 1e6 leaves ample room for any standardised problem."""
MAX_SEED = 2**63
"""Seeds are integers in ``[0, 2**63)``: torch's generators take 64 bits, and derived seeds need room."""


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` (either bound optional), or raise naming ``name``.

    Any integral number is accepted (``numpy.int64`` included), but not a bool.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ConfigError(f"{name} must be {'> 0' if low == 1 else f'>= {low}'}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value}")
    return value


def check_divisible(name: str, value: int, by_name: str, by: int) -> int:
    """Return ``value`` if ``by`` divides it (a width split over attention heads)."""
    if value % by:
        raise ConfigError(f"{name} {value} must be divisible by {by_name} {by}")
    return value


def check_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    """Return ``value`` as an int if it is a positive integer (or zero, with ``allow_zero``)."""
    return check_int(name, value, low=0 if allow_zero else 1)


def check_int_list(name: str, values: object) -> list[int]:
    """A non-empty list of distinct positive integers, sorted (steps or sizes to evaluate at)."""
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    checked = [check_positive_int(f"{name} entry", value) for value in values]
    if len(set(checked)) != len(checked):
        raise ConfigError(f"{name} holds duplicates: {checked}")
    return sorted(checked)


def _listed(values: object) -> list[Any] | None:
    """``values`` as a list if it is a collection of values (not a string or a table), else ``None``."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        return None
    return list(values)


def check_real_list(name: str, values: object, **bounds: Any) -> list[float]:
    """A non-empty list (any iterable: a numpy array...) of finite numbers, each within ``bounds``
    (:func:`check_real`'s), in order."""
    listed = _listed(values)
    if not listed:
        raise ConfigError(f"{name} must be a non-empty list of numbers, got {values!r}")
    return [check_real(name, value, **bounds) for value in listed]


def check_widths(name: str, values: object, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Layer widths: a list of positive integers in the order given (empty: no hidden layer)."""
    listed = _listed(values)
    if listed is None or (not listed and not allow_empty):
        least = "" if allow_empty else " (at least one)"
        raise ConfigError(f"{name} must be a list of layer widths{least}, e.g. [64], got {values!r}")
    return tuple(check_positive_int(f"{name} entry", value) for value in listed)


def check_int_or_range(name: str, value: object) -> int | tuple[int, int]:
    """A positive integer, or a range ``(low, high)`` of them with ``low <= high``."""
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ConfigError(f"{name} range must be (low, high), got {value!r}")
        low, high = (check_positive_int(name, entry) for entry in value)
        if high < low:
            raise ConfigError(f"{name} range must be (low, high) with low <= high, got {value!r}")
        return (low, high)
    return check_positive_int(name, value)


def check_seed(name: str, value: object, *, bits: int = 63) -> int:
    """Return ``value`` as an int if it is a seed, an integer in ``[0, 2**bits)`` (torch takes 63 bits;
    numpy's legacy and scikit-learn's ``random_state`` 32)."""
    seed = check_int(name, value, low=0)
    bits = min(bits, MAX_SEED.bit_length() - 1)
    if seed >= 2**bits:
        raise ConfigError(f"{name} must be < 2**{bits}, got {seed}")
    return seed


def check_str(name: str, value: object) -> str:
    """Return ``value`` if it is a string (a name, a path)."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {type(value).__name__} {value!r}")
    return value


def check_path(name: str, value: object) -> Path:
    """``value`` as a :class:`~pathlib.Path` if it is a string or path-like (a file or folder)."""
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"{name} must be a path (a string), got {type(value).__name__} {value!r}")
    return Path(value)


def check_keys(
    name: str, table: object, valid: Iterable[str], *, required: Iterable[str] = ()
) -> dict[str, Any]:
    """Return ``table`` if it is a mapping whose keys are all ``valid`` and include ``required``.

    An unknown key is named as ``name.key`` (``key`` if ``name`` is empty) and the valid ones listed,
    so a typo in a preset or an options table says what was meant.
    """
    label = f"{name}." if name else ""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{name or 'the preset'} must be a table, got {type(table).__name__} {table!r}")
    valid = list(valid)
    unknown = sorted(set(table) - set(valid))
    if unknown:
        named = ", ".join(label + str(key) for key in unknown)
        raise ConfigError(f"unknown key(s) {named}; valid: {', '.join(sorted(valid))}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{name or 'the preset'} needs a {key!r} key")
    return dict(table)


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a boolean (``True`` or ``False``, not ``1`` or ``"yes"``)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {type(value).__name__} {value!r}")
    return value


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
    below: float | None = None,
) -> float:
    """Return ``value`` as a finite float in the given bounds, or raise naming ``name``.

    ``low`` and ``high`` are inclusive; ``positive`` means strictly above 0 and ``below`` strictly
    under it. Every real number option goes through here, so none accepts NaN or infinity.
    """
    number = math.inf
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer beyond float range
            number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    value = number
    if positive and not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")
    if below is not None and not value < below:
        raise ConfigError(f"{name} must be < {below}, got {value!r}")
    return value


def check_range(
    name: str, value: object, *, positive: bool = True, integer: bool = False, high: float | None = None
) -> tuple[float, float]:
    """Return ``value`` as a pair ``(low, high)`` of finite numbers with ``low <= high``.

    ``positive`` requires ``0 < low``, ``integer`` whole numbers (returned as ints), ``high`` an
    upper bound on the magnitude of both ends.
    """
    kind = "integers" if integer else "numbers"
    order = "0 < low <= high" if positive else "low <= high"
    problem = f"{name} must be a range (low, high) of finite {kind} with {order}"
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{problem}, got {value!r}")
    try:
        ends = [check_real(name, end) for end in value]
    except ConfigError:
        raise ConfigError(f"{problem}, got {value!r}") from None
    if not ends[0] <= ends[1] or (positive and not ends[0] > 0):
        raise ConfigError(f"{problem}, got {value!r}")
    if integer and not all(end.is_integer() for end in ends):
        raise ConfigError(f"{problem}, got {value!r}")
    if high is not None and max(abs(end) for end in ends) > high:
        raise ConfigError(f"{name} must lie within [-{high:g}, {high:g}], got {value!r}")
    return (int(ends[0]), int(ends[1])) if integer else (ends[0], ends[1])


def check_choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise listing the valid ones."""
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
    return value  # type: ignore[return-value]


def check_device(name: str, value: object) -> torch.device:
    """``value`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a :class:`torch.device`) as a device
    this machine's torch can compute on, or a :class:`ConfigError` saying why not."""
    if not isinstance(value, str | torch.device):
        raise ConfigError(f"{name} must be a device name such as 'cpu' or 'cuda', got {value!r}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ConfigError(f"{name}: unknown device {value!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{name} {str(value)!r}: torch {torch.__version__} sees no CUDA GPU on this machine "
                "(a CPU build, or no driver); use 'cpu'"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{name} {str(value)!r}: this machine has {count} CUDA GPU(s), numbered from 0")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name} {str(value)!r}: torch sees no Apple GPU (MPS) on this machine; use 'cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"{name}: device {str(value)!r} cannot train or evaluate; use 'cpu', 'cuda' or 'mps'"
        )
    return device


def _check_finite_cast(name: str, value: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``value`` in ``dtype`` (if given), refused if it holds NaN or infinity before or after the cast."""
    cast = value if dtype is None else value.to(dtype)
    if not torch.isfinite(cast).all():
        if torch.isfinite(value).all():
            largest = float(value.abs().max())
            raise NonFiniteError(
                f"{name} holds values too large for {dtype} (up to {largest:.3g}): rescale the data"
            )
        raise NonFiniteError(f"{name} contains NaN or infinity")
    return cast


def check_inputs(
    name: str, x: object, input_dim: int | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Validate a batch of task inputs ``[tasks, points, features]`` of floats, all finite.

    Floats of any precision are cast to ``dtype`` (the learner's), if given; integers are refused.
    """
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
    return _check_finite_cast(name, x, dtype)


def check_targets(
    name: str,
    y: object,
    x: Tensor,
    *,
    num_classes: int | None,
    output_dim: int | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Validate targets for inputs ``x``: ``[tasks, points, out]`` floats or ``[tasks, points]`` labels.

    Float targets are cast to ``dtype`` if given; float labels are accepted when they are whole numbers.
    """
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
        return _check_finite_cast(name, y, dtype)
    if y.dim() != 2 or y.shape != x.shape[:2]:
        raise ShapeError(
            f"{name} must have shape [tasks, points] = [{x.shape[0]}, {x.shape[1]}] of class "
            f"labels, got {tuple(y.shape)}"
        )
    if y.dtype == torch.bool or y.is_complex():
        raise DTypeError(f"{name} must hold integer class labels, got {y.dtype}")
    if y.is_floating_point():
        if not torch.isfinite(y).all():
            raise NonFiniteError(f"{name} contains NaN or infinity")
        if not torch.equal(y, y.round()):
            raise DTypeError(f"{name} must hold integer class labels, got {y.dtype} with fractional values")
    if y.numel() and (float(y.min()) < 0 or float(y.max()) >= num_classes):
        raise LabelError(
            f"{name} holds labels in [{y.min().item()}, {y.max().item()}] but the learner has "
            f"{num_classes} classes (labels must be in [0, {num_classes - 1}])"
        )
    return y.long()
