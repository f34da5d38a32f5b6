"""The blocking client: a nats-py connection living on its own event-loop thread."""

from __future__ import annotations

import atexit
import itertools
import logging
import queue
import ssl
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._jetstream import DEFAULT_MAX_PENDING, JetStream
from ._msg import Msg
from ._observe import _otel
from ._observe._stats import ClientStats
from ._redact import redact as _redact
from ._transport import _fork
from ._transport._connection import Connection
from ._transport._loop import LoopThread, keep_signals_for_main_thread
from ._transport._state import ENDED, ConnState
from ._transport._translate import translate
from ._validate import check_int, check_number, check_subject, check_timeout

__all__ = ["Client", "connect", "connect_arguments"]

log = logging.getLogger("natspull")

_callback_ids = itertools.count(1)

# Options passed through to nats-py, with the type each must have.
_PASSTHROUGH: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "user": str,
    "password": str,
    "token": str,
    "user_credentials": (str, tuple),
    "nkeys_seed": str,
    "nkeys_seed_str": str,
    "tls": ssl.SSLContext,
    "tls_hostname": str,
    "tls_handshake_first": bool,
    "allow_reconnect": bool,
    "no_echo": bool,
    "inbox_prefix": str,
}
_SECONDS = ("connect_timeout", "reconnect_time_wait", "ping_interval", "close_timeout")
_CALLBACKS = ("disconnected_cb", "reconnected_cb", "error_cb", "closed_cb")

_SECURED = ("user", "password", "token", "user_credentials", "nkeys_seed", "nkeys_seed_str", "tls")


class _CallbackThread:
    """Runs user callbacks, one at a time, on a thread ``natspull-callbacks-N`` (never on the loop)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"natspull-callbacks-{next(_callback_ids)}", daemon=True
        )
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def stop(self, timeout: float) -> None:
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        keep_signals_for_main_thread()
        while (fn := self._queue.get()) is not None:
            try:
                fn()
            except Exception:
                log.exception("natspull: a client callback raised")


class Client:
    """A connection to NATS, usable from any number of threads. Create it with :func:`connect`.

    nats-py runs on one background event-loop thread (``natspull-loop-N``);
    calls from user threads hand work to it and wait with a timeout. A
    context manager: ``with natspull.connect(url) as client: ...`` closes it.

    The public facade over a :class:`~natspull._transport._connection.Connection`, which owns
    everything on the loop side (docs/architecture.md).

    A client cannot cross ``os.fork()``: in the child every call on it (and on
    its JetStream, consumers, iterators and messages) raises ForkedError at
    once, and the at-exit flush skips it; the child connects on its own.
    """

    def __init__(
        self, servers: list[str], options: dict[str, Any], callbacks: dict[str, Callable[..., None]]
    ) -> None:
        """Private: use :func:`connect`."""
        self._servers = servers
        self._close_timeout: float = options.pop("close_timeout", 5.0)
        self._user_callbacks = callbacks
        self._close_lock = threading.Lock()  # guards _closing; leaf lock; replaced in a forked child
        self._closing = False  # close() was called: it runs once (the connection may have closed before)
        self._loop_thread = LoopThread()
        self._callback_thread = _CallbackThread() if callbacks else None
        try:
            self._conn = Connection(
                self._loop_thread,
                servers,
                options,
                tried=", ".join(_redact(s) for s in servers),
                secured=any(key in options for key in _SECURED),
                dispatch=self._dispatch,
            )
        except BaseException:
            self._shutdown_threads()
            raise
        _open_clients.add(self)
        _fork.track(self)

    def __repr__(self) -> str:
        servers = ", ".join(_redact(s) for s in self._servers)
        return f"<natspull.Client servers=[{servers}] state={self._state}>"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state == "forked":
            # A forked child leaving the parent's `with` block: close() would raise
            # ForkedError over the child's own exception or exit; nothing is the child's to close.
            return
        self.close()

    @property
    def _state(self) -> str:
        conn = getattr(self, "_conn", None)
        return "closed" if conn is None else conn.state.value

    # ------------------------------------------------------------------ fork

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded (see ``_fork.py``): refuse every call.

        The loop thread did not survive the fork and the socket is the parent's:
        nothing is sent, flushed or closed from here, not even at exit.
        """
        self._close_lock = threading.Lock()
        self._conn.after_fork_in_child()
        _open_clients.discard(self)

    def _check_fork(self) -> None:
        """Raise ForkedError in a child process that inherited this client. Any thread."""
        self._conn.check_fork()

    def _dispatch(self, name: str, *args: object) -> None:
        """Hand the user's callback *name* to the callback thread. Any thread; never blocks."""
        callback = self._user_callbacks.get(name)
        if callback is not None and self._callback_thread is not None:
            self._callback_thread.submit(lambda: callback(*args))

    # -------------------------------------------------------------- properties

    @property
    def is_connected(self) -> bool:
        """True while connected (False while reconnecting and once closed)."""
        return self._conn.state is ConnState.CONNECTED

    @property
    def is_closed(self) -> bool:
        """True once closed, and in a child process after os.fork() (nothing works there)."""
        return self._conn.state in ENDED

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO the server sent on the latest (re)connect: server_id, version, max_payload, ..."""
        return self._conn.server_info

    @property
    def max_payload(self) -> int:
        return self._conn.max_payload

    def stats(self) -> ClientStats:
        r"""A snapshot of the connection (:class:`natspull.ClientStats`): state, reconnects,
        messages and bytes in and out, ``-ERR``\ s, running consumers.

        Never blocks (reads counters the loop thread writes); any thread, also after close()
        and in a child process after os.fork() (the parent's counters as inherited).
        """
        conn = self._conn
        counters = conn.counters()
        return ClientStats(
            state=conn.state.value,
            reconnects=counters.get("reconnects", 0),
            in_msgs=counters.get("in_msgs", 0),
            in_bytes=counters.get("in_bytes", 0),
            out_msgs=counters.get("out_msgs", 0),
            out_bytes=counters.get("out_bytes", 0),
            errors_received=counters.get("errors_received", 0),
            consumers_running=len(conn.engines),
        )

    # -------------------------------------------------------------- operations

    def publish(self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Publish a core NATS message. Returns at once; the loop writes it in the next burst.

        Raises ValueError/TypeError for a bad subject, payload or headers,
        ConnectionClosedError once closed (ForkedError in a forked child). Any thread.
        """
        telemetry = _otel.current()
        if telemetry is None:
            self._publish(subject, data, headers)
        else:  # a PRODUCER span, its context in the headers
            telemetry.send("publish", subject, data, headers, lambda h: self._publish(subject, data, h))

    def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        data, headers = self._conn.check_message(subject, data, headers)
        self._conn.publish_nowait(subject, data, "", headers)

    def flush(self, timeout: float = 5.0) -> None:
        """Block until every publish and ack accepted so far has reached the server (PING/PONG).

        Raises natspull.TimeoutError, ConnectionClosedError. Any thread but the loop's.
        """
        timeout = check_number("timeout", timeout, exclusive=True)
        conn = self._conn

        async def flush() -> None:
            await conn.flush_outbox()
            await conn.ping(timeout)

        conn.run(flush(), timeout + 1.0, "flush")

    def request(
        self, subject: str, data: bytes = b"", timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> Msg:
        """Send a request and block until the reply arrives (at most *timeout* seconds).

        Raises natspull.TimeoutError, natspull.Error (no responders), ConnectionClosedError.
        Any thread but the loop's.
        """
        data, headers = self._conn.check_message(subject, data, headers, self._conn.request_reply_bytes())
        timeout = check_number("timeout", timeout, exclusive=True)
        reply = self._conn.run(
            self._conn.request(subject, data, timeout, headers),
            timeout + 1.0,
            f"request to {subject}",
        )
        return Msg(reply.subject, reply.data, reply.reply, reply.headers)

    def jetstream(
        self,
        domain: str | None = None,
        api_prefix: str | None = None,
        timeout: float = 5.0,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> JetStream:
        """A JetStream context (management, publish, consumers). Cheap; no network call.

        *timeout* bounds each call (and each ``publish_async``'s wait for its PubAck);
        *max_pending* bounds the ``publish_async`` of this context waiting for their PubAck
        (default 4000). Raises ForkedError in a child process after os.fork().
        """
        self._check_fork()
        return JetStream(
            self._conn, domain=domain, api_prefix=api_prefix, timeout=timeout, max_pending=max_pending
        )

    # ----------------------------------------------------------------- closing

    def close(self, timeout: float | None = None) -> None:
        """Flush every accepted ack and publish, close the connection and join the loop thread.

        Blocks on: the flush and the close, at most *timeout* seconds (default:
        the ``close_timeout`` given to connect, 5 s). Every pending ``next()``
        raises ConnectionClosedError. This method is idempotent. Any thread
        but the loop thread (RuntimeError there: the loop cannot wait for itself).
        Raises ForkedError in a child process after os.fork(): the connection
        is the parent's (leaving a ``with`` block the parent entered does nothing).
        """
        self._check_fork()
        self._loop_thread.check_not_in_loop("Client.close()")
        timeout = self._close_timeout if timeout is None else check_number("timeout", timeout)
        with self._close_lock:
            if self._closing:
                return
            self._closing = True
            self._conn.begin_close()
        try:
            self._loop_thread.run(self._conn.aclose(timeout), timeout + 1.0, "close")
        except Exception as exc:
            log.warning("natspull: close: %s", translate(exc))
        finally:
            _open_clients.discard(self)
            self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.mark_closed()
        self._loop_thread.stop(self._close_timeout)
        if self._callback_thread is not None:
            self._callback_thread.stop(self._close_timeout)


def _check_credentials(value: Any) -> str | tuple[str, str]:
    """A readable ``.creds`` file holding a JWT and a seed, or a (jwt file, seed file) pair."""
    if isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(part, str) for part in value):
            raise TypeError("user_credentials must be a .creds path or a (jwt path, seed path) tuple")
        for part in value:
            _read_creds(part)
        return (value[0], value[1])
    if not isinstance(value, str):
        raise TypeError(f"user_credentials must be a .creds path, got {type(value).__name__}")
    text = _read_creds(value)
    if "BEGIN NATS USER JWT" not in text or "BEGIN USER NKEY SEED" not in text:
        raise ValueError(
            f"user_credentials file {value!r} must hold a NATS USER JWT and a USER NKEY SEED block"
        )
    return value


def _read_creds(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"user_credentials: cannot read {path!r}: {exc.strerror}") from None


_open_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    """At interpreter exit, flush and close clients the script never closed (bounded: 1 s each).

    A forked child's set holds none of the parent's clients (see Client._after_fork_in_child).
    """
    for client in list(_open_clients):
        try:
            client.close(timeout=1.0)
        except Exception as exc:  # exit must go on
            log.debug("natspull: atexit close failed: %s", exc)


def connect(
    servers: str | list[str] = "nats://127.0.0.1:4222",
    *,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 2.0,
    max_reconnect_attempts: int = 60,
    ping_interval: float = 120.0,
    **options: Any,
) -> Client:
    """Connect to NATS and return a :class:`Client`.

    Blocks until connected, at most *connect_timeout* seconds in all.
    Options pass through to nats-py: name, user, password, token,
    user_credentials, nkeys_seed, tls (an ``ssl.SSLContext``), tls_hostname,
    allow_reconnect, reconnect_time_wait, max_reconnect_attempts,
    ping_interval; and plain callables ``disconnected_cb()``,
    ``reconnected_cb()``, ``error_cb(exc)``, ``closed_cb()`` that run on a
    natspull callback thread, never on the event loop; ``close_timeout``.

    Raises ConnectError (naming the servers tried and why) when no server
    accepts the connection; ValueError/TypeError for bad options. Any thread.
    """
    return Client(
        *connect_arguments(
            servers,
            connect_timeout=connect_timeout,
            reconnect_time_wait=reconnect_time_wait,
            max_reconnect_attempts=max_reconnect_attempts,
            ping_interval=ping_interval,
            **options,
        )
    )


def connect_arguments(
    servers: str | list[str] = "nats://127.0.0.1:4222",
    *,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 2.0,
    max_reconnect_attempts: int = 60,
    ping_interval: float = 120.0,
    **options: Any,
) -> tuple[list[str], dict[str, Any], dict[str, Callable[..., None]]]:
    """:func:`connect`'s arguments checked (ValueError/TypeError): the servers, nats-py's
    options and the callbacks, fresh on every call. No network. Any thread."""
    server_list = (
        [servers]
        if isinstance(servers, str)
        else list(servers)
        if isinstance(servers, (list, tuple))
        else None
    )
    if not server_list or not all(isinstance(s, str) and s for s in server_list):
        raise TypeError(f"servers must be a URL string or a list of URL strings, got {servers!r}")
    nats_options: dict[str, Any] = {
        "connect_timeout": check_number("connect_timeout", connect_timeout, exclusive=True),
        "reconnect_time_wait": check_number("reconnect_time_wait", reconnect_time_wait),
        "max_reconnect_attempts": check_int("max_reconnect_attempts", max_reconnect_attempts, minimum=-1),
        "ping_interval": check_number("ping_interval", ping_interval, exclusive=True),
    }
    callbacks: dict[str, Callable[..., None]] = {}
    for key, value in options.items():
        if key in _CALLBACKS:
            if value is not None and not callable(value):
                raise TypeError(f"{key} must be callable, got {type(value).__name__}")
            if value is not None:
                callbacks[key] = value
        elif key == "close_timeout":
            nats_options[key] = check_timeout(key, value)
        elif key == "inbox_prefix":
            nats_options[key] = check_subject(key, value)
        elif key == "user_credentials":
            nats_options[key] = _check_credentials(value)
        elif key in _PASSTHROUGH:
            if value is not None and not isinstance(value, _PASSTHROUGH[key]):
                raise TypeError(f"{key} has the wrong type: {type(value).__name__}")
            if value is not None:
                nats_options[key] = value
        else:
            allowed = ", ".join(sorted([*_PASSTHROUGH, *_SECONDS, *_CALLBACKS, "max_reconnect_attempts"]))
            raise TypeError(f"connect() got an unknown option {key!r}; allowed: {allowed}")
    return server_list, nats_options, callbacks
