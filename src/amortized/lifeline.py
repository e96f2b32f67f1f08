"""Child processes that end when their parent ends, so a killed run leaves nothing training.

``amortized run --nproc N`` starts ``torchrun``, which starts N ranks; ``--jobs`` starts worker
processes. A parent killed with SIGKILL cannot stop them, and they would go on training and writing
into a run folder whose lock died with the parent. So each child watches its parent and sends
itself SIGTERM once the parent is gone: ``torchrun`` runs under :func:`main` (on SIGTERM it stops
its ranks), and each rank and worker watches the process that started it.

The watch is a daemon thread that compares ``os.getppid()`` with the parent's pid every
:data:`POLL_SECONDS`: an orphan is adopted by another process, which changes it. This works on
every platform, and unlike Linux's ``PR_SET_PDEATHSIG`` (which fires when the parent *thread*
ends) it does not end a child whose parent started it from a thread that has since finished.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

PARENT_ENV = "AMORTIZED_PARENT_PID"
"""The pid of the process whose end ends this one, set by the process that starts it."""
POLL_SECONDS = 0.5


def end_with_parent(parent: int, poll: float = POLL_SECONDS) -> None:
    """Send this process SIGTERM as soon as ``parent`` is no longer its parent (at once if it is not now)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def end_with_launcher() -> None:
    """:func:`end_with_parent` for the pid in ``$AMORTIZED_PARENT_PID``, if it is set."""
    parent = os.environ.get(PARENT_ENV)
    if parent:
        end_with_parent(int(parent))


def torchrun_command(arguments: Sequence[str]) -> list[str]:
    """The command of ``torchrun ARGUMENTS`` ending with the process that starts it, if that process
    puts its pid in ``$AMORTIZED_PARENT_PID``."""
    return [sys.executable, "-m", "amortized.lifeline", *arguments]


def main(arguments: Sequence[str]) -> None:
    """Run ``torchrun`` with ``arguments`` until its parent ends; its ranks learn its pid to do the same."""
    end_with_launcher()
    os.environ[PARENT_ENV] = str(os.getpid())
    from torch.distributed.run import main as torchrun

    torchrun(list(arguments))


if __name__ == "__main__":
    main(sys.argv[1:])
