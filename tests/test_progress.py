"""Progress: a bar on a terminal, sparse lines in a log file or a pipe."""

import io

import amortized.progress
from amortized.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A stand-in for ``time.monotonic`` that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_away_from_a_terminal_progress_is_a_line_per_tenth_of_the_work():
    log = io.StringIO()
    shown = Progress("MAML", "meta-training", 1000, unit="iterations", stream=log)
    for iteration in range(1000):
        shown.update(1, note=f"loss {1 / (iteration + 1):.4f}")
    shown.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in log.getvalue()
    assert lines[0].startswith("MAML: meta-training 100/1000 iterations (10%), 0s, loss 0.0100")
    assert lines[-1].startswith("MAML: meta-training 1000/1000 iterations (100%)")


def test_a_slow_piece_of_work_gets_a_line_every_30_seconds(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(amortized.progress.time, "monotonic", clock)
    log = io.StringIO()
    shown = Progress("Adam", "meta-training", 10_000, stream=log)
    for _ in range(6):
        clock.now += 10
        shown.update(1)
    assert log.getvalue().splitlines() == [
        "Adam: meta-training 3/10000 it (0%), 30s",
        "Adam: meta-training 6/10000 it (0%), 1m00s",
    ]


def test_work_in_parts_names_the_part_under_way():
    log = io.StringIO()
    shown = Progress("SGD", "evaluating", unit="parts", stream=log)
    shown.expect(2)
    shown.start("step curve")
    shown.start("size curve")
    shown.expect(1)
    shown.start("cost")
    shown.close()
    assert log.getvalue().splitlines() == [
        "SGD: evaluating 1/2 parts (50%), 0s, now: size curve",
        "SGD: evaluating 2/3 parts (67%), 0s, now: cost",
        "SGD: evaluating 3/3 parts (100%), 0s",
    ]


def test_on_a_terminal_progress_is_a_bar_and_disabled_progress_shows_nothing():
    terminal = Terminal()
    shown = Progress("MAML", "meta-training", 5, stream=terminal)
    for _ in range(5):
        shown.update(1, note="loss 0.5")
    shown.close()
    assert "\r" in terminal.getvalue() and "MAML" in terminal.getvalue()
    assert "meta-training 5/5" not in terminal.getvalue()  # a bar, not lines

    terminal = Terminal()
    parts = Progress("SGD", "evaluating", unit="parts", stream=terminal)
    parts.expect(2)
    parts.start("step curve")
    parts.start("size curve")
    assert terminal.getvalue().endswith("now: size curve]")  # drawn at once: a part can take minutes
    parts.close()

    quiet = Terminal()
    silent = Progress("MAML", "meta-training", 5, stream=quiet, enabled=False)
    silent.update(5)
    silent.close()
    assert quiet.getvalue() == ""
