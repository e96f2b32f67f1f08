"""Checkpoints: written atomically, checked against a digest, loaded without running code.

A checkpoint is a ``torch.save`` file of a dict holding the ``format`` marker, the ``version``, the
payload and (from version 2) ``sha256``, a digest of everything else, so a flipped bit is an error
rather than wrong weights. Saving keeps the replaced file as ``.prev``; loading uses it instead of a
missing or damaged file only when it holds the same thing (:func:`checkpoint_identity`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from amortized.errors import CheckpointError
from amortized.learners.base import Learner

FORMAT = "amortized-checkpoint"
VERSION = 2
"""Version 2 added the ``sha256`` digest; version 1 files (no digest) still load."""
DIGEST = "sha256"
IDENTITY_KEYS = ("learner", "train_config", "family")
"""The payload entries that say what a checkpoint is of: the learner and, for a run, its settings."""


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


def checkpoint_identity(payload: Mapping[str, Any]) -> str:
    """What a checkpoint is of, as a string: its learner's description and any run settings it holds.

    Two checkpoints with the same identity can stand in for each other after damage; a caller that
    knows what it expects (training resume) passes this identity to :func:`load_checkpoint`.
    """
    return json.dumps({key: payload.get(key) for key in IDENTITY_KEYS}, sort_keys=True, default=repr)


def _digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a payload's content: its structure, plain values and tensors' bytes, in order.

    Hashes values rather than the file, so it does not depend on how torch lays the file out.
    """
    hasher = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            hasher.update(f"tensor {value.dtype} {tuple(value.shape)}\n".encode())
            hasher.update(data.numpy())
        elif isinstance(value, Mapping):
            hasher.update(f"mapping {len(value)}\n".encode())
            for key, item in value.items():
                feed(key)
                feed(item)
        elif isinstance(value, list | tuple):
            hasher.update(f"sequence {len(value)}\n".encode())
            for item in value:
                feed(item)
        else:
            text = repr(value)
            hasher.update(f"{type(value).__name__} {len(text)}\n{text}".encode())

    feed(payload)
    return hasher.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` and its digest to ``path`` atomically (temp file, fsync, rename), keeping the old.

    A crash at any point leaves either the old or the new checkpoint complete on disk.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; save to a file in it, e.g. {path / 'checkpoint.pt'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"format": FORMAT, "version": VERSION, **payload}
    temporary = _temporary(path)
    with open(temporary, "wb") as handle:
        torch.save({**content, DIGEST: _digest(content)}, handle)
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


def _reason(error: Exception) -> str:
    """torch's loading error in one short phrase, without its advice to load with ``weights_only=False``."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+)", text)
        return f"it would run code{f' ({found.group(1)})' if found else ''} when loaded"
    first = text.splitlines()[0] if text else type(error).__name__
    return first.split(". ")[0]


def _open(path: Path) -> dict[str, Any]:
    """The dict a checkpoint file holds, read without running code; its digest is not checked yet."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable amortized checkpoint ({_reason(error)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an amortized checkpoint (no '{FORMAT}' marker)")
    return payload


def _verify(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without its digest, once the digest matches (version 1 files have none).

    Weights holding NaN or infinity are refused too: training never saves them, and a learner built
    from them could only give non-finite predictions.
    """
    content = {key: value for key, value in payload.items() if key != DIGEST}
    checked = DIGEST in payload or payload.get("version", 1) >= 2
    if checked and payload.get(DIGEST) != _digest(content):
        raise CheckpointError(f"{path} is damaged: its content does not match its {DIGEST} digest")
    weights = content.get("weights")
    for name, value in weights.items() if isinstance(weights, Mapping) else ():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path} is damaged: its weight {name} holds NaN or infinity")
    return content


def load_checkpoint(
    path: str | os.PathLike,
    *,
    fallback: bool = True,
    identity: str | None = None,
    keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read a checkpoint; if it is missing or damaged and ``fallback``, perhaps its ``.prev`` one.

    A checkpoint without one of ``keys`` (what the caller reads from it) is refused, named.

    The previous checkpoint stands in, with a warning naming both files, only when its
    :func:`checkpoint_identity` is the damaged one's: read from the damaged file if its content can
    still be read (a digest mismatch), else the ``identity`` the caller expects. Otherwise the damage
    is an error, so a path never silently yields another learner or run than the one saved there.
    """
    path = Path(path)
    previous = previous_path(path)
    expected = identity
    try:
        payload = _open(path)
    except CheckpointError as error:
        failure = error
    else:
        try:
            return _require(path, _verify(path, payload), keys)
        except CheckpointError as error:
            failure, expected = error, checkpoint_identity(payload)
    if not fallback or not previous.exists():
        raise failure
    if expected is None:
        raise CheckpointError(
            f"{failure}; {previous} is not used in its place, as nothing says it holds the same learner "
            f"(rename it to {path.name} to load it)"
        )
    try:
        older = _verify(previous, _open(previous))
    except CheckpointError as error:
        raise CheckpointError(f"{failure}; {error}") from None
    if checkpoint_identity(older) != expected:
        raise CheckpointError(f"{failure}; {previous} holds another learner or run, so it is not used")
    warnings.warn(f"{failure}; using {previous}, the previous checkpoint of the same learner", stacklevel=2)
    return _require(previous, older, keys)


def _require(path: Path, payload: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    missing = [key for key in keys if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: it is not the checkpoint this needs")
    return payload


def learner_from_description(description: dict[str, Any]) -> Learner:
    """Build an untrained learner from ``{"class": name, "config": {...}}``."""
    name = description.get("class")
    if name not in Learner.registry:
        raise CheckpointError(f"unknown learner class {name!r}; known: {', '.join(sorted(Learner.registry))}")
    return Learner.registry[name].from_config(description.get("config", {}))


def _mismatch(error: Exception) -> str:
    """``load_state_dict``'s error in one line: the first weight of each kind of mismatch, and how many."""
    found: dict[str, list[str]] = {}
    for line in str(error).splitlines()[1:]:
        line = line.strip().rstrip(".")
        keys = re.match(r"(Missing|Unexpected) key\(s\) in state_dict: (.*)", line)
        if keys:
            found[f"{keys.group(1).lower()} weight"] = re.findall(r'"([^"]+)"', keys.group(2))
        elif line.startswith("size mismatch for "):
            found.setdefault("size mismatch for", []).append(line.removeprefix("size mismatch for "))
    parts = [
        f"{kind} {items[0]}" + (f" and {len(items) - 1} more" if len(items) > 1 else "")
        for kind, items in found.items()
        if items
    ]
    return "; ".join(parts) or str(error).strip().splitlines()[0]


def _load_weights(path: str | os.PathLike, learner: Learner, weights: Any, *, assign: bool = False) -> None:
    """Load ``weights`` into ``learner``, a mismatch being a one-line :class:`CheckpointError`."""
    try:
        learner.load_state_dict(weights, assign=assign)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(
            f"{path}: weights do not match the learner's config ({_mismatch(error)})"
        ) from None


def save(learner: Learner, path: str | os.PathLike, **extra: Any) -> Path:
    """Save a learner (its description and weights) so :func:`load` can rebuild it."""
    return save_checkpoint(path, {"learner": learner.describe(), "weights": learner.state_dict(), **extra})


def load(path: str | os.PathLike, *, check_size: bool = True) -> Learner:
    """Rebuild a learner from a checkpoint written by :func:`save` or :func:`amortized.train`.

    The learner is first built on the ``meta`` device (shapes, no memory) and the saved weights
    checked against it, so a small file describing a huge learner fails before anything is allocated.
    ``check_size=False`` skips that for files known to be sound (the package's bundled learners):
    the first meta build in a process imports about 2 s of torch modules.
    """
    payload = load_checkpoint(path, keys=("learner", "weights"))
    if check_size:
        with torch.device("meta"):
            shapes = learner_from_description(payload["learner"])
        _load_weights(path, shapes, payload["weights"], assign=True)
    learner = learner_from_description(payload["learner"])
    _load_weights(path, learner, payload["weights"])
    return learner
