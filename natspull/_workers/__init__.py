"""Worker processes on one durable pull consumer: ``natspull.run_workers`` and ``natspull worker``.

``_supervisor`` starts, restarts and shuts down the processes; ``_child`` is the body of one
(connect, ``consume()``, report); ``_status`` shows them; ``_target`` turns the handler into
something a spawned process can import; ``_codes`` holds the exit codes.
"""

from __future__ import annotations

from ._codes import (
    EXIT_CONNECT,
    EXIT_CRASH_LOOP,
    EXIT_ERROR,
    EXIT_FORCED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
)
from ._status import STATUS_MODES
from ._supervisor import run_workers

__all__ = [
    "EXIT_CONNECT",
    "EXIT_CRASH_LOOP",
    "EXIT_ERROR",
    "EXIT_FORCED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "STATUS_MODES",
    "run_workers",
]
