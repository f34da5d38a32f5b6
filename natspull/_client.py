"""The blocking client: a nats-py connection living on its own event-loop thread."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import queue
import re
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.nuid
from nats.aio.client import DEFAULT_INBOX_PREFIX
from nats.aio.client import Client as NatsClient

from . import _fork
from ._loop import LoopThread, keep_signals_for_main_thread
from ._msg import Msg
from ._outbox import Outbox
from ._parser import FastParser
from ._redact import redact as _redact
from ._translate import api_error, translate
from ._validate import (
    MAX_CONTROL_LINE,
    check_bytes,
    check_headers,
    check_int,
    check_number,
    check_subject,
    check_timeout,
)
from .errors import ConnectError, ConnectionClosedError, Error

if TYPE_CHECKING:
    from ._jetstream import JetStream
    from ._pull import PullEngine

__all__ = ["Client", "connect"]

log = logging.getLogger("natspull")

T = TypeVar("T")

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

_NO_FLUSH_TIMEOUT = 3600  # nats-py's own flush timeout: never reached, see Client._ping

# nats-py's reply subjects (nats.aio.client): new_inbox() is "<inbox_prefix>.<nuid>", a
# request's reply "<inbox_prefix>.<nuid>.<nuid><2 random bytes in hex>".
_NUID = nats.nuid.TOTAL_LENGTH
_REQUEST_TOKEN = _NUID + 4


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: mark a background task's exception as seen (it is reported elsewhere)."""
    if not task.cancelled():
        task.exception()


_SECURED = ("user", "password", "token", "user_credentials", "nkeys_seed", "nkeys_seed_str", "tls")
_AUTH_FAILURES = ("authorization violation", "authentication", "user authentication expired")


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
        prefix = options.get("inbox_prefix")
        self._inbox_prefix_bytes = len(prefix.encode()) if prefix else len(DEFAULT_INBOX_PREFIX)
        self._loop_thread = LoopThread()
        self._nc = NatsClient()
        # Pull inboxes' messages skip nats-py's per-message work (see _parser).
        self._parser = self._nc._ps = FastParser(self._nc)
        self._outbox = Outbox(self._loop_thread, self._nc)
        self._engines: set[PullEngine] = set()  # loop thread only
        self._user_callbacks = callbacks
        self._callback_thread = _CallbackThread() if callbacks else None
        # written on the loop thread; read anywhere. "forked": set in a child after os.fork()
        self._state = "connecting"
        self._server_info: dict[str, Any] = {}
        self._close_lock = threading.Lock()  # guards _closing; leaf lock; replaced in a forked child
        self._closing = False
        self._connect_error: BaseException | None = None
        self._secured = any(key in options for key in _SECURED)
        self._connect_failed: asyncio.Future[BaseException]
        self._reconnected: asyncio.Future[None]  # loop thread: completed (and replaced) on each reconnect
        # Loop thread only: requests in flight by lower-cased subject, failed by a
        # permissions violation the server reports for that subject (see _request).
        self._denials: dict[str, asyncio.Future[None]] = {}
        try:
            # _connect bounds itself by connect_timeout; the margin only guards against a hang
            self._loop_thread.run(self._connect(options), options["connect_timeout"] + 5.0, "connect")
        except BaseException:
            self._shutdown_threads()
            raise
        self._created_in = _fork.pid
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

    # ------------------------------------------------------------------ fork

    def _after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded (see ``_fork.py``): refuse every call.

        The loop thread did not survive the fork and the socket is the parent's:
        nothing is sent, flushed or closed from here, not even at exit.
        """
        self._state = "forked"
        self._close_lock = threading.Lock()
        self._outbox.after_fork_in_child(self._check_fork)
        _open_clients.discard(self)

    def _check_fork(self) -> None:
        """Raise ForkedError in a child process that inherited this client. Any thread."""
        if self._state == "forked":
            raise _fork.forked_error("this Client", self._created_in)

    # ------------------------------------------------------------ connecting

    async def _connect(self, options: dict[str, Any]) -> None:
        timeout: float = options["connect_timeout"]
        try:
            await asyncio.wait_for(self._connect_or_fail(options), timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # nats-py may not have got far enough to close
                await self._nc.close()
            tried = ", ".join(_redact(s) for s in self._servers)
            cause = self._connect_error or exc
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and self._connect_error is None:
                reason = f"no connection within {timeout:g} s"
            else:
                reason = _describe_connect_error(cause)
            raise ConnectError(f"could not connect to {tried}: {reason}") from None
        self._state = "connected"
        self._server_info = dict(getattr(self._nc, "_server_info", {}) or {})

    async def _connect_or_fail(self, options: dict[str, Any]) -> None:
        """nats-py's connect, aborted at the first authentication or TLS failure (no retry storm)."""
        self._reconnected = asyncio.get_running_loop().create_future()
        self._connect_failed = asyncio.get_running_loop().create_future()
        connect = asyncio.ensure_future(
            self._nc.connect(
                servers=self._servers,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                **options,
            )
        )
        waiting: set[asyncio.Future[Any]] = {connect, self._connect_failed}
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also on timeout: nats-py must not go on retrying in the background
            if not connect.done():
                connect.cancel()
        if connect not in done:
            raise self._connect_failed.result()
        self._connect_failed.cancel()
        connect.result()

    # ------------------------------------------------------ loop-side callbacks

    async def _on_disconnected(self) -> None:
        if self._state != "closed":
            self._state = "reconnecting"
        self._dispatch("disconnected_cb")

    async def _on_reconnected(self) -> None:
        self._state = "connected"
        reconnected, self._reconnected = self._reconnected, asyncio.get_running_loop().create_future()
        reconnected.set_result(None)
        self._server_info = dict(getattr(self._nc, "_server_info", {}) or {})
        for engine in list(self._engines):
            engine.on_reconnected()
        self._dispatch("reconnected_cb")

    async def _on_closed(self) -> None:
        self._state = "closed"
        for engine in list(self._engines):
            engine.on_closed()
        self._dispatch("closed_cb")

    async def _on_error(self, exc: Exception) -> None:
        if self._state == "closed":
            return
        if self._state == "connecting":
            self._connect_error = exc
            text = str(exc).lower()
            fatal = (
                isinstance(exc, (nats.errors.AuthorizationError, ssl.SSLError))
                or any(word in text for word in _AUTH_FAILURES)
                # A server refusing credentials or a client certificate may reset the
                # connection before its -ERR is read: do not retry that into a storm.
                or (self._secured and isinstance(exc, (ConnectionResetError, BrokenPipeError)))
            )
            if fatal and not self._connect_failed.done():
                self._connect_failed.set_result(exc)
            return
        error = translate(exc)
        log.warning("natspull: %s", error)
        match = re.search(
            r'permissions violation for (publish|subscription) to "?([^"\s]+)"?', str(exc), re.I
        )
        if match:
            # nats-py lower-cases the server's -ERR text: compare lower-cased subjects.
            subject = match.group(2).lower()
            for engine in list(self._engines):
                if subject in (engine.subject.lower(), engine.inbox.lower()):
                    engine.queue.fail(error)
            denied = self._denials.get(subject)
            if denied is not None and not denied.done():
                denied.set_exception(error)
        self._dispatch("error_cb", error)

    def _dispatch(self, name: str, *args: object) -> None:
        callback = self._user_callbacks.get(name)
        if callback is not None and self._callback_thread is not None:
            self._callback_thread.submit(lambda: callback(*args))

    # -------------------------------------------------------------- properties

    @property
    def is_connected(self) -> bool:
        """True while connected (False while reconnecting and once closed)."""
        return self._state == "connected"

    @property
    def is_closed(self) -> bool:
        """True once closed, and in a child process after os.fork() (nothing works there)."""
        return self._state in ("closed", "forked") or self._closing

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO the server sent on the latest (re)connect: server_id, version, max_payload, ..."""
        return dict(self._server_info)

    @property
    def max_payload(self) -> int:
        return int(self._server_info.get("max_payload", 1024 * 1024))

    @property
    def _max_control_line(self) -> int:
        """The server's max_control_line: from INFO when it announces one, else its default."""
        return int(self._server_info.get("max_control_line") or MAX_CONTROL_LINE)

    def _inbox_bytes(self) -> int:
        """Length of an inbox from nats-py's ``new_inbox()`` (pull and publish_many replies)."""
        return self._inbox_prefix_bytes + 1 + _NUID

    def _request_reply_bytes(self) -> int:
        """Length of the reply subject of a nats-py request."""
        return self._inbox_bytes() + 1 + _REQUEST_TOKEN

    def _check_line(
        self, what: str, subject: str, reply_bytes: int, size: int, header_bytes: int = 0
    ) -> None:
        """Refuse a publish whose protocol line is longer than the server accepts: the server
        would answer -ERR and close the connection for good. Any thread.

        nats-py writes ``PUB <subject> <reply> <size>`` or ``HPUB <subject> <reply> <header
        size> <total size>`` (the space after an empty reply too); the server's limit is on
        the part after the operation. The other lines of the same call (the SUB of its inbox)
        are shorter than this one.
        """
        subject_bytes = len(subject.encode())
        length = subject_bytes + 1 + reply_bytes + 1 + len(str(size))
        if header_bytes:
            length += len(str(header_bytes)) + 1
        limit = self._max_control_line
        if length <= limit:
            return
        inbox = ""
        if reply_bytes:
            prefix = self._inbox_prefix_bytes
            inbox = f" with a {reply_bytes}-byte reply inbox (inbox_prefix is {prefix} bytes)"
        raise ValueError(
            f"{what} {subject!r:.60} is {subject_bytes} bytes{inbox}: the protocol line would be "
            f"{length} bytes, the server allows {limit} (max_control_line) and would close the connection"
        )

    # -------------------------------------------------------------- operations

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        """Run *coro* on the loop and wait, translating every error into a natspull error."""
        if self.is_closed:
            coro.close()
            self._check_fork()
            raise ConnectionClosedError(f"{what}: the connection is closed")
        try:
            return self._loop_thread.run(coro, timeout, what)
        except Error:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    def publish(self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Publish a core NATS message. Returns at once; the loop writes it in the next burst.

        Raises ValueError/TypeError for a bad subject, payload or headers,
        ConnectionClosedError once closed (ForkedError in a forked child). Any thread.
        """
        data, headers = self._check_message(subject, data, headers)
        self._outbox.put(subject, data, "", headers)

    def flush(self, timeout: float = 5.0) -> None:
        """Block until every publish and ack accepted so far has reached the server (PING/PONG).

        Raises natspull.TimeoutError, ConnectionClosedError. Any thread but the loop's.
        """
        timeout = check_number("timeout", timeout, exclusive=True)

        async def flush() -> None:
            await self._outbox.flush()
            await self._ping(timeout)

        self._run(flush(), timeout + 1.0, "flush")

    def request(
        self, subject: str, data: bytes = b"", timeout: float = 5.0, headers: dict[str, str] | None = None
    ) -> Msg:
        """Send a request and block until the reply arrives (at most *timeout* seconds).

        Raises natspull.TimeoutError, natspull.Error (no responders), ConnectionClosedError.
        Any thread but the loop's.
        """
        data, headers = self._check_message(subject, data, headers, self._request_reply_bytes())
        timeout = check_number("timeout", timeout, exclusive=True)
        reply = self._run(
            self._request(subject, data, timeout, headers),
            timeout + 1.0,
            f"request to {subject}",
        )
        return Msg(reply.subject, reply.data, reply.reply or "", reply.headers)

    async def _request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Any:
        """Loop thread: nats-py's request, failed at once with PermissionError when the
        server refuses the publish (instead of waiting for the whole timeout)."""
        key = subject.lower()
        denied = self._denials[key] = asyncio.get_running_loop().create_future()
        request = asyncio.ensure_future(self._nc.request(subject, payload, timeout=timeout, headers=headers))
        try:
            await asyncio.wait({request, denied}, return_when=asyncio.FIRST_COMPLETED)
            if denied.done() and not request.done():
                request.cancel()
                denied.result()
            return request.result()
        finally:
            if self._denials.get(key) is denied:
                del self._denials[key]
            if not denied.done():
                denied.cancel()

    def jetstream(
        self, domain: str | None = None, api_prefix: str | None = None, timeout: float = 5.0
    ) -> JetStream:
        """A JetStream context (management, publish, consumers). Cheap; no network call.

        Raises ForkedError in a child process after os.fork().
        """
        from ._jetstream import JetStream

        self._check_fork()
        return JetStream(self, domain=domain, api_prefix=api_prefix, timeout=timeout)

    async def _ping(self, timeout: float) -> None:
        """Loop thread: a PING/PONG round trip, at most *timeout* seconds.

        Built around two nats-py pitfalls of ``flush(timeout)``: a timed-out flush
        leaves its cancelled future in the PONG queue, and the late PONG then kills
        nats-py's reader; and a reconnect forgets pending PONG futures without
        resolving them. So nats-py's flush is never cancelled here (a late PONG
        resolves it normally), and a round trip cut by a reconnect is retried on
        the new connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reconnected = self._reconnected
            flush = asyncio.ensure_future(self._nc.flush(timeout=_NO_FLUSH_TIMEOUT))
            flush.add_done_callback(_retrieve)
            done, _ = await asyncio.wait(
                {flush, reconnected},
                timeout=max(deadline - loop.time(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if flush in done:
                flush.result()
                return
            if reconnected not in done:
                raise TimeoutError(f"no PONG within {timeout:g} s")
            flush.cancel()  # safe: the reconnect took its future out of nats-py's PONG queue

    def _check_message(
        self, subject: str, data: bytes, headers: dict[str, str] | None, reply_bytes: int = 0
    ) -> tuple[bytes, dict[str, str] | None]:
        """Validate a message to publish with a reply subject of *reply_bytes*; the server's
        max_payload counts data and header block, its max_control_line the PUB/HPUB line.

        A message the server would refuse must fail here: nats-py closes the
        connection for good on the server's -ERR. Returns the data as bytes and a
        copy of the headers.
        """
        check_subject("subject", subject)
        data = check_bytes("data", data)
        headers = check_headers(headers)
        header_bytes = 0
        if headers:
            # nats-py's header block: "NATS/1.0\r\n", "<name>: <value>\r\n" each, "\r\n"
            header_bytes = len(b"NATS/1.0\r\n\r\n") + sum(
                len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()
            )
        size = len(data) + header_bytes
        if size > self.max_payload:
            what = "data and headers are" if headers else "data is"
            raise ValueError(f"{what} {size} bytes, more than the server's max_payload of {self.max_payload}")
        self._check_line("subject", subject, reply_bytes, size, header_bytes)
        return data, headers

    # ----------------------------------------------------------- message sink

    def publish_nowait(self, subject: str, payload: bytes) -> None:
        """Ack sink for Msg: fire-and-forget through the outbox. Any thread."""
        self._outbox.put(subject, payload)

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        """Ack sink for Msg.ack_sync: a request to the ack subject, waiting for the confirmation."""
        timeout = check_number("timeout", timeout, exclusive=True)
        self._check_line("ack subject", subject, self._request_reply_bytes(), len(payload))
        self._run(self._request(subject, payload, timeout), timeout + 1.0, "ack_sync")

    async def _js_api_request(
        self, prefix: str, api: str, payload: bytes = b"", timeout: float = 5.0
    ) -> dict[str, Any]:
        """A JetStream API request on the loop thread; raises the matching JetStreamAPIError."""
        import json

        try:
            reply = await self._request(f"{prefix}.{api}", payload, timeout)
        except Error:
            raise
        except Exception as exc:
            raise translate(exc, api) from exc
        response: dict[str, Any] = json.loads(reply.data or b"{}")
        error = response.get("error")
        if error:
            raise api_error(
                error.get("description", "JetStream API error"), error.get("code"), error.get("err_code")
            )
        return response

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
        try:
            self._loop_thread.run(self._aclose(timeout), timeout + 1.0, "close")
        except Exception as exc:
            log.warning("natspull: close: %s", translate(exc))
        finally:
            _open_clients.discard(self)
            self._shutdown_threads()

    async def _aclose(self, timeout: float) -> None:
        closed = ConnectionClosedError("the connection is closed")
        for engine in list(self._engines):
            engine.queue.fail(closed)  # NAKs what was buffered, through the outbox
        self._outbox.close()
        await self._outbox.flush()
        if self._nc.is_connected:
            try:
                await self._ping(timeout)
            except Exception as exc:
                log.warning("natspull: close: flush failed: %s", translate(exc))
        await self._nc.close()
        self._state = "closed"

    def _shutdown_threads(self) -> None:
        self._state = "closed"
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


def _describe_connect_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.AuthorizationError) or any(w in text.lower() for w in _AUTH_FAILURES):
        return f"authorization failed ({text})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc})"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return (
            f"the server closed the connection during the handshake: authorization or TLS refused? ({text})"
        )
    if isinstance(exc, nats.errors.NoServersError):
        return "no server reachable"
    return text


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
    return Client(server_list, nats_options, callbacks)
