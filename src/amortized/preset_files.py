"""Preset files: find, read and override TOML presets, and write a run's ``config.toml``.

Nothing here imports torch: the command line lists presets and rejects an unknown preset or a bad
``--set`` at once, before the seconds torch takes to load. :mod:`amortized.config` checks a
preset's keys and values and builds the experiment it describes.
"""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from amortized.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_PRESET = "quickstart"

_TOP_KEYS = ("preset", "description", "data", "family", "train", "evaluation", "learners", "baselines")


def preset_directory() -> Path:
    """Where the presets shipped with the package live (``amortized/presets``)."""
    return Path(str(resources.files("amortized") / "presets"))


def preset_names() -> list[str]:
    return sorted(path.stem for path in preset_directory().glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors and binary data become a :class:`ConfigError` naming the file."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML: it holds binary data, not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None


def load_preset(name: str) -> tuple[str, dict[str, Any]]:
    """A preset by name (``quickstart``) or by path to a TOML file; returns its name and contents."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"preset file {path} does not exist")
        return path.stem, read_toml(path)
    known = preset_names()
    if name not in known:
        raise ConfigError(
            f"unknown preset {name!r}; valid presets: {', '.join(known)} (or a path to a .toml)"
        )
    return name, read_toml(preset_directory() / f"{name}.toml")


def list_presets() -> list[tuple[str, str]]:
    """Each shipped preset's name and its one-line ``description``."""
    return [(name, str(load_preset(name)[1].get("description", ""))) for name in preset_names()]


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (``3``, ``1e-3``, ``true``, ``[1, 16]``, ``"x"``), else a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``config`` with ``key=value`` overrides applied (dotted keys, e.g. ``train.lr=1e-3``).

    Entries of ``learners`` and ``baselines`` are addressed by name: ``learners.MAML.train.lr=0.01``.
    Keys and value types are checked when the experiment is built; unknown names fail here.
    """
    result = copy.deepcopy(config)
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--set expects key=value with a dotted key (e.g. train.iterations=100), got {text!r}"
            )
        parts = key.split(".")
        if parts[0] not in _TOP_KEYS:
            raise ConfigError(f"unknown key {parts[0]!r} in --set {text}; valid: {', '.join(_TOP_KEYS)}")
        target: Any = result
        if parts[0] in ("learners", "baselines"):
            entries = result.get(parts[0], [])
            names = [entry.get("name") for entry in entries]
            if len(parts) < 3:
                raise ConfigError(
                    f"--set {parts[0]} needs {parts[0]}.NAME.KEY=value; names: {', '.join(names)}"
                )
            if parts[1] not in names:
                raise ConfigError(
                    f"--set {key}: no {parts[0][:-1]} named {parts[1]!r}; valid: {', '.join(names)}"
                )
            target, parts = entries[names.index(parts[1])], parts[2:]
        for depth, part in enumerate(parts[:-1]):
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: depth + 1])} is not a table")
            target = child
        target[parts[-1]] = parse_value(raw.strip())
    return result


def read_preset(name: str, overrides: Sequence[str] = ()) -> tuple[str, dict[str, Any]]:
    """A preset's name and contents with ``--set`` overrides applied, its name kept under ``preset``.

    Checks what needs no torch: the preset exists, its TOML parses, every override is ``key=value``
    with a known top-level key; :meth:`amortized.config.Experiment.from_config` checks the rest.
    """
    preset_name, config = load_preset(name)
    config = apply_overrides(config, overrides)
    config["preset"] = config.get("preset", preset_name)
    return preset_name, config


# --------------------------------------------------------------------------------------------------
# Writing TOML (config.toml of a run)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {type(value).__name__} {value!r} to TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(data: dict[str, Any]) -> str:
    """Write plain data (tables, arrays of tables, scalars, lists) as TOML that ``tomllib`` reads back."""
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: list[str]) -> None:
        nested = []
        for key, value in table.items():
            if isinstance(value, dict) or _is_table_array(value):
                nested.append((key, value))
            else:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in nested:
            path = ".".join(_toml_key(p) for p in [*prefix, key])
            if isinstance(value, dict):
                lines.extend(["", f"[{path}]"])
                emit(value, [*prefix, key])
            else:
                for item in value:
                    lines.extend(["", f"[[{path}]]"])
                    emit(item, [*prefix, key])

    emit(data, [])
    return "\n".join(lines).lstrip("\n") + "\n"
