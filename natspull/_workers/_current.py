"""The connected client of this worker process: :func:`natspull.worker_client`.

Set once by ``_child`` on the process's main thread after it connected (before the init
function and the handlers run) and cleared before the client closes; read from any thread.
"""

from __future__ import annotations

from .._client import Client

__all__ = ["set_client", "worker_client"]

_client: Client | None = None  # written only by the child's main thread; a plain reference swap


def set_client(client: Client | None) -> None:
    global _client
    _client = client


def worker_client() -> Client:
    """The connected :class:`natspull.Client` of the worker process this code runs in.

    In a process started by :func:`natspull.run_workers` (``natspull worker``): the client the
    process consumes with, from its init function and its handlers (any thread), e.g. to
    publish a result. Do not close it. Never blocks. Raises RuntimeError anywhere else
    (outside a worker process, or once the process is shutting down).
    """
    client = _client
    if client is None:
        raise RuntimeError(
            "natspull.worker_client() is only available in a worker process of natspull.run_workers() "
            "(natspull worker), from its init function and its handlers"
        )
    return client
