"""A memory budget that sizes are checked against before anything is allocated.

A size that cannot fit (a family of a million inputs, ``1e11`` evaluation tasks, a width of
``2**40``) would otherwise run for minutes and end in "can't allocate memory" or a ``MemoryError``
from inside torch. The checks estimate only the largest tensors, in plain integer arithmetic:

- sampled tasks: ``tasks × points × values per point × 4`` bytes (float32), plus any working tensor
  that grows faster than the data (a Gaussian process's ``points²`` kernels), see
  :meth:`~amortized.tasks.base.TaskFamily.sample_bytes`;
- a network: its parameter count × 4 bytes, counted from its widths before its layers are built
  (meta-training needs about four times that: gradients and Adam's two moments);
- the Bayes reference's per-task ``P × P`` posterior precision matrices (float64).

They are checked where the sizes enter: ``TaskFamily.sample``, the constructors of networks, the
reference's ``init_state``, and a preset's training and evaluation sizes when it is read, so a
``ConfigError`` names the keys at once. The estimates leave out the working memory around these
tensors: what passes can still need a few times the estimate. The budget is 8 GiB unless
``$AMORTIZED_MEMORY_BUDGET`` says otherwise: bytes, or a number with a unit ``K``, ``M``, ``G`` or
``T`` (powers of 1024, e.g. ``64G``).
"""

from __future__ import annotations

import os
import re

from amortized.errors import AmortizedError, ConfigError

BUDGET_ENV = "AMORTIZED_MEMORY_BUDGET"
DEFAULT_BUDGET = 8 * 2**30
"""Fixed rather than a share of this machine's memory, so a preset is accepted or refused alike everywhere."""
FLOAT_BYTES = 4
"""Bytes per value of sampled data and weights (float32)."""

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def memory_budget() -> int:
    """The budget in bytes: ``$AMORTIZED_MEMORY_BUDGET`` (``64G``, ``512M``, ``17179869184``), else 8 GiB."""
    text = os.environ.get(BUDGET_ENV)
    if text is None:
        return DEFAULT_BUDGET
    match = _SIZE.match(text)
    budget = int(float(match.group(1)) * _UNITS[match.group(2).upper()]) if match else 0
    if budget <= 0:
        raise ConfigError(f"{BUDGET_ENV} must be a positive size such as 64G or 17179869184, got {text!r}")
    return budget


def format_bytes(size: int) -> str:
    """``size`` in the largest binary unit that keeps it at least 1, e.g. ``"1.5 GiB"``."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} B"


def check_memory(
    what: str, size: int, *, held: str, remedy: str, error: type[AmortizedError] = ConfigError
) -> None:
    """Raise ``error`` in one line if ``size`` bytes, needed by ``what``, exceed :func:`memory_budget`.

    ``what`` names the options responsible (``"width=4096, depth=8"``), ``held`` what the bytes hold
    and ``remedy`` what to lower; the message adds the estimate, the budget and how to raise it.
    """
    budget = memory_budget()
    if size > budget:
        raise error(
            f"{what} needs about {format_bytes(size)} for {held}, above the memory budget of "
            f"{format_bytes(budget)}; {remedy}, or raise the budget with {BUDGET_ENV}=SIZE "
            f"(e.g. {BUDGET_ENV}=64G)"
        )


def check_parameters(what: str, count: int) -> None:
    """Refuse a network of ``count`` parameters, before it is built, if its weights exceed the budget."""
    check_memory(what, count * FLOAT_BYTES, held="its weights", remedy="use smaller widths")
