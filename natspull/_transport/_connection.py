"""The connection: the loop-side owner of one nats-py client and everything bound to it.

A :class:`Connection` owns the :class:`~natspull._transport._wire.Wire` (nats-py, the parser hook), the
:class:`~natspull._transport._outbox.Outbox`, the registry of running pull engines, PING/PONG round
trips, requests (failed at once by a permissions violation), JetStream API requests, and the
fan-out of reconnect / close / error events to the engines and to the user's callbacks. It
implements :class:`~natspull._transport._link.Link`, the interface every layer above types against;
``Client`` is the public facade over it.

Threads: the fields marked "loop thread only" are touched on the connection's loop thread;
:attr:`state` (a :class:`~natspull._transport._state.ConnState`) is read anywhere and moved
only through its transition table (``_state.py``). Locks: none of its own
besides the outbox's (a leaf); it never holds one across a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._validate import MAX_CONTROL_LINE, check_bytes, check_headers, check_number, check_subject
from ..errors import ConnectError, ConnectionClosedError, Error
from . import _fork
from ._link import Engine
from ._loop import LoopThread
from ._outbox import Outbox
from ._parser import Deliver
from ._replies import OnReply, ReplyRouter
from ._state import ENDED, ConnState, StateCell
from ._translate import api_error, translate
from ._wire import (
    INBOX_TOKEN_BYTES,
    REQUEST_TOKEN_BYTES,
    Inbox,
    OnMsg,
    Reply,
    Wire,
    describe_connect_error,
    inbox_prefix_bytes,
    is_fatal_connect_error,
)

__all__ = ["Connection"]

log = logging.getLogger("natspull")

T = TypeVar("T")

_WIRE_TIMEOUT = 10.0  # creating the wire: a few objects on a running loop; bounded all the same


async def _new_wire() -> Wire:
    return Wire()


class Connection:
    """One nats-py connection on *loop_thread*; implements :class:`~natspull._transport._link.Link`.

    Construction connects (blocking the calling thread, at most ``connect_timeout`` plus a
    margin) and raises ConnectError; the caller owns *loop_thread* and stops it.
    """

    def __init__(
        self,
        loop_thread: LoopThread,
        servers: list[str],
        options: dict[str, Any],
        *,
        tried: str,
        secured: bool,
        dispatch: Callable[..., None],
    ) -> None:
        self._loop_thread = loop_thread
        self._servers = servers
        self._inbox_prefix_bytes = inbox_prefix_bytes(options.get("inbox_prefix"))
        self._tried = tried  # the servers, for messages (credentials redacted by the caller)
        self._secured = secured
        self._dispatch = dispatch  # (callback name, *args): hands a user callback to its thread
        self._state = StateCell()
        self._created_in = _fork.pid
        self._server_info: dict[str, Any] = {}
        self._engines: set[Engine] = set()  # loop thread only
        self._connect_error: BaseException | None = None
        self._connect_failed: asyncio.Future[BaseException]
        self._reconnected: asyncio.Future[None]  # loop thread: completed (and replaced) on each reconnect
        # Loop thread only: requests in flight by lower-cased subject, failed by a
        # permissions violation the server reports for that subject (see _request).
        self._denials: dict[str, asyncio.Future[None]] = {}
        self.wire = loop_thread.run(_new_wire(), _WIRE_TIMEOUT, "connect")
        self.outbox = Outbox(loop_thread, self.wire)
        self.replies = ReplyRouter(loop_thread, self.wire)  # the JetStream publishes' PubAcks
        self._async_reply_bytes = self.replies.reply_bytes(self.inbox_bytes())  # (per call: hot)
        # _connect bounds itself by connect_timeout; the margin only guards against a hang
        loop_thread.run(self._connect(options), options["connect_timeout"] + 5.0, "connect")

    # ------------------------------------------------------------ connecting

    async def _connect(self, options: dict[str, Any]) -> None:
        timeout: float = options["connect_timeout"]
        try:
            await asyncio.wait_for(self._connect_or_fail(options), timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # nats-py may not have got far enough to close
                await self.wire.close()
            cause = self._connect_error or exc
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and self._connect_error is None:
                reason = f"no connection within {timeout:g} s"
            else:
                reason = describe_connect_error(cause)
            raise ConnectError(f"could not connect to {self._tried}: {reason}") from None
        self._state.on("connected")
        self._server_info = self.wire.server_info()

    async def _connect_or_fail(self, options: dict[str, Any]) -> None:
        """nats-py's connect, aborted at the first authentication or TLS failure (no retry storm)."""
        self._reconnected = asyncio.get_running_loop().create_future()
        self._connect_failed = asyncio.get_running_loop().create_future()
        connect = asyncio.ensure_future(
            self.wire.connect(
                self._servers,
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
        if self._state.on("disconnected"):  # (nats-py calls this on close too: no move then)
            for engine in list(self._engines):
                engine.on_disconnected()
        self._dispatch("disconnected_cb")

    async def _on_reconnected(self) -> None:
        moved = self._state.on("reconnected")
        reconnected, self._reconnected = self._reconnected, asyncio.get_running_loop().create_future()
        reconnected.set_result(None)
        self._server_info = self.wire.server_info()
        if moved:  # a closing connection's engines are being aborted
            for engine in list(self._engines):
                engine.on_reconnected()
        self._dispatch("reconnected_cb")

    async def _on_closed(self) -> None:
        self._state.on("closed")
        self.replies.fail_all(ConnectionClosedError("the connection closed before the server answered"))
        for engine in list(self._engines):
            engine.on_closed()
        self._dispatch("closed_cb")

    async def _on_error(self, exc: Exception) -> None:
        if self.state is ConnState.CLOSED:
            return
        if self.state is ConnState.CONNECTING:
            self._connect_error = exc
            if is_fatal_connect_error(exc, self._secured) and not self._connect_failed.done():
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
                    engine.abort(error)
            denied = self._denials.get(subject)
            if denied is not None and not denied.done():
                denied.set_exception(error)
        self._dispatch("error_cb", error)

    # -------------------------------------------------------------- properties

    @property
    def loop_thread(self) -> LoopThread:
        return self._loop_thread

    @property
    def is_connected(self) -> bool:
        """nats-py is connected (not reconnecting, not closed). Any thread."""
        return self.wire.is_connected

    @property
    def is_closed(self) -> bool:
        """nats-py is closed for good. Any thread."""
        return self.wire.is_closed

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO of the latest (re)connect (a copy). Any thread."""
        return dict(self._server_info)

    @property
    def max_payload(self) -> int:
        return int(self._server_info.get("max_payload", 1024 * 1024))

    @property
    def max_control_line(self) -> int:
        """The server's max_control_line: from INFO when it announces one, else its default."""
        return int(self._server_info.get("max_control_line") or MAX_CONTROL_LINE)

    def inbox_bytes(self) -> int:
        """Length of an inbox from nats-py's ``new_inbox()`` (pull and publish_many replies)."""
        return self._inbox_prefix_bytes + 1 + INBOX_TOKEN_BYTES

    def request_reply_bytes(self) -> int:
        """Length of the reply subject of a nats-py request."""
        return self.inbox_bytes() + 1 + REQUEST_TOKEN_BYTES

    def counters(self) -> dict[str, int]:
        """nats-py's connection counters (a copy): in/out msgs and bytes, reconnects,
        errors_received. Any thread."""
        return self.wire.counters()

    @property
    def engines(self) -> frozenset[Engine]:
        """The running engines (a snapshot, for tests and stats). Any thread."""
        return frozenset(self._engines)

    # ------------------------------------------------------------------ fork

    def after_fork_in_child(self) -> None:
        """Child process after os.fork(), single-threaded (``_fork.py``): refuse every call.

        The loop thread did not survive the fork and the socket is the parent's: nothing is
        sent, flushed or closed from here. Called by the owning Client's fork hook.
        """
        self._state.after_fork_in_child()
        self.outbox.after_fork_in_child(self.check_fork)
        self.replies.after_fork_in_child()

    @property
    def state(self) -> ConnState:
        """The connection's state. Any thread."""
        return self._state.state

    def begin_close(self) -> None:
        """``Client.close()`` started: refuse new work from now on. Any thread."""
        self._state.on("close")

    def mark_closed(self) -> None:
        """The loop thread is stopping: closed, whatever nats-py got to report. Any thread.

        Publishes still waiting for an answer fail (the loop that would answer them is gone).
        """
        self._state.on("closed")
        if self._state.state is not ConnState.FORKED:
            self.replies.fail_all(ConnectionClosedError("the connection closed before the server answered"))

    def check_fork(self) -> None:
        """Raise ForkedError in a child process that inherited this connection. Any thread."""
        if self.state is ConnState.FORKED:
            raise _fork.forked_error("this Client", self._created_in)

    # ------------------------------------------------------------ Link: any thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        """Run *coro* on the loop and wait, translating every error into a natspull error."""
        if self.state in ENDED:
            coro.close()
            self.check_fork()
            raise ConnectionClosedError(f"{what}: the connection is closed")
        try:
            return self._loop_thread.run(coro, timeout, what)
        except Error:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    def check_line(self, what: str, subject: str, reply_bytes: int, size: int, header_bytes: int = 0) -> None:
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
        limit = self.max_control_line
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

    def check_message(
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
        self.check_line("subject", subject, reply_bytes, size, header_bytes)
        return data, headers

    def publish_nowait(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Ack sink for Msg, and the way out of pull requests and core publishes. Any thread."""
        self.outbox.put(subject, payload, reply, headers)

    def expect_reply(self, timeout: float, on_reply: OnReply) -> str:
        """A reply subject whose answer goes to *on_reply* (on the loop thread), or natspull.TimeoutError
        after *timeout* s, or ConnectionClosedError at close (see ``_replies.py``). Any thread
        but the loop's; the first call blocks once on subscribing the reply inbox."""
        if self.state in ENDED:
            self.check_fork()
            raise ConnectionClosedError("the connection is closed")
        subject = self.replies.expect(timeout, on_reply)
        # A close that failed every waiting reply between the check above and expect() did not
        # see this one: refuse it here (unless that close has called it already).
        if self.state in ENDED and self.replies.forget(subject):
            raise ConnectionClosedError("the connection is closed")
        return subject

    def forget_reply(self, subject: str) -> bool:
        """Drop the callback of *subject*; False when it was already called. Any thread."""
        return self.replies.forget(subject)

    def async_reply_bytes(self) -> int:
        """The length of a reply subject from :meth:`expect_reply`. Any thread."""
        return self._async_reply_bytes

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        """Ack sink for Msg.ack_sync: a request to the ack subject, waiting for the confirmation."""
        timeout = check_number("timeout", timeout, exclusive=True)
        self.check_line("ack subject", subject, self.request_reply_bytes(), len(payload))
        self.run(self.request(subject, payload, timeout), timeout + 1.0, "ack_sync")

    # -------------------------------------------------------------- Link: loop

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Reply:
        """nats-py's request, failed at once with PermissionError when the server refuses
        the publish (instead of waiting for the whole timeout)."""
        key = subject.lower()
        denied = self._denials[key] = asyncio.get_running_loop().create_future()
        request = asyncio.ensure_future(self.wire.request(subject, payload, timeout, headers))
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

    async def api_request(
        self,
        prefix: str,
        api: str,
        payload: bytes = b"",
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A JetStream API request on the loop thread; raises the matching JetStreamAPIError."""
        try:
            reply = await self.request(f"{prefix}.{api}", payload, timeout, headers)
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

    async def ping(self, timeout: float) -> None:
        """A PING/PONG round trip, at most *timeout* seconds.

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
            flush = asyncio.ensure_future(self.wire.flush())
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

    async def flush_outbox(self) -> None:
        await self.outbox.flush()

    def new_inbox(self) -> str:
        return self.wire.new_inbox()

    async def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        await self.wire.publish(subject, payload, reply, headers)

    async def subscribe_inbox(self, subject: str, on_msg: OnMsg, deliver: Deliver) -> Inbox:
        return await self.wire.subscribe_inbox(subject, on_msg, deliver)

    def after_read(self, callback: Callable[[], None]) -> bool:
        return self.wire.after_read(callback)

    def register(self, engine: Engine) -> None:
        self._engines.add(engine)

    def unregister(self, engine: Engine) -> None:
        self._engines.discard(engine)

    # ----------------------------------------------------------------- closing

    async def aclose(self, timeout: float) -> None:
        """Loop thread: fail every engine (NAKing what they buffered), flush, close nats-py."""
        closed = ConnectionClosedError("the connection is closed")
        for engine in list(self._engines):
            engine.abort(closed)  # NAKs what was buffered, through the outbox
        self.outbox.close()
        await self.outbox.flush()
        if self.wire.is_connected:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            # publish_async acks on their way are still worth waiting for, within the timeout
            await self.replies.settled(timeout)
            try:
                await self.ping(max(deadline - loop.time(), 0.001))
            except Exception as exc:
                log.warning("natspull: close: flush failed: %s", translate(exc))
        self.replies.fail_all(ConnectionClosedError("the connection closed before the server answered"))
        await self.wire.close()
        self._state.on("closed")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: mark a background task's exception as seen (it is reported elsewhere)."""
    if not task.cancelled():
        task.exception()
