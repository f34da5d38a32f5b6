"""The blocking client: a nats-py connection living on its own event-loop thread."""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ._connect_options import resolve
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
from ._transport._wire import INLINE_CREDENTIALS
from ._validate import check_number

__all__ = ["Client", "connect"]

log = logging.getLogger("natspull")

_callback_ids = itertools.count(1)

_SECURED = (
    "user",
    "password",
    "token",
    "user_credentials",
    INLINE_CREDENTIALS,
    "nkeys_seed",
    "nkeys_seed_str",
    "tls",
)


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
        self,
        servers: list[str],
        options: dict[str, Any],
        callbacks: dict[str, Callable[..., None]],
        *,
        jetstream_defaults: tuple[str | None, str | None] = (None, None),
    ) -> None:
        """Private: use :func:`connect`."""
        self._servers = servers
        self._jetstream_defaults = jetstream_defaults  # (domain, api_prefix) from a NATS context
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
        """The INFO the server sent on the latest (re)connect: server_id, version, max_payload, ...

        In the portable mode (``NATSPULL_PORTABLE=1``) only what nats-py's public API tells:
        version, max_payload, client_id. Any thread."""
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
        (default 4000). Without *domain* and *api_prefix*, those of the NATS context the client
        connected with (``jetstream_domain``, ``jetstream_api_prefix``) apply. Raises
        ForkedError in a child process after os.fork().
        """
        self._check_fork()
        if domain is None and api_prefix is None:
            domain, api_prefix = self._jetstream_defaults
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


#: (library, module it patches, how to ask whether it did) - looked up only when the library is
#: already imported: natspull never imports gevent or eventlet itself
_GREEN_CHECKS = (
    ("gevent", "gevent.monkey", "is_module_patched", ("threading", "socket", "select")),
    ("eventlet", "eventlet.patcher", "is_monkey_patched", ("thread", "socket", "select")),
)


def refuse_green_threads() -> None:
    """Raise RuntimeError when gevent or eventlet monkey-patched this process.

    natspull runs nats-py's asyncio loop on a thread of its own and makes callers wait on
    ``threading`` conditions. Monkey-patched, that "thread" is a greenlet, and the loop's
    ``select()`` and the callers' waits would block the hub (or deadlock it) without a word, so
    ``connect()`` refuses at once instead. Run natspull in a process that is not patched (e.g. a
    separate worker, ``natspull worker``), or use nats-py's asyncio client there.
    """
    for library, module_name, function, modules in _GREEN_CHECKS:
        module = sys.modules.get(module_name)
        check = getattr(module, function, None)
        if check is None:
            continue
        patched = [name for name in modules if _patched(check, name)]
        if patched:
            raise RuntimeError(
                f"natspull.connect(): this process is monkey-patched by {library} "
                f"({', '.join(patched)} patched); natspull runs a real event-loop thread and blocks "
                f"on real locks, which would block the {library} hub: it does not work from "
                f"greenlets. Use natspull in a process that is not monkey-patched."
            )


def _patched(check: Callable[[str], Any], name: str) -> bool:
    try:
        return bool(check(name))
    except Exception:  # a version whose check does not know the name
        return False


def connect(
    servers: str | list[str] | None = None,
    *,
    context: str | os.PathLike[str] | None = None,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 2.0,
    max_reconnect_attempts: int = 60,
    ping_interval: float = 120.0,
    **options: Any,
) -> Client:
    """Connect to NATS and return a :class:`Client`.

    *servers*: a URL or a list of URLs; default: the context's ``url``, else
    ``nats://127.0.0.1:4222``.

    *context*: a NATS context (ADR-21, as the ``nats`` CLI keeps them): a name, read from
    ``$XDG_CONFIG_HOME/nats/context/NAME.json`` (default ``~/.config``); ``""`` for the selected
    context (``nats/context.txt``); or the path of such a file. Its ``url``, ``user``,
    ``password``, ``token``, ``creds``, ``nkey``, ``user_jwt`` with ``user_seed`` (inline
    credentials: both, and not beside ``creds`` or ``nkey``), ``cert``, ``key``, ``ca``,
    ``tls_first`` and ``inbox_prefix`` apply, ``jetstream_domain`` / ``jetstream_api_prefix``
    become the defaults of :meth:`Client.jetstream`; every keyword given here overrides the
    field it names (``tls=`` all of cert/key/ca, ``creds=`` the inline credentials). A field
    natspull cannot honour (``nsc``, ``socks_proxy``, ``windows_cert_*``, ...) with a value is
    a ValueError naming it and the file; ``description`` and ``color_scheme`` are ignored.

    Logins: ``user`` and ``password``, ``token``, ``creds`` (a ``.creds`` file: JWT and seed;
    ``user_credentials`` is nats-py's name for it), ``nkey`` (a seed file; also
    ``nkeys_seed``) or ``nkeys_seed_str``. TLS: ``tls_cert``, ``tls_key``, ``tls_ca`` (PEM
    files; the SSLContext is built here) or ``tls`` (an ``ssl.SSLContext``), ``tls_hostname``,
    ``tls_handshake_first``. File options are plain strings, so a set of them can be pickled to
    another process (``run_workers(connect_options=...)``). Also: name, allow_reconnect,
    no_echo, inbox_prefix, reconnect_time_wait, max_reconnect_attempts, ping_interval,
    ``close_timeout``; and plain callables ``disconnected_cb()``, ``reconnected_cb()``,
    ``error_cb(exc)``, ``closed_cb()`` that run on a natspull callback thread, never on the
    event loop. No secret appears in repr(), errors or logs.

    Blocks on reading the files named, then until connected, at most *connect_timeout* seconds
    in all. Raises ConnectError (naming the servers tried and why: unreachable, authorization
    violation, TLS failed) when no server accepts the connection; ValueError/TypeError for bad
    options, unreadable files and contexts. Any thread.

    Raises RuntimeError in a process that gevent or eventlet monkey-patched (threads, sockets):
    natspull's event loop runs on a real thread and its callers block on real locks, which
    would block the green hub; see :func:`refuse_green_threads`.
    """
    refuse_green_threads()
    settings = resolve(
        servers,
        {
            "context": context,
            "connect_timeout": connect_timeout,
            "reconnect_time_wait": reconnect_time_wait,
            "max_reconnect_attempts": max_reconnect_attempts,
            "ping_interval": ping_interval,
            **options,
        },
    )
    return Client(
        settings.servers,
        settings.nats_options,
        settings.callbacks,
        jetstream_defaults=(settings.jetstream_domain, settings.jetstream_api_prefix),
    )
