"""The door to nats-py: every use of a nats-py internal is here (or in ``_parser.py``).

natspull runs on nats-py's public API, plus a few of its private parts used on purpose for
speed (benchmarks/README.md; the table with the reasons is in docs/architecture.md):

* ``Client._ps`` (a ``Parser``: ``buf``, ``state``, ``parse``, ``reset``),
  ``Client._process_msg``, ``Client.stats`` - replaced by ``_parser.FastParser``: plain
  ``MSG`` frames of pull inboxes skip nats-py's regex chain, ``_process_msg`` and its ``Msg``;
* ``Subscription._id``, ``Subscription._pending_queue`` - an inbox's other frames (status,
  headers) reach the engine through :class:`_Direct`, without a queue and a task per message;
* ``Client._pending``, ``_transport``, ``_flusher_task``, ``TcpTransport._io_writer`` -
  :meth:`Wire.write_now`: an ack burst goes straight to the socket from one loop callback
  when nats-py has nothing queued ahead, up to a high-water mark of the socket's buffer;
* ``Client._send_command``, ``_flush_pending`` - :meth:`Wire.write`: one buffer per burst
  instead of a ``publish()`` coroutine per ack;
* ``TcpTransport.writelines`` - replaced per transport by :func:`_write_joined` (CPython
  3.12+'s socket transport ``writelines()`` never pauses its protocol, so nats-py's flusher
  never waits for the socket there);
* ``Client._send_unsubscribe`` - :meth:`Inbox.unsubscribe_settled`: UNSUB while the
  subscription keeps receiving what is in flight;
* ``Client._server_info`` - the full INFO for ``Client.server_info``;
* the length of nats-py's reply subjects (``new_inbox()`` is ``<inbox_prefix>.<nuid>``, a
  request's reply ``<inbox_prefix>.<nuid>.<nuid><4 hex>``) - :func:`inbox_prefix_bytes`: a publish
  whose protocol line the server would refuse raises ValueError before it is sent.

:func:`check_internals` verifies, at connect time, that the installed nats-py has each of
them with the shape relied on. When it does not - or when the user sets the environment
variable ``NATSPULL_PORTABLE=1`` - the connection runs on nats-py's public API only
(:attr:`Wire.portable`): slower, never broken, and one INFO log line says why.
``tests/integration/test_internals.py`` covers every internal listed here.

Loop thread only, unless a method says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import nats.errors
import nats.nuid
from nats.aio.client import DEFAULT_INBOX_PREFIX, RawCredentials
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport
from nats.protocol.command import pub_cmd
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from ._parser import Deliver, FastParser

__all__ = [
    "INLINE_CREDENTIALS",
    "PORTABLE_ENV",
    "Entry",
    "Inbox",
    "OnMsg",
    "Reply",
    "Wire",
    "check_internals",
    "describe_connect_error",
    "inbox_prefix_bytes",
    "is_fatal_connect_error",
    "portable_requested",
]

log = logging.getLogger("natspull")

#: Set to 1 to run on nats-py's public API only (documented in README and docs/architecture.md).
PORTABLE_ENV = "NATSPULL_PORTABLE"

#: One publish waiting in the outbox: (subject, payload, reply, headers).
Entry = tuple[str, bytes, str, "dict[str, str] | None"]

#: An engine's entry point for a message that went through nats-py:
#: (subject, reply, data, headers, size as the server counts it for max_bytes).
OnMsg = Callable[[str, str, bytes, "dict[str, str] | None", int], None]

# Coroutine methods of nats.aio.client.Client the fast path calls.
REQUIRED_CLIENT_COROUTINES = ["_send_command", "_flush_pending", "_send_unsubscribe", "_process_msg"]
# Attributes of a fresh nats.aio.client.Client, with the type each must have (None: any).
REQUIRED_CLIENT_ATTRIBUTES: dict[str, Any] = {
    "_ps": Parser,
    "_pending": list,
    "_transport": None,
    "_flusher_task": None,
    "_server_info": dict,
    "stats": dict,
}

#: The connect option (natspull's, not nats-py's) holding a ``.creds`` file's text: a NATS
#: context's inline ``user_jwt`` and ``user_seed``; :meth:`Wire.connect` hands it to nats-py.
INLINE_CREDENTIALS = "inline_credentials"

# Above this many bytes in the socket's write buffer, write_now() leaves a burst to nats-py's
# flusher, which waits for the socket to drain: a peer that stops reading never makes the
# direct path grow a buffer without bound.
WRITE_HIGH_WATER = 256 * 1024


def _write_joined(transport: TcpTransport, payload: list[bytes]) -> None:
    """nats-py's flusher writes its buffer with ``writelines()``: in CPython 3.12 before 3.12.9
    and 3.13 before 3.13.2 the socket transport's ``writelines()`` queues without ever pausing its
    protocol (CPython gh-127655; ``write()`` pauses), so
    the flusher's ``drain()`` returns at once and a peer that stops reading makes the buffer grow
    without bound. One ``write()`` of the joined buffer pauses as it should (it is what
    ``writelines()`` did up to 3.11)."""
    writer = transport._io_writer
    if writer is None:  # what nats-py's own writelines() raises then (its flusher expects it)
        raise AttributeError("the transport is not connected")
    writer.write(b"".join(payload))


_CRLF = b"\r\n"
_NO_FLUSH_TIMEOUT = 3600  # nats-py's own flush timeout: never reached, see Connection.ping
_AUTH_FAILURES = ("authorization violation", "authentication", "user authentication expired")


# nats-py's reply subjects (nats.aio.client): new_inbox() is "<inbox_prefix>.<nuid>", a
# request's reply "<inbox_prefix>.<nuid>.<nuid><2 random bytes in hex>".
INBOX_TOKEN_BYTES = nats.nuid.TOTAL_LENGTH
REQUEST_TOKEN_BYTES = INBOX_TOKEN_BYTES + 4


def inbox_prefix_bytes(inbox_prefix: str | None) -> int:
    """Length of the prefix nats-py gives inboxes: *inbox_prefix*, or its default for None."""
    return len(inbox_prefix.encode()) if inbox_prefix else len(DEFAULT_INBOX_PREFIX)


def portable_requested() -> bool:
    """True when the environment asks for nats-py's public API only. Any thread."""
    return os.environ.get(PORTABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_internals() -> str | None:
    """None when the installed nats-py has every internal the fast path relies on, else what not.

    Loop thread (it builds a nats-py client and subscription, which bind to the running loop
    on older Pythons). Never raises.
    """
    try:
        return _check_internals()
    except Exception as exc:  # the check itself broke on an unexpected nats-py: that is an answer too
        return f"checking nats-py's internals failed: {exc!r}"


def _check_internals() -> str | None:
    missing: list[str] = []
    for name in REQUIRED_CLIENT_COROUTINES:
        if not inspect.iscoroutinefunction(getattr(NatsClient, name, None)):
            missing.append(f"Client.{name}()")
    if not inspect.iscoroutinefunction(getattr(Parser, "parse", None)) or not callable(
        getattr(Parser, "reset", None)
    ):
        missing.append("Parser.parse()/reset()")
    parser = Parser()
    if not isinstance(getattr(parser, "buf", None), bytearray) or getattr(parser, "state", None) != (
        AWAITING_CONTROL_LINE
    ):
        missing.append("Parser.buf/state")
    nc = NatsClient()
    for name, kind in REQUIRED_CLIENT_ATTRIBUTES.items():
        if not hasattr(nc, name) or (kind is not None and not isinstance(getattr(nc, name), kind)):
            missing.append(f"Client.{name}")
    if not all(key in getattr(nc, "stats", {}) for key in ("in_msgs", "in_bytes", "out_msgs", "out_bytes")):
        missing.append("Client.stats['in_msgs'/'in_bytes'/'out_msgs'/'out_bytes']")
    sub = Subscription(nc, 1, "natspull.check")
    if not isinstance(getattr(sub, "_id", None), int) or not hasattr(sub, "_pending_queue"):
        missing.append("Subscription._id/_pending_queue")
    transport = TcpTransport()  # type: ignore[no-untyped-call]
    if not hasattr(transport, "_io_writer") or not callable(getattr(TcpTransport, "write", None)):
        missing.append("TcpTransport._io_writer/write()")
    if not missing:
        return None
    return "the installed nats-py lacks " + ", ".join(missing)


def is_fatal_connect_error(exc: BaseException, secured: bool) -> bool:
    """An error while connecting that retrying cannot cure (authentication, TLS). Any thread."""
    text = str(exc).lower()
    return (
        isinstance(exc, (nats.errors.AuthorizationError, ssl.SSLError))
        or any(word in text for word in _AUTH_FAILURES)
        # A server refusing credentials or a client certificate may reset the
        # connection before its -ERR is read: do not retry that into a storm.
        or (secured and isinstance(exc, (ConnectionResetError, BrokenPipeError)))
    )


def describe_connect_error(exc: BaseException) -> str:
    """Why a connect failed, in words for ConnectError. Any thread."""
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


class Reply(NamedTuple):
    """A message received through nats-py (a request's reply, a publish_many ack)."""

    subject: str
    reply: str
    data: bytes
    headers: dict[str, str] | None


def _reply(msg: NatsMsg) -> Reply:
    return Reply(msg.subject, msg.reply or "", msg.data, msg.headers)


def _wire_size(msg: NatsMsg) -> int:
    """A message's size as the server counts it (subject + reply + header block + payload),
    rebuilt from what nats-py parsed: the header block as nats-py serialises it."""
    size = len(msg.subject.encode()) + len((msg.reply or "").encode()) + len(msg.data)
    if msg.headers:
        size += len(b"NATS/1.0\r\n\r\n") + sum(
            len(k.encode()) + len(v.encode()) + 4 for k, v in msg.headers.items()
        )
    return size


def _count_out(nc: NatsClient, msgs: int, nbytes: int) -> None:
    """Count PUBs written past nats-py's ``publish()`` in its ``stats``, as that would have."""
    stats = nc.stats
    stats["out_msgs"] += msgs
    stats["out_bytes"] += nbytes


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: mark a background task's exception as seen (it is reported elsewhere)."""
    if not task.cancelled():
        task.exception()


class _Direct:
    """Stands in for a nats-py subscription's pending ``asyncio.Queue`` (fast path): nats-py's
    reader calls ``put_nowait(msg)`` for each message it parsed itself (status messages,
    messages with headers: plain ones take ``FastParser``'s path), and this hands it straight
    to the engine.

    A nats-py callback subscription instead queues every message and runs a task that
    awaits ``queue.get()`` and the callback coroutine per message; skipping that hop is
    worth ~10 % of the loop thread's time (benchmarks/README.md). The engine's handler
    is synchronous and never raises into nats-py's reader.
    """

    __slots__ = ("_on_msg", "_parser")

    def __init__(self, on_msg: OnMsg, parser: FastParser) -> None:
        self._on_msg = on_msg
        self._parser = parser

    def put_nowait(self, msg: NatsMsg) -> None:
        # The parser knows the frame's size on the wire while nats-py processes it.
        size = self._parser.frame_size
        try:
            if size is None:  # (not seen: delivered outside the parser)
                size = _wire_size(msg)
            self._on_msg(msg.subject, msg.reply or "", msg.data, msg.headers or None, size)
        except Exception:  # a bug here must not kill the connection's reader
            log.exception("natspull: failed to handle a message on a pull inbox")

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        """``Subscription.drain()`` waits here for queued messages: there never are any."""


class Inbox:
    """A pull engine's inbox subscription. Loop thread only."""

    __slots__ = ("_routes", "_sub", "_wire", "subject")

    def __init__(
        self, wire: Wire, subject: str, sub: Subscription, routes: dict[int, Deliver] | None
    ) -> None:
        self._wire = wire
        self.subject = subject
        self._sub = sub
        self._routes = routes  # the parser's routes (fast path), None when portable

    def unroute(self) -> None:
        """Plain messages go through nats-py from now on (stragglers after a shutdown starts)."""
        if self._routes is not None:
            self._routes.pop(self._sub._id, None)

    async def unsubscribe(self) -> None:
        """Remove interest now; what is still in flight is dropped by nats-py."""
        await self._sub.unsubscribe()

    async def unsubscribe_settled(self, ping: Callable[[float], Awaitable[None]], timeout: float) -> None:
        """UNSUB, then a PING/PONG round trip: every message the server sent before it
        processed the UNSUB has then been received (and handed to the engine).

        Fast path: nats-py's raw UNSUB keeps the subscription receiving; *ping* is the
        connection's round trip (never cancels nats-py's flush; see ``Connection.ping``);
        raises natspull.TimeoutError after *timeout*. Portable: nats-py's public
        ``Subscription.drain()`` does the same on a task of its own; after *timeout* it is
        left to finish by itself (cancelling it would leave a cancelled PONG future in
        nats-py, which breaks its reader when the late PONG arrives).
        """
        if self._wire.portable:
            drain = asyncio.ensure_future(self._sub.drain())  # type: ignore[no-untyped-call]
            drain.add_done_callback(_retrieve)
            await asyncio.wait({drain}, timeout=timeout)
            return
        await self._wire.nc._send_unsubscribe(self._sub._id)
        await ping(timeout)
        await self._sub.unsubscribe()  # nats-py's bookkeeping; the server ignores the second UNSUB


class Wire:
    """One nats-py client and natspull's ways into it. Created on the loop thread.

    ``portable`` is decided once, at creation: the fast path when :func:`check_internals`
    passes and the user did not ask for ``NATSPULL_PORTABLE=1``; nats-py's public API otherwise.
    """

    def __init__(self) -> None:
        reason = f"{PORTABLE_ENV}=1" if portable_requested() else check_internals()
        self.portable = reason is not None
        if reason is not None:
            log.info("natspull: running on nats-py's public API only (slower): %s", reason)
        self.nc = NatsClient()
        # Pull inboxes' plain messages skip nats-py's per-message work (see _parser).
        self._parser: FastParser | None = None
        if not self.portable:
            self._parser = FastParser(self.nc)
            self.nc._ps = self._parser
        self._paced: object = None  # the last transport whose writelines() was replaced

    def _pace(self, transport: object) -> None:
        """Give a new TCP transport of nats-py the pausing ``writelines()`` (:func:`_write_joined`)."""
        self._paced = transport
        if isinstance(transport, TcpTransport):
            try:
                transport.writelines = functools.partial(_write_joined, transport)  # type: ignore[method-assign]
            except AttributeError:  # a nats-py whose transport has __slots__: its own writelines()
                log.debug("natspull: cannot pace nats-py's transport writes", exc_info=True)

    # ---------------------------------------------------------------- state

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def is_closed(self) -> bool:
        return bool(self.nc.is_closed)

    def server_info(self) -> dict[str, Any]:
        """The INFO of the current server (portable: the parts nats-py makes public)."""
        if not self.portable:
            return dict(self.nc._server_info or {})
        info: dict[str, Any] = {"max_payload": self.nc.max_payload}
        with contextlib.suppress(Exception):  # not connected yet ("0.0.0-unknown"), or unreadable
            version = self.nc.connected_server_version  # (its str() is "<nats server v2.15.1>")
            if version.major:
                info["version"] = f"{version.major}.{version.minor}.{version.patch}"
        if self.nc.client_id is not None:
            info["client_id"] = self.nc.client_id
        return info

    def counters(self) -> dict[str, int]:
        """A copy of nats-py's ``Client.stats`` (in/out msgs and bytes, reconnects,
        errors_received; the fast paths here keep it exact). Any thread."""
        return dict(getattr(self.nc, "stats", {}))

    # ------------------------------------------------------------ public API

    async def connect(self, servers: list[str], **options: Any) -> None:
        """nats-py's connect; *options* are its keywords, and :data:`INLINE_CREDENTIALS` the text
        of a ``.creds`` file (a context's ``user_jwt`` and ``user_seed``), read from memory."""
        inline = options.pop(INLINE_CREDENTIALS, None)
        if inline is not None:
            options["user_credentials"] = RawCredentials(inline)
        await self.nc.connect(servers=servers, **options)

    async def close(self) -> None:
        await self.nc.close()

    def new_inbox(self) -> str:
        return str(self.nc.new_inbox())

    async def flush(self) -> None:
        """One PING/PONG round trip, never cancelled by a timeout of nats-py's own."""
        await self.nc.flush(timeout=_NO_FLUSH_TIMEOUT)

    async def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        await self.nc.publish(subject, payload, reply=reply, headers=headers)

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Reply:
        return _reply(await self.nc.request(subject, payload, timeout=timeout, headers=headers))

    # ------------------------------------------------------------ pull inboxes

    async def subscribe_inbox(self, subject: str, on_msg: OnMsg, deliver: Deliver) -> Inbox:
        """Subscribe a pull inbox: plain messages to *deliver* (fast path), the rest to *on_msg*."""
        if self._parser is None:

            async def callback(msg: NatsMsg) -> None:
                try:
                    on_msg(msg.subject, msg.reply or "", msg.data, msg.headers or None, _wire_size(msg))
                except Exception:
                    log.exception("natspull: failed to handle a message on a pull inbox")

            sub = await self.nc.subscribe(subject, cb=callback, pending_msgs_limit=0, pending_bytes_limit=0)
            return Inbox(self, subject, sub, None)
        sub = await self.nc.subscribe(subject, pending_msgs_limit=0, pending_bytes_limit=0)
        sub._pending_queue = _Direct(on_msg, self._parser)  # type: ignore[assignment]
        self._parser.routes[sub._id] = deliver
        return Inbox(self, subject, sub, self._parser.routes)

    def after_read(self, callback: Callable[[], None]) -> bool:
        """Run *callback* once the current read is parsed; False (nothing done) outside one."""
        parser = self._parser
        if parser is None or not parser.parsing:
            return False
        parser.after_read.append(callback)
        return True

    @property
    def routes(self) -> dict[int, Deliver]:
        """The parser's routes (empty when portable): for tests and stats."""
        return self._parser.routes if self._parser is not None else {}

    # ---------------------------------------------------------------- writing

    def write_now(self, entries: deque[Entry]) -> bool:
        """Write the plain entries straight to the socket; False when :meth:`write` must go on.

        A plain callback, no task: an ack burst costs one ``transport.write``. It writes only
        when nats-py has nothing queued ahead (its ``_pending`` is empty and it is connected
        over TCP), so the order of everything on the connection is kept: a pull request never
        overtakes the SUB of its inbox, an UNSUB never overtakes a pull. It stops at an entry
        with headers, and once the socket's write buffer would pass ``WRITE_HIGH_WATER``: the
        rest goes through nats-py's buffer, whose flusher waits for the socket to drain (and
        whose size nats-py bounds), so a peer that stops reading never makes this path grow a
        buffer without bound. Portable: False.
        """
        if not entries:
            return True
        if self.portable:
            return False
        nc = self.nc
        flusher, transport = nc._flusher_task, nc._transport
        if transport is not self._paced:
            self._pace(transport)
        if nc._pending or not nc.is_connected or flusher is None or flusher.done():
            return False
        # (a WebSocket transport only queues in write(); it sends when nats-py's flusher drains it)
        if not isinstance(transport, TcpTransport):
            return False
        writer = transport._io_writer
        if writer is None:
            return False
        room = WRITE_HIGH_WATER - writer.transport.get_write_buffer_size()
        # One list of pieces, joined once: per entry its PUB line (as nats-py's pub_cmd formats
        # it), its payload and CRLF, without a call or a concatenation per entry.
        parts: list[bytes] = []
        append = parts.append
        sent = 0
        sent_bytes = 0  # payload bytes, as nats-py's publish counts them
        done = True
        while entries:
            if room <= 0:  # the rest waits in nats-py's buffer for the socket to drain
                done = False
                break
            entry = entries.popleft()
            subject, payload, reply, headers = entry
            if headers is not None:  # headers: nats-py formats it (rare)
                entries.appendleft(entry)  # the loop thread is the only consumer
                done = False
                break
            size = len(payload)
            line = f"PUB {subject} {reply} {size}\r\n".encode()
            append(line)
            append(payload)
            append(_CRLF)
            room -= len(line) + size + 2
            sent += 1
            sent_bytes += size
        if parts:
            writer.write(b"".join(parts))
            _count_out(nc, sent, sent_bytes)
        return done

    async def write(self, entries: deque[Entry]) -> None:
        """Write every entry through nats-py's buffer and flusher, in order.

        Fast path: entries without headers (acks, pull requests: nearly all of them) are
        formatted as ``PUB`` commands and handed over as one buffer per burst (in chunks of
        ``WRITE_HIGH_WATER``: nats-py waits for the socket once its own buffer is full, which
        bounds the memory a peer that stops reading can tie up). Portable: one public
        ``publish()`` each. A failing entry is logged and skipped.
        """
        nc = self.nc
        if nc.is_closed:
            log.warning("natspull: connection closed: %d publishes/acks not sent", len(entries))
            entries.clear()
            return
        if nc._transport is not self._paced and not self.portable:
            self._pace(nc._transport)
        commands: list[bytes] = []
        size = 0
        while entries:
            subject, payload, reply, headers = entries.popleft()
            if headers is None and not self.portable:
                command = pub_cmd(subject, reply, payload)
                commands.append(command)
                size += len(command)
                _count_out(nc, 1, len(payload))
                if size >= WRITE_HIGH_WATER:
                    # nats-py's _send_command waits for its flusher (and so for the socket)
                    # once its buffer is full: hand over in chunks, never all at once.
                    await nc._send_command(b"".join(commands))
                    commands, size = [], 0
                continue
            try:
                if commands:  # keep the order
                    await nc._send_command(b"".join(commands))
                    commands, size = [], 0
                await nc.publish(subject, payload, reply=reply, headers=headers)
            except Exception as exc:
                log.warning("natspull: could not publish to %s: %s", subject, exc)
        if commands:
            await nc._send_command(b"".join(commands))
        if not self.portable:
            await nc._flush_pending()
