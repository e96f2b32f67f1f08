"""Checkpoints: written atomically, loaded without running code, with a fallback to the last good one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from amortized.errors import CheckpointError
from amortized.learners.base import Learner

FORMAT = "amortized-checkpoint"
VERSION = 1


def previous_path(path: Path) -> Path:
    """Where the previous good checkpoint is kept when a new one replaces it."""
    return path.with_name(path.name + ".prev")


def _temporary(path: Path) -> Path:
    """A temporary name beside ``path``, private to this process."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace ``path``'s content by ``text`` in one step: readers see the old file or the new one."""
    path = Path(path)
    temporary = _temporary(path)
    temporary.write_text(text)
    os.replace(temporary, path)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file, fsync, rename), keeping the old one.

    A crash at any point leaves either the old or the new checkpoint complete on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable amortized checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an amortized checkpoint (no '{FORMAT}' marker)")
    return payload


def load_checkpoint(path: str | os.PathLike, *, fallback: bool = True) -> dict[str, Any]:
    """Read a checkpoint; if it is missing or corrupt and ``fallback``, read the previous good one."""
    path = Path(path)
    if not path.exists() and not previous_path(path).exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return _read(path)
    except (CheckpointError, FileNotFoundError) as error:
        if not fallback or not previous_path(path).exists():
            if isinstance(error, FileNotFoundError):
                raise CheckpointError(f"no checkpoint at {path}") from error
            raise
        return _read(previous_path(path))


def learner_from_description(description: dict[str, Any]) -> Learner:
    """Build an untrained learner from ``{"class": name, "config": {...}}``."""
    name = description.get("class")
    if name not in Learner.registry:
        raise CheckpointError(f"unknown learner class {name!r}; known: {', '.join(sorted(Learner.registry))}")
    return Learner.registry[name].from_config(description.get("config", {}))


def save(learner: Learner, path: str | os.PathLike, **extra: Any) -> Path:
    """Save a learner (its description and weights) so :func:`load` can rebuild it."""
    return save_checkpoint(path, {"learner": learner.describe(), "weights": learner.state_dict(), **extra})


def load(path: str | os.PathLike) -> Learner:
    """Rebuild a learner from a checkpoint written by :func:`save` or :func:`amortized.train`."""
    payload = load_checkpoint(path)
    if "learner" not in payload or "weights" not in payload:
        raise CheckpointError(f"{path} holds no learner (keys: {sorted(payload)})")
    learner = learner_from_description(payload["learner"])
    try:
        learner.load_state_dict(payload["weights"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match the learner's config ({error})") from error
    return learner
