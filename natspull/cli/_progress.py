"""Progress display for ``natspull demo`` and ``natspull consume --ordered``: one phase at a time.

On a terminal a live ``rich`` bar per phase (the ``progress`` extra, imported only then),
otherwise a plain line per tenth of the work, readable in logs and pipes. Writes to stdout
(the demo) or stderr (``consume --ordered``, whose stdout is the data). The total may change
while a phase runs (``update(done, total)``: a stream that grows). Not thread-safe: the
commands drive it from the main thread.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

__all__ = ["Progress", "make_progress"]


class Progress(Protocol):
    def begin(self, label: str, total: int) -> None: ...

    def update(self, done: int, total: int | None = None) -> None: ...

    def end(self, done: int) -> None: ...

    def close(self) -> None: ...


class _PlainProgress:
    """A line per tenth of the work: readable in logs and pipes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._label = ""
        self._total = 1
        self._shown = -1  # the last tenth printed

    def begin(self, label: str, total: int) -> None:
        self._label, self._total, self._shown = label, max(total, 1), 0

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self._total = max(total, 1)
        tenth = done * 10 // self._total
        if tenth > self._shown:
            self._shown = tenth
            self._line(done)

    def end(self, done: int) -> None:
        if done * 10 // self._total != self._shown or done < self._total:
            self._line(done)

    def close(self) -> None:
        return None

    def _line(self, done: int) -> None:
        percent = done * 100 // self._total
        print(f"{self._label:<8} {done:>10,}/{self._total:,} ({percent}%)", file=self._out, flush=True)


class _RichProgress:
    """A live bar per phase, redrawn at most 10 times a second."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TaskID,
            TaskProgressColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.0f} msgs/s" if speed else "", style="progress.data.speed")

        self._progress = Progress(
            "[progress.description]{task.description:<8}",
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            console=Console(file=out),
        )
        self._task: TaskID | None = None
        self._last = 0.0

    def begin(self, label: str, total: int) -> None:
        if self._task is None:
            self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def update(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= 0.05 and self._task is not None:
            self._last = now
            self._progress.update(self._task, completed=done, total=total)

    def end(self, done: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done)
            self._progress.stop_task(self._task)

    def close(self) -> None:
        self._progress.stop()


def make_progress(out: TextIO | None = None) -> Progress:
    """A progress display on *out* (default: stdout)."""
    out = sys.stdout if out is None else out
    if out.isatty():
        try:
            return _RichProgress(out)
        except ImportError:  # the `progress` extra is not installed
            pass
    return _PlainProgress(out)
