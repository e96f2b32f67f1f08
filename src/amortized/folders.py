"""The folders the library writes (run folders, ``train``'s ``out_dir``): one writer at a time, read safely.

A writer holds the folder's lock (an ``flock`` on ``FOLDER/.lock``, which names the holder's pid) for
as long as it writes; a second writer is refused at once. The OS drops the lock when its holder ends,
however it ends, so a lock left by a killed process never blocks anyone. The folder's JSON files are
read by :func:`read_json` and :func:`read_jsonl`, which turn an empty, cut-short, malformed or foreign
file into a :class:`~amortized.errors.RunFileError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from amortized.checkpoints import write_text_atomic
from amortized.errors import FolderLockedError, RunFileError

LOCK_FILE = ".lock"
HELD_ENV = "AMORTIZED_LOCK_HELD"
"""The folder whose lock the parent process holds for its children (the ranks ``--nproc`` starts)."""


@contextmanager
def lock_folder(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs (creating the folder); refuse at once if it is taken.

    A process whose ``$AMORTIZED_LOCK_HELD`` names the folder works for the parent that holds the lock,
    and takes nothing.
    """
    import fcntl  # POSIX only: imported here so that ``import amortized`` works everywhere

    folder = Path(folder)
    if os.environ.get(HELD_ENV) == str(folder.resolve()):
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
            raise FolderLockedError(
                f"{folder} is locked by process {holder}, which is writing into it; wait for it to end "
                "or stop it, then try again"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _text(path: Path) -> str | None:
    """The file's text, ``None`` if it holds binary data; a file that cannot be read is an error."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as error:
        raise RunFileError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        return None


def read_json(path: Path, hint: str = "") -> dict[str, Any]:
    """The JSON object a file holds; raises :class:`RunFileError` saying what is wrong, then ``hint``."""
    text = _text(path)
    if text is None:
        problem = "holds binary data, not JSON"
    elif not text.strip():
        problem = "is empty"
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            problem = f"is cut short or damaged (not valid JSON: {error})"
        else:
            if isinstance(value, dict):
                return value
            problem = f"holds a JSON {type(value).__name__}, not an object"
    raise RunFileError(f"{path} {problem}" + (f"; {hint}" if hint else ""))


def read_jsonl(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (one object a line, blank lines skipped).

    A last line cut short (a kill or a full disk mid-write) is dropped, and with ``repair`` the file
    is rewritten to its complete lines; any other line that is not a JSON object is a
    :class:`RunFileError` naming it.
    """
    text = _text(path)
    if text is None:
        raise RunFileError(f"{path} holds binary data, not JSON lines")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: the write stopped inside this line
                if repair:
                    write_text_atomic(path, text[: -len(line)])
                break
            raise RunFileError(f"{path}, line {number}, is not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise RunFileError(f"{path}, line {number}, holds a JSON {type(record).__name__}, not an object")
        records.append(record)
    return records
