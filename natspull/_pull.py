"""The pull engine: the only module that speaks the JetStream pull protocol.

One :class:`PullEngine` serves one ``Consumer.messages()`` iterator, one
``consume()`` context or one ``fetch()``. It lives on the loop thread: it owns
an inbox subscription, sends pull requests to
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with that inbox as reply,
hands arriving messages to a :class:`~natspull._queue.MsgQueue` in bursts and
handles the status messages (100/404/408/409/400/503) itself.

Pull sizing follows nats.go: "pending" (kept by the queue) is what was
requested and not yet released by the application; whenever it drops below
the threshold, a pull for ``max - pending`` goes out. Missed heartbeats,
leadership changes and reconnects forget pending and pull again.

The queue is the single source of truth for the lifecycle: user threads call
``queue.drain()``/``queue.stop()``, the queue tells the engine through
``on_state`` (a non-blocking hop onto the loop), and the engine takes the
subscription down - draining it, so that messages already in flight are
handed out (DRAINING) or NAKed back to the server (CLOSED).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._msg import Msg
from ._queue import Flow, MsgQueue, State
from .errors import (
    ConnectionClosedError,
    ConsumerDeletedError,
    ConsumerNotFoundError,
    Error,
    JetStreamAPIError,
    NoHeartbeatError,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg as NatsMsg
    from nats.aio.subscription import Subscription

    from ._client import Client

__all__ = ["PullEngine", "PullOptions"]

log = logging.getLogger("natspull")

_NAK = b"-NAK"
_DRAIN_TIMEOUT = 5.0


def _unfilled(headers: dict[str, str]) -> tuple[int, int]:
    """The part of a pull request the server reports as never filled (408/409 headers)."""
    return int(headers.get("Nats-Pending-Messages") or 0), int(headers.get("Nats-Pending-Bytes") or 0)


class _Direct:
    """Stands in for a nats-py subscription's pending ``asyncio.Queue``: nats-py's reader
    calls ``put_nowait(msg)`` for each message it parsed itself (status messages, messages
    with headers: plain ones take ``_parser.FastParser``'s path), and this hands it straight
    to the engine.

    A nats-py callback subscription instead queues every message and runs a task that
    awaits ``queue.get()`` and the callback coroutine per message; skipping that hop is
    worth ~10 % of the loop thread's time (benchmarks/README.md). The engine's handler
    is synchronous and never raises into nats-py's reader.
    """

    __slots__ = ("_deliver",)

    def __init__(self, deliver: Callable[[NatsMsg], None]) -> None:
        self._deliver = deliver

    def put_nowait(self, msg: NatsMsg) -> None:
        try:
            self._deliver(msg)
        except Exception:  # a bug here must not kill the connection's reader
            log.exception("natspull: failed to handle a message on a pull inbox")

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        """``Subscription.drain()`` waits here for queued messages: there never are any."""


class PullOptions:
    """Per-request options of an engine (validated by the caller)."""

    __slots__ = ("expires", "heartbeat", "no_wait", "one_shot")

    def __init__(
        self, *, expires: float, heartbeat: float | None, one_shot: bool = False, no_wait: bool = False
    ) -> None:
        self.expires = expires
        self.heartbeat = heartbeat
        self.one_shot = one_shot  # fetch(): one request, then done
        self.no_wait = no_wait


class PullEngine:
    """Drives pulls for one queue. Every method runs on the loop thread unless it says otherwise."""

    def __init__(
        self,
        client: Client,
        api_prefix: str,
        stream: str,
        consumer: str,
        flow: Flow,
        options: PullOptions,
        *,
        error_on_missing_heartbeat: bool = False,
    ) -> None:
        self._client = client
        self._loop_thread = client._loop_thread
        self._js_prefix = api_prefix
        self.stream = stream
        self.consumer = consumer
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.queue = MsgQueue(
            flow,
            on_low=self._request_pull_threadsafe,
            on_discard=self._nak_all,
            on_state=self._on_state_threadsafe,
        )
        self._opts = options
        self._error_on_missing_heartbeat = error_on_missing_heartbeat
        self.inbox = ""
        self._sub: Subscription | None = None
        self._burst: list[Msg] = []
        self._received = 0  # one-shot: messages received for the single request
        self._received_bytes = 0  # one-shot: and their size as the server counts it
        self._last_activity = 0.0
        self._hb_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self.pulls_sent = 0
        self.heartbeats_missed = 0
        self.reconnects = 0

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Subscribe the inbox and send the first pull."""
        nc = self._client._nc
        self.inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self.inbox, pending_msgs_limit=0, pending_bytes_limit=0)
        self._sub._pending_queue = _Direct(self._on_msg)  # type: ignore[assignment]
        self._client._parser.routes[self._sub._id] = self._deliver  # plain MSGs skip nats-py
        self._client._engines.add(self)
        self._last_activity = self._loop_thread.loop.time()
        if self._opts.heartbeat:
            self._hb_handle = self._loop_thread.loop.call_later(self._opts.heartbeat, self._check_heartbeat)
        self._pull()

    def _on_state_threadsafe(self, state: State) -> None:
        """Queue transition listener. Any thread; never blocks."""
        self._loop_thread.call_soon(self._on_state, state)

    def _on_state(self, state: State) -> None:
        if self._stopping or self._sub is None:
            return
        self._stopping = True
        self._loop_thread.loop.create_task(self._shutdown())

    async def _shutdown(self) -> None:
        """Take the subscription down; what is in flight is handed out (DRAINING) or NAKed (CLOSED)."""
        self._cancel_heartbeat()
        sub, self._sub = self._sub, None
        if sub is not None:
            self._client._parser.routes.pop(sub._id, None)  # stragglers: through nats-py (_Direct)
        nc = self._client._nc
        if sub is not None and not nc.is_closed:
            try:
                if nc.is_connected:
                    await self._unsubscribe_settled(sub)
                else:
                    await sub.unsubscribe()
            except Exception as exc:
                log.debug("natspull: inbox %s: unsubscribe failed: %s", self.inbox, exc)
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._flush_burst()
        self.queue.finish()
        self._client._engines.discard(self)

    async def _unsubscribe_settled(self, sub: Subscription) -> None:
        """UNSUB, then a PING/PONG round trip: every message the server sent before
        it processed the UNSUB has then been received (and handed out or NAKed).

        Pulls and acks still in the outbox go first, so that a pull request
        never reaches the server after the UNSUB of its own inbox. (Not nats-py's
        ``Subscription.drain()``: its flush, cancelled by a timeout, breaks
        nats-py's reader when the late PONG arrives; see ``Client._ping``.)
        """
        client = self._client
        await client._outbox.flush()
        await client._nc._send_unsubscribe(sub._id)
        await client._ping(_DRAIN_TIMEOUT)
        await sub.unsubscribe()  # nats-py's bookkeeping; the server ignores the second UNSUB

    # ---------------------------------------------------------------- pulling

    def _request_pull_threadsafe(self) -> None:
        """Queue low-water callback. Any thread; never blocks."""
        self._loop_thread.call_soon(self._pull)

    def _pull(self) -> None:
        """Send a pull for whatever the queue reserves (nothing if not below the threshold)."""
        if self._sub is None or self._stopping:
            return
        if self._opts.one_shot and self.pulls_sent:
            return
        msgs, nbytes = self.queue.reserve()
        if msgs <= 0:
            return
        request: dict[str, Any] = {"batch": msgs}
        if self._opts.no_wait:
            # With "expires" as well, the server lingers until expiry instead of
            # answering at once (seen with nats-server 2.15; see test_jetstream).
            request["no_wait"] = True
        else:
            request["expires"] = int(self._opts.expires * 1e9)
        if nbytes:
            request["max_bytes"] = nbytes
        if self._opts.heartbeat:
            request["idle_heartbeat"] = int(self._opts.heartbeat * 1e9)
        self.pulls_sent += 1
        try:
            self._client._outbox.put(self.subject, json.dumps(request).encode(), reply=self.inbox)
        except ConnectionClosedError as exc:
            self.queue.fail(exc)

    # --------------------------------------------------------------- receiving

    def _on_msg(self, raw: NatsMsg) -> None:
        """One message or status on the inbox, called by nats-py's reader (see :class:`_Direct`)."""
        headers = raw.headers
        if headers and not raw.data and "Status" in headers:
            self._last_activity = self._loop_thread.loop.time()
            self._on_status(headers)
            return
        size = self._client._parser.frame_size
        if size is None:  # (not seen: delivered outside the parser) the header block re-serialised
            size = len(raw.subject.encode()) + len(raw.reply.encode()) + len(raw.data)
            if headers:
                size += len(b"NATS/1.0\r\n\r\n") + sum(
                    len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()
                )
        self._deliver(raw.subject, raw.reply, raw.data, size, headers or None)

    def _deliver(
        self, subject: str, reply: str, data: bytes, size: int, headers: dict[str, str] | None = None
    ) -> None:
        """One message for the application; also called by the parser's fast path (no headers).

        *size* is what the server charged the message against the request's
        ``max_bytes``: subject + reply + header block + payload, in bytes on
        the wire (see ``_parser``). Counting less would leave pending bytes
        that never drop below the threshold: no re-pull, a stalled iterator.
        """
        burst = self._burst
        burst.append(Msg(subject, data, reply, headers, self._client, size))
        if len(burst) == 1:
            # Messages come through the client's parser (nats-py's reader calls it per
            # read), fast path or not: hand the read's burst over when it is parsed.
            parser = self._client._parser
            if parser.parsing:
                parser.after_read.append(self._flush_burst)
            else:  # (not seen: a nats-py path that delivers outside its reader)
                self._loop_thread.loop.call_soon(self._flush_burst)
        if self._opts.one_shot:
            self._received += 1
            self._received_bytes += size
            flow = self.queue.flow
            # A request whose bytes are used up exactly ends without a status message
            # (nats-server consumer.go, nextWaiting): count it done here, as nats.go does.
            if self._received >= flow.max_msgs or (flow.max_bytes and self._received_bytes >= flow.max_bytes):
                self._request_done()

    def _flush_burst(self) -> None:
        """Hand the messages that arrived in this loop iteration to the queue in one go."""
        if self._burst:
            self._last_activity = self._loop_thread.loop.time()
            burst, self._burst = self._burst, []
            self.queue.put_many(burst)

    def _on_status(self, headers: dict[str, str]) -> None:
        code = headers.get("Status", "")
        description = headers.get("Description", "")
        lowered = description.lower()
        if code == "100":
            return
        if code == "409" and "maxbytes" in lowered:
            self._on_max_bytes(headers, description)
        elif code in ("404", "408") or (code == "409" and "batch completed" in lowered):
            if self._opts.one_shot:
                self._request_done()
                return
            self.queue.adjust_pending(*_unfilled(headers))
            self._pull()
        elif code == "409" and "consumer deleted" in lowered:
            self._fail(ConsumerDeletedError(f"consumer {self.stream}/{self.consumer} was deleted", 409))
        elif code == "409" and "server shutdown" in lowered:
            # The request died with the server. A reconnect re-pulls (or ends a fetch);
            # a connection closed for good ends everything with ConnectionClosedError.
            log.info("natspull: %s/%s: %s", self.stream, self.consumer, description)
            self.queue.forget_outstanding()
        elif code == "409" and "leadership change" in lowered:
            log.info("natspull: %s/%s: %s", self.stream, self.consumer, description)
            if self._opts.one_shot:
                self._request_done()
                return
            self.queue.forget_outstanding()
            self._pull()
        elif code == "400":
            self._fail(JetStreamAPIError(f"bad pull request: {description}", code=400))
        elif code == "503":
            self._loop_thread.loop.create_task(self._on_no_responders())
        else:
            log.warning("natspull: %s/%s: pull status %s %s", self.stream, self.consumer, code, description)
            if self._opts.one_shot:
                self._fail(
                    JetStreamAPIError(description or f"pull failed with status {code}", code=int(code))
                )

    def _on_max_bytes(self, headers: dict[str, str], description: str) -> None:
        """409 Message Size Exceeds MaxBytes: the next message does not fit what is left of a request.

        Fatal only when it did not fit a request for the whole ``max_bytes``
        (nothing of it was filled): no later pull could ever fetch it.
        """
        msgs, nbytes = _unfilled(headers)
        max_bytes = self.queue.flow.max_bytes
        if (max_bytes and nbytes >= max_bytes) or (self._opts.one_shot and not self._received and not nbytes):
            where = f"{self.stream}/{self.consumer}"
            self._fail(
                JetStreamAPIError(
                    f"a message on {where} is larger than max_bytes={max_bytes}: {description}", 409
                )
            )
            return
        if self._opts.one_shot:
            self._request_done()
            return
        self.queue.adjust_pending(msgs, nbytes)
        # Re-pulling now would ask for a part of the budget that may again be too
        # small (a spin of 409s, also when the budget is split over several requests
        # that are each too small): pull once the whole budget is free - nothing held,
        # nothing outstanding; releases before that pull through on_low.
        if not self.queue.holds_messages() and not self.queue.has_outstanding():
            self._pull()

    async def _on_no_responders(self) -> None:
        """503: nobody answered the pull. A missing consumer is terminal; JetStream away is not."""
        try:
            await self._client._js_api_request(
                self._js_prefix, f"CONSUMER.INFO.{self.stream}.{self.consumer}"
            )
        except (ConsumerNotFoundError, JetStreamAPIError) as exc:
            if isinstance(exc, ConsumerNotFoundError) or exc.code == 404:
                self._fail(
                    ConsumerNotFoundError(f"consumer {self.stream}/{self.consumer} does not exist", 404)
                )
                return
        except Error:
            pass
        if self._opts.one_shot:
            self._fail(JetStreamAPIError("JetStream did not answer the pull request (no responders)", 503))
            return
        # JetStream is temporarily unavailable (e.g. a leader election): the
        # heartbeat timer re-pulls; pending is reset so it can.
        self.queue.forget_outstanding()

    def _request_done(self) -> None:
        """One-shot: the single request is complete; nothing more will arrive on the inbox."""
        if self._stopping:
            return
        self._stopping = True
        self._loop_thread.loop.create_task(self._finish_one_shot())

    async def _finish_one_shot(self) -> None:
        self._flush_burst()
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("natspull: inbox %s: unsubscribe failed: %s", self.inbox, exc)
        self.queue.drain()
        self.queue.finish()
        self._client._engines.discard(self)

    def _fail(self, exc: Error) -> None:
        log.warning("natspull: %s/%s: %s", self.stream, self.consumer, exc)
        self._flush_burst()
        self.queue.fail(exc)

    def _nak_all(self, msgs: list[Msg]) -> None:
        """Return messages the application will never see, so the server redelivers them now.

        Any thread, including a signal handler that interrupted a thread inside
        ``Msg.ack()``: the NAKs are sent from the loop thread, so this takes no lock.
        """
        if self._loop_thread.in_loop_thread():
            self._nak_now(msgs)
        else:
            self._loop_thread.call_soon(self._nak_now, msgs)

    def _nak_now(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            if not msg.acked:
                try:
                    msg.nak()
                except Error:  # connection gone: the server redelivers after ack_wait
                    return

    # ------------------------------------------------------ heartbeat, reconnect

    def _check_heartbeat(self) -> None:
        heartbeat = self._opts.heartbeat
        if heartbeat is None or self._sub is None:
            return
        loop = self._loop_thread.loop
        self._hb_handle = loop.call_later(heartbeat / 2, self._check_heartbeat)
        now = loop.time()
        if now - self._last_activity < 2 * heartbeat or not self._client._nc.is_connected:
            return
        self._last_activity = now
        if not self.queue.has_outstanding():
            self._pull()
            return
        self.heartbeats_missed += 1
        log.warning(
            "natspull: %s/%s: no heartbeat for %.1f s; pulling again",
            self.stream,
            self.consumer,
            2 * heartbeat,
        )
        self.queue.forget_outstanding()
        self._pull()
        if self._error_on_missing_heartbeat:
            self.queue.notice(
                NoHeartbeatError(f"no heartbeat from {self.stream}/{self.consumer} for {2 * heartbeat:g} s")
            )

    def _cancel_heartbeat(self) -> None:
        if self._hb_handle is not None:
            self._hb_handle.cancel()
            self._hb_handle = None

    def on_reconnected(self) -> None:
        """The client reconnected: outstanding pulls died with the old connection."""
        self.reconnects += 1
        self._last_activity = self._loop_thread.loop.time()
        if self._opts.one_shot:
            self._request_done()
            return
        self.queue.forget_outstanding()
        self._pull()

    def on_closed(self) -> None:
        """The connection is closed for good."""
        self._cancel_heartbeat()
        self._sub = None
        self.queue.fail(ConnectionClosedError("the connection is closed"))
        self._client._engines.discard(self)

    def stats(self) -> dict[str, int]:
        """A snapshot for ``stats()``. Any thread (reads plain ints)."""
        return {
            "pulls_sent": self.pulls_sent,
            "heartbeats_missed": self.heartbeats_missed,
            "reconnects": self.reconnects,
        }
