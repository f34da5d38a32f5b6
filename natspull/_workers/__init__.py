"""Worker processes on one durable pull consumer: ``natspull.run_workers`` and ``natspull worker``.

``_supervisor`` starts, restarts and shuts down the processes; ``_child`` is the body of one
(connect, ``consume()``, report); ``_status`` shows them; ``_target`` turns the handler into
something a spawned process can import; ``_codes`` holds the exit codes. ``_handlers`` shares
the messages in each process's handlers with the supervisor, ``_poison`` counts the deaths they
were at, ``_supervisor_client`` is the supervisor's own connection (lag, early NAKs, poison
terminations) and ``_http`` / ``_metrics`` serve /livez, /readyz and /metrics.
"""

from __future__ import annotations

from . import _codes
from ._codes import *  # noqa: F403 (the exit codes, listed once, in _codes)
from ._current import worker_client
from ._http import parse_address
from ._status import STATUS_MODES
from ._supervisor import run_workers

__all__ = [*_codes.__all__, "STATUS_MODES", "parse_address", "run_workers", "worker_client"]
