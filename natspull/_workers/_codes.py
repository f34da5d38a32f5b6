"""The exit codes of :func:`natspull.run_workers` and ``natspull worker`` (the same numbers as
the other commands of :mod:`natspull.cli` where they mean the same)."""

from __future__ import annotations

__all__ = [
    "EXIT_CONNECT",
    "EXIT_CRASH_LOOP",
    "EXIT_ERROR",
    "EXIT_FORCED",
    "EXIT_INIT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
]

EXIT_OK = 0  # a signal ended the run and every child drained within the grace period
EXIT_ERROR = 1  # a child could not start for another reason, or failed while draining
EXIT_USAGE = 2  # the target or the consume options were refused (in a child)
EXIT_NOT_FOUND = 3  # the stream or the consumer does not exist (at the first start)
EXIT_CONNECT = 4  # a child could not connect, or its login was refused (at the first start)
EXIT_CRASH_LOOP = 5  # a child kept dying: CRASH_LIMIT restarts in a row, none stable (poison aside)
EXIT_INIT = 6  # a child's init function raised (at any start): the run stops, no restart
EXIT_FORCED = 130  # a second signal, or the grace period ran out: children were stopped or killed
