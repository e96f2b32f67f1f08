"""Errors raised for documented mistakes; each names the argument, what was expected and what was given."""

from __future__ import annotations


class AmortizedError(Exception):
    """Base class of every error this library raises on purpose."""


class ShapeError(AmortizedError, ValueError):
    """A tensor has the wrong number of dimensions or a size that does not match."""


class DTypeError(AmortizedError, TypeError):
    """A tensor or array has the wrong dtype (e.g. float labels, integer inputs)."""


class NonFiniteError(AmortizedError, ValueError):
    """Data or a loss contains NaN or infinity."""


class LabelError(AmortizedError, ValueError):
    """Class labels are outside ``[0, num_classes)``."""


class ConfigError(AmortizedError, ValueError):
    """An option is unknown, out of range, or inconsistent with another option."""


class DataError(AmortizedError, ValueError):
    """A data file or directory is missing, malformed, or too small for the requested tasks."""


class CheckpointError(AmortizedError, ValueError):
    """A checkpoint file is truncated, foreign, or does not match the requested learner."""


class DistributedError(AmortizedError, RuntimeError):
    """A distributed run cannot go on: a rank died, hung or stopped, or the ranks could not start."""


class RunFileError(AmortizedError, ValueError):
    """A run folder's file (results, metrics, cached evaluation) is empty, cut short, malformed or foreign."""


class FolderLockedError(AmortizedError, RuntimeError):
    """Another process is writing into the folder: it holds the folder's lock."""
