"""Children that end with their parent, even when the parent is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process trees")

# The middle process starts a child that watches it, prints the child's pid and waits to be killed.
MIDDLE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {child!r}])
print(child.pid, flush=True)
time.sleep(120)
"""
CHILD = """
import os, time
from amortized.lifeline import end_with_parent
end_with_parent(os.getppid(), poll=0.1)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # it ended while being read
        return False


def wait_until_ended(pids: list[int], seconds: float) -> list[int]:
    """The ``pids`` still alive after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def kill_all(pids: list[int]) -> None:
    """SIGKILL whichever of ``pids`` still run."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_child_ends_when_its_parent_is_killed():
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE.format(child=CHILD)], stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        child = int(middle.stdout.readline())
        time.sleep(0.5)  # the child imports and starts watching
        assert alive(child), "the child ended while its parent lives"
        middle.kill()
        middle.wait()
        assert not wait_until_ended([child], 5), "the child outlived its parent by 5 s"
    finally:
        kill_all([middle.pid] + ([child] if child else []))
        middle.stdout.close()
