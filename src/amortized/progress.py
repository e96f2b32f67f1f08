"""Progress of long waits (meta-training, evaluation): a bar on a terminal, a line now and then elsewhere.

A tqdm bar redraws itself several times a second: right on a terminal (or in a notebook), but in a
log file or a pipe every redraw is kept, thousands of them per learner. Away from a terminal, and in
worker processes (whose bars would overwrite each other on one terminal), progress is therefore a
plain line naming the work, written at every tenth of it and at least every 30 seconds.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import Any, TextIO

LINE_EVERY_SECONDS = 30.0
"""Away from a terminal, the longest wait between two progress lines."""
LINE_EVERY_FRACTION = 0.1
"""Away from a terminal, a progress line at every tenth of the work."""


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def draws_bars(stream: TextIO) -> bool:
    """Whether progress on ``stream`` is a redrawn bar: a terminal or a notebook, in the main process."""
    if multiprocessing.parent_process() is not None:
        return False
    interactive = getattr(stream, "isatty", lambda: False)()
    return interactive or "ipykernel" in sys.modules


class Progress:
    """How far one piece of work (``what``, e.g. "meta-training") of ``name`` (a learner) has got.

    Counted in ``unit``s: :meth:`update` adds done units (training iterations); :meth:`start` names the
    next part of a piece of work that comes in parts (evaluation's curves), counting the previous
    one as done, and :meth:`expect` adds parts to the total as they become known. Disabled, it does
    nothing.
    """

    def __init__(
        self,
        name: str,
        what: str,
        total: int = 0,
        *,
        initial: int = 0,
        unit: str = "it",
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.name, self.what, self.unit = name, what, unit
        self.total, self.done = total, initial
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.note = ""
        self._part: str | None = None
        self._began = self._last_line = time.monotonic()
        self._reported = initial
        self._next_mark = initial + LINE_EVERY_FRACTION * total
        self._bar: Any = None
        if enabled and draws_bars(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=name, unit=unit, leave=False, file=self.stream
            )

    def expect(self, count: int) -> None:
        """``count`` more units of work than announced so far."""
        if not self.enabled:
            return
        self.total += count
        self._next_mark = self.done + LINE_EVERY_FRACTION * self.total
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def start(self, part: str) -> None:
        """Begin the part of the work called ``part``; the part begun before it is done."""
        if not self.enabled:
            return
        finished, self._part = self._part is not None, part
        self.update(1 if finished else 0, note=f"now: {part}")
        if self._bar is not None:
            self._bar.refresh()  # parts are long: show the new one now, not at the next redraw

    def update(self, count: int = 1, note: str | None = None) -> None:
        """``count`` more units done; ``note`` (e.g. the loss) is shown with the count."""
        if not self.enabled:
            return
        self.done += count
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.set_postfix_str(self.note, refresh=False)
            self._bar.update(count)
            return
        now = time.monotonic()
        if self.done >= self._next_mark or now - self._last_line >= LINE_EVERY_SECONDS:
            self._line(now)

    def close(self) -> None:
        """End the work (the part begun last is done) with a last line, or clear the bar."""
        if not self.enabled:
            return
        if self._part is not None:
            self._part = None
            self.done += 1
            self.note = ""
        if self._bar is not None:
            self._bar.close()
        elif self.done != self._reported:
            self._line(time.monotonic())
        self.enabled = False

    def _line(self, now: float) -> None:
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        note = f", {self.note}" if self.note else ""
        print(
            f"{self.name}: {self.what} {self.done}/{self.total} {self.unit}{share}, "
            f"{_duration(now - self._began)}{note}",
            file=self.stream,
            flush=True,
        )
        self._last_line, self._reported = now, self.done
        while self._next_mark <= self.done and self.total:
            self._next_mark += LINE_EVERY_FRACTION * self.total
