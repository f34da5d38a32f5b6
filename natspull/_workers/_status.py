"""What the supervisor shows: one status row per worker process, and event lines.

On a terminal a live ``rich`` table (the ``progress`` extra, imported only then) redrawn at most
four times a second; otherwise one plain line per process every ``interval`` seconds, readable in
logs and pipes. Event lines (started, died, restarting, draining) are printed as they happen in
both forms. Not thread-safe: the supervisor drives it from its main thread.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol, TextIO

__all__ = ["STATUS_MODES", "Lag", "Reporter", "Row", "lag_text", "make_reporter"]

STATUS_MODES = ("auto", "live", "lines", "off")


@dataclass
class Row:
    """The state of one worker slot, as the supervisor knows it."""

    index: int  # 1-based slot number
    pid: int | None = None
    state: str = "starting"  # starting, running, draining, stopping, restarting, exited
    handled: int = 0  # counts of the current process (they restart at 0 with the process)
    failed: int = 0
    redelivered: int = 0
    restarts: int = 0

    def text(self) -> str:
        return (
            f"worker {self.index} pid {self.pid or '-'} {self.state}: handled {self.handled:,} "
            f"failed {self.failed:,} redelivered {self.redelivered:,} restarts {self.restarts}"
        )


#: the consumer's (num_pending, num_ack_pending), or None before the supervisor read it
Lag = Optional[tuple[int, int]]


def lag_text(lag: Lag) -> str:
    """The status line of the consumer's lag."""
    if lag is None:
        return "consumer: pending - ack pending -"
    return f"consumer: pending {lag[0]:,} ack pending {lag[1]:,}"


class Reporter(Protocol):
    def event(self, text: str) -> None: ...

    def show(self, rows: Sequence[Row], lag: Lag = None) -> None: ...

    def close(self, rows: Sequence[Row], lag: Lag = None) -> None: ...


class _Off:
    def event(self, text: str) -> None:
        return None

    def show(self, rows: Sequence[Row], lag: Lag = None) -> None:
        return None

    def close(self, rows: Sequence[Row], lag: Lag = None) -> None:
        return None


class _Lines:
    """Plain lines: events at once, the rows every *interval* seconds and at the end."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self._out = out
        self._interval = interval
        self._next = time.monotonic() + interval

    def _print(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed stdout must not stop the supervisor
            print(f"natspull worker: {text}", file=self._out, flush=True)

    def event(self, text: str) -> None:
        self._print(text)

    def show(self, rows: Sequence[Row], lag: Lag = None) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self.close(rows, lag)

    def close(self, rows: Sequence[Row], lag: Lag = None) -> None:
        for row in rows:
            self._print(row.text())
        self._print(lag_text(lag))


class _Live:
    """A rich table, one row per process, redrawn at most four times a second."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(file=out), auto_refresh=False, transient=False)
        self._live.start()
        self._last = 0.0

    def _table(self, rows: Sequence[Row], lag: Lag) -> Any:
        from rich.table import Table

        table = Table(box=None, header_style="bold", caption=lag_text(lag), caption_justify="left")
        for column in ("worker", "pid", "state", "handled", "failed", "redelivered", "restarts"):
            table.add_column(column, justify="left" if column in ("worker", "state") else "right")
        for row in rows:
            table.add_row(
                str(row.index),
                str(row.pid or "-"),
                row.state,
                f"{row.handled:,}",
                f"{row.failed:,}",
                f"{row.redelivered:,}",
                str(row.restarts),
            )
        return table

    def event(self, text: str) -> None:
        self._live.console.print(f"natspull worker: {text}", markup=False, highlight=False)

    def show(self, rows: Sequence[Row], lag: Lag = None) -> None:
        now = time.monotonic()
        if now - self._last >= 0.25:
            self._last = now
            self._live.update(self._table(rows, lag), refresh=True)

    def close(self, rows: Sequence[Row], lag: Lag = None) -> None:
        self._live.update(self._table(rows, lag), refresh=True)
        self._live.stop()


def make_reporter(mode: str, interval: float, out: TextIO | None = None) -> Reporter:
    """The display for *mode* (see :data:`STATUS_MODES`) on *out* (default: stdout).

    ``auto`` is ``live`` on a terminal (when rich is installed) and ``lines`` otherwise.
    """
    out = sys.stdout if out is None else out
    if mode == "off":
        return _Off()
    if mode == "live" or (mode == "auto" and out.isatty()):
        try:
            return _Live(out)
        except ImportError:  # the `progress` extra is not installed
            pass
    return _Lines(out, interval)
