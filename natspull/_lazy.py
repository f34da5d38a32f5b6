"""A client for web apps and prefork servers: made at import time, connected on first use in
each process.

A WSGI module that does ``client = natspull.connect(url)`` at import time breaks under
``gunicorn --preload``, Celery's prefork pool or ``multiprocessing`` with *fork*: the workers
inherit a client whose loop thread did not survive the fork and whose socket is the parent's
(every call raises ForkedError there). :class:`LazyClient` holds only the arguments; the
first call that needs the connection in a process connects, and that connection is keyed by
the process id. After ``os.fork()`` the child forgets the inherited one (through the fork hook
of ``_transport/_fork.py``, without touching the parent's socket) and connects on its first
use; the parent keeps its own. Clients are closed at interpreter exit by ``Client``'s
``atexit`` hook.

Lock: ``_lock`` guards ``_client``, ``_pid`` and ``_connecting``; a leaf, never held across
the connect: the first thread to need a connection connects, the others wait on its
``concurrent.futures.Future`` (one connection, whatever the race).
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

from ._client import Client, connect
from ._connect_options import resolve
from ._jetstream import DEFAULT_MAX_PENDING, JetStream
from ._msg import Msg
from ._observe._stats import ClientStats
from ._redact import redact
from ._transport import _fork
from .errors import TimeoutError

__all__ = ["LazyClient"]

_CONNECT_MARGIN = 5.0  # beyond connect_timeout, for a thread waiting on another's connect


class LazyClient:
    """A :class:`natspull.Client` per process, connected on first use; thread-safe.

    ``natspull.LazyClient(servers, **connect_options)`` takes :func:`natspull.connect`'s
    arguments (checked at once, files and NATS contexts read: ValueError/TypeError; nothing
    is sent). Every method that needs
    the connection connects first if this process has none - blocking on the connect, at most
    ``connect_timeout``, raising ConnectError - and then does what :class:`natspull.Client`'s
    does. A connection closed by :meth:`close` (or for good, after reconnects ran out) is
    replaced on the next use. In a child process after ``os.fork()`` the parent's connection
    is dropped, never closed, and the child connects its own. Any thread but a loop thread.

    Get ``jetstream()`` per use (it is cheap) rather than keeping one at module level: a
    JetStream context belongs to one process's connection.
    """

    def __init__(self, servers: str | list[str] | None = None, **connect_options: Any) -> None:
        resolve(servers, connect_options)  # fail at import time, not on the first request
        self._servers = servers
        self._options = connect_options
        self._lock = threading.Lock()  # guards the three below; leaf; replaced in a forked child
        self._client: Client | None = None
        self._pid = 0  # the process _client belongs to (_fork.pid: no system call per use)
        self._connecting: concurrent.futures.Future[Client] | None = None  # a connect under way
        _fork.track(self)

    def __repr__(self) -> str:
        given = self._servers
        servers = [given] if isinstance(given, str) else list(given) if given else ["(default)"]
        client = self._client
        state = "not connected" if client is None or self._pid != _fork.pid else client._state
        return f"<natspull.LazyClient servers=[{', '.join(redact(s) for s in servers)}] {state}>"

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded: forget the parent's connection (its own
        fork hook makes it refuse calls; nothing is closed) and any connect under way there."""
        self._lock = threading.Lock()
        self._client = None
        self._connecting = None
        self._pid = 0

    # -------------------------------------------------------------- the client

    @property
    def client(self) -> Client:
        """This process's :class:`natspull.Client`, connecting it first if needed."""
        client = self._client
        if client is not None and self._pid == _fork.pid and not client.is_closed:
            return client
        return self._connect()

    def _connect(self) -> Client:
        with self._lock:
            client = self._client
            if client is not None and self._pid == _fork.pid and not client.is_closed:
                return client
            connecting = self._connecting
            first = connecting is None
            if connecting is None:
                connecting = self._connecting = concurrent.futures.Future()
        if not first:
            bound = float(self._options.get("connect_timeout", 2.0)) + _CONNECT_MARGIN
            try:
                return connecting.result(bound)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"waited {bound:g} s for another thread's connect") from None
        try:
            client = connect(self._servers, **self._options)
        except BaseException as exc:
            with self._lock:
                self._connecting = None
            connecting.set_exception(exc)
            raise
        with self._lock:
            self._client, self._pid, self._connecting = client, _fork.pid, None
        connecting.set_result(client)
        return client

    # ------------------------------------------------------- Client's methods

    @property
    def is_connected(self) -> bool:
        """True while this process's connection is up (False before the first use). Never connects."""
        client = self._client
        return client is not None and self._pid == _fork.pid and client.is_connected

    @property
    def is_closed(self) -> bool:
        """True when this process has no open connection (the next use connects). Never connects."""
        client = self._client
        return client is None or self._pid != _fork.pid or client.is_closed

    @property
    def server_info(self) -> dict[str, Any]:
        """See :attr:`natspull.Client.server_info` (connects first if needed)."""
        return self.client.server_info

    @property
    def max_payload(self) -> int:
        """See :attr:`natspull.Client.max_payload` (connects first if needed)."""
        return self.client.max_payload

    def stats(self) -> ClientStats:
        """See :meth:`natspull.Client.stats` (connects first if needed)."""
        return self.client.stats()

    def jetstream(
        self,
        domain: str | None = None,
        api_prefix: str | None = None,
        timeout: float = 5.0,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> JetStream:
        """A JetStream context on this process's connection; see :meth:`natspull.Client.jetstream`."""
        return self.client.jetstream(domain, api_prefix, timeout, max_pending=max_pending)

    def publish(self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Publish a core NATS message; see :meth:`natspull.Client.publish`."""
        self.client.publish(subject, data, headers)

    def flush(self, timeout: float = 5.0) -> None:
        """See :meth:`natspull.Client.flush`."""
        self.client.flush(timeout)

    def request(
        self, subject: str, data: bytes = b"", timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> Msg:
        """See :meth:`natspull.Client.request`."""
        return self.client.request(subject, data, timeout, headers)

    def close(self, timeout: float | None = None) -> None:
        """Close this process's connection, if it has one (the next use connects anew).

        Blocks as :meth:`natspull.Client.close`. This method is idempotent. Never connects.
        """
        with self._lock:
            client = self._client if self._pid == _fork.pid else None
            self._client = None
        if client is not None:
            client.close(timeout)
