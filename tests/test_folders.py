import os
import re
import subprocess
import sys

import pytest

from amortized.errors import FolderLockedError, RunFileError
from amortized.folders import HELD_ENV, LOCK_FILE, lock_folder, read_json, read_jsonl

HOLD = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""
"""Holds the lock file given as argument, as another writer would, until its stdin closes."""


@pytest.fixture
def held(tmp_path):
    """``tmp_path``'s lock held by another process (its pid is ``held.pid``)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_writer_is_refused_naming_the_folder_and_the_holder(tmp_path, held):
    with (
        pytest.raises(FolderLockedError, match=re.escape(f"{tmp_path} is locked by process {held.pid},")),
        lock_folder(tmp_path),
    ):
        pass


def test_the_lock_of_a_process_that_died_is_free_and_then_names_the_new_holder(tmp_path, held):
    held.kill()
    held.wait()
    with lock_folder(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with (
            pytest.raises(FolderLockedError, match=f"locked by process {os.getpid()}"),
            lock_folder(tmp_path),
        ):
            pass
    with lock_folder(tmp_path):  # released when the block ended
        pass


def test_a_child_of_the_holder_takes_no_lock_for_the_folder_its_parent_names(tmp_path, held, monkeypatch):
    monkeypatch.setenv(HELD_ENV, str(tmp_path.resolve()))
    with lock_folder(tmp_path):
        pass
    with pytest.raises(FolderLockedError), lock_folder(tmp_path / "other"), lock_folder(tmp_path / "other"):
        pass


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b'{"format": "amortized-results", "learn', "is cut short or damaged (not valid JSON"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b"\x80\x03}q\x00(X", "holds binary data"),
    ],
)
def test_a_damaged_json_file_is_named_with_what_is_wrong(tmp_path, content, problem):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(RunFileError) as error:
        read_json(path, "write it again")
    assert str(error.value).startswith(f"{path} ") and problem in str(error.value)
    assert str(error.value).endswith("; write it again")


def test_a_last_line_cut_short_is_dropped_and_repaired_only_when_asked(tmp_path):
    path = tmp_path / "metrics.jsonl"
    damaged = '{"iteration": 1}\n\n{"iteration": 2}\n{"iteration": 3, "lo'
    path.write_text(damaged)
    assert read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]
    assert path.read_text() == damaged
    assert read_jsonl(path, repair=True) == [{"iteration": 1}, {"iteration": 2}]
    assert path.read_text() == '{"iteration": 1}\n\n{"iteration": 2}\n'


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"iteration": 1}\n{"iteration": 2, "lo\n{"iteration": 3}\n', "line 2, is not valid JSON"),
        ('{"iteration": 1}\n[3]\n', "line 2, holds a JSON list, not an object"),
    ],
)
def test_a_damaged_line_before_the_last_is_named(tmp_path, content, problem):
    path = tmp_path / "metrics.jsonl"
    path.write_text(content)
    with pytest.raises(RunFileError, match=re.escape(f"{path}, {problem}")):
        read_jsonl(path, repair=True)
    assert path.read_text() == content
