"""The pull engine: the only module that speaks the JetStream pull protocol.

One :class:`PullEngine` serves one ``Consumer.messages()`` iterator, one
``consume()`` context or one ``fetch()``, as its ``_settings.PullSettings`` say (validated
before the engine is built; the engine never re-checks them). It lives on the loop thread: it owns
an inbox subscription, sends pull requests to
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with that inbox as reply,
hands arriving messages to a :class:`~natspull._engine._queue.MsgQueue` in bursts and
handles the status messages itself, through one table (:data:`_STATUS` for
100/400/404/408/423/503, :data:`_CONFLICTS` for the kinds of 409; any other code is logged
and left to the mode).

Priority groups (ADR-42): a pull for a grouped consumer carries the fields of its
:class:`~natspull._engine._settings.PullGroup`. With the ``pinned_client`` policy the engine remembers the
``Nats-Pin-Id`` of delivered messages (:attr:`PullEngine.pin_id`, loop thread only) and sends
it as ``id`` on every pull; a 423 (the pin moved on: unpinned, expired, lost with a server
restart) forgets it and pulls again at once without it.

Pull sizing follows nats.go: "pending" (kept by the queue) is what was
requested and not yet released by the application; whenever it drops below
the threshold, a pull for ``max - pending`` goes out. Missed heartbeats,
leadership changes and reconnects forget pending and pull again.

The queue is the single source of truth for the lifecycle: user threads call
``queue.drain()``/``queue.stop()``, the queue tells the engine through
``on_state`` (a non-blocking hop onto the loop), and the engine takes the
subscription down - draining it, so that messages already in flight are
handed out (DRAINING) or NAKed back to the server (CLOSED).

What differs between continuous pulls and ``fetch()`` is the engine's *mode*:
:class:`Continuous` here, ``_fetch.OneShot`` for one request. Idle heartbeats are watched
by a ``_heartbeat.HeartbeatMonitor``. The engine talks to the connection only through
``_link.Link``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .. import _ack_subject as ack_subject
from .._msg import AckSink, Msg, nak_unacked
from .._observe._events import ConsumerEvent, EventThread, log_event
from .._transport._link import Link
from .._transport._wire import Inbox
from ..errors import (
    ConnectionClosedError,
    ConsumerDeletedError,
    ConsumerNotFoundError,
    Error,
    JetStreamAPIError,
    NoHeartbeatError,
)
from ._heartbeat import HeartbeatMonitor
from ._lease import LeaseKeeper
from ._modes import Mode, OneShot
from ._queue import MsgQueue, State
from ._settings import PullSettings

__all__ = ["AckCounter", "Continuous", "PullEngine", "start_engine"]

log = logging.getLogger("natspull")

START_TIMEOUT = 10.0  # seconds for an engine's subscription and first pull

_DRAIN_TIMEOUT = 5.0
_ACK = b"+ACK"  # (as _msg sends it)


def _unfilled(headers: dict[str, str]) -> tuple[int, int]:
    """The part of a pull request the server reports as never filled (408/409 headers)."""
    return int(headers.get("Nats-Pending-Messages") or 0), int(headers.get("Nats-Pending-Bytes") or 0)


class AckCounter:
    """The ack sink of an engine's messages: forwards to the connection and counts the acks.

    ``acked`` (for ``stats()``) counts ``+ACK`` messages handed to the outbox and double acks the
    server confirmed; NAK, TERM and WPI are not counted. Acks come from any thread.
    """

    __slots__ = ("_link", "_lock", "acked")

    def __init__(self, link: Link) -> None:
        self._link = link
        # guards acked (several worker threads ack at once); leaf lock, held for one addition
        self._lock = threading.Lock()
        self.acked = 0

    @property
    def max_payload(self) -> int:
        return self._link.max_payload

    def publish_nowait(self, subject: str, payload: bytes) -> None:
        self._link.publish_nowait(subject, payload)
        if payload == _ACK:
            with self._lock:
                self.acked += 1

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        self._link.request_ack(subject, payload, timeout)
        if payload == _ACK:
            with self._lock:
                self.acked += 1

    def check_fork(self) -> None:
        self._link.check_fork()


class Continuous:
    """``messages()``/``consume()``: keep pending topped up; every end of a request re-pulls."""

    __slots__ = ("_engine",)

    def __init__(self, engine: PullEngine) -> None:
        self._engine = engine

    def may_pull(self, pulls_sent: int) -> bool:
        return True

    def on_delivered(self, size: int) -> None:
        pass

    def on_request_ended(self, msgs: int, nbytes: int) -> None:
        self._engine.queue.adjust_pending(msgs, nbytes)
        self._engine.pull()

    def on_leadership_change(self) -> None:
        self._engine.queue.forget_outstanding()
        self._engine.pull()

    def on_max_bytes(self, msgs: int, nbytes: int, describe: str) -> None:
        queue = self._engine.queue  # (continuous)
        max_bytes = queue.flow.max_bytes or queue.flow.request_bytes
        # Fatal only when it did not fit a request for the whole max_bytes (nothing of it was
        # filled): no later pull could ever fetch it.
        if max_bytes and nbytes >= max_bytes:
            self._engine.fail(JetStreamAPIError(describe, 409))
            return
        queue.adjust_pending(msgs, nbytes)
        # Re-pulling now would ask for a part of the budget that may again be too
        # small (a spin of 409s, also when the budget is split over several requests
        # that are each too small): pull once the whole budget is free - nothing held,
        # nothing outstanding; releases before that pull through on_low.
        if not queue.holds_messages() and not queue.has_outstanding():
            self._engine.pull()

    def on_unknown_status(self, code: str, description: str) -> None:
        pass  # logged by the engine; the pull goes on

    def on_heartbeat_missed(self, error: Error) -> None:
        engine = self._engine
        engine.queue.forget_outstanding()
        engine.pull()
        if engine.settings.error_on_missing_heartbeat:
            engine.queue.notice(error)

    def on_pin_lost(self, msgs: int, nbytes: int, exact: bool) -> None:
        # At once (not at the next heartbeat): the pin went to someone else or nobody, and a
        # pull without the id may be pinned now.
        if exact:
            self._engine.queue.adjust_pending(msgs, nbytes)
        else:
            self._engine.queue.forget_outstanding()
        self._engine.pull()

    def on_no_responders(self) -> None:
        # JetStream is temporarily unavailable (e.g. a leader election): the
        # heartbeat timer re-pulls; pending is reset so it can.
        self._engine.queue.forget_outstanding()

    def on_reconnected(self) -> None:
        self._engine.queue.forget_outstanding()
        self._engine.pull()

    def on_consumer_gone(self, error: Error) -> None:
        self._engine.fail(error)

    async def on_stopped(self) -> None:
        pass


class PullEngine:
    """Drives pulls for one queue. Every method runs on the loop thread unless it says otherwise."""

    def __init__(
        self,
        link: Link,
        api_prefix: str,
        stream: str,
        consumer: str,
        settings: PullSettings,
        *,
        pin_store: dict[str, str] | None = None,
        events: EventThread | None = None,
        ack_sink: AckSink | None = None,
        on_take: Callable[[Msg], None] | None = None,
    ) -> None:
        """*ack_sink*: what the messages ack through instead of the connection (an ordered read's,
        ack policy none: nothing is counted, NAKed back or counted as a redelivery then).
        *on_take*: the queue's ``on_take`` (told the last message of every take)."""
        self._link = link
        # acks is None when the messages cannot be acked through this engine
        self.acks: AckCounter | None = None
        self.ack_sink: AckSink
        if ack_sink is None:
            self.acks = self.ack_sink = AckCounter(link)
        else:
            self.ack_sink = ack_sink
        self.loop_thread = link.loop_thread
        self._js_prefix = api_prefix
        self.stream = stream
        self.consumer = consumer
        self.subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.queue = MsgQueue(
            settings.flow,
            on_low=self._request_pull_threadsafe,
            on_discard=self._nak_all,
            on_state=self._on_state_threadsafe,
            on_take=on_take,
            count_redelivered=None if self.acks is None else ack_subject.redelivery_counter(),
            source=(stream, consumer),
        )
        self.settings = settings
        # The two hooks where a read differs from the plain engine; an ordered read replaces
        # both (_ordered_mode.ordered_engine) before start(). The mode: the reactions that
        # differ (see _modes.Mode). accept: the step a socket read's messages go through on
        # their way to the queue (None: all of them, in order); loop thread.
        self.mode: Mode = OneShot(self) if settings.one_shot else Continuous(self)
        self.accept: Callable[[list[Msg]], list[Msg]] | None = None
        # Leases the messages from their arrival (set before start(); None: no lease). The
        # queue then stamps the messages it hands out (queue.stamp).
        self.lease: LeaseKeeper | None = None
        self._group = settings.group
        self._pinned = settings.group is not None and settings.group.pinned
        # The group's pin as this engine last saw it (Nats-Pin-Id); loop thread only. It starts
        # from, and keeps up to date, its Consumer's *pin_store* (group -> pin), so that the
        # next fetch or iterator of that Consumer object sends it too.
        self._pin_store = pin_store if self._pinned else None
        self.pin_id: str | None = None
        if self._pin_store is not None and settings.group is not None:
            self.pin_id = self._pin_store.get(settings.group.group)
        # The application's on_event, on its own thread (see _events); closed when this engine
        # is done (_done). Events are logged whether or not there is one.
        self.events = events
        self.inbox = ""
        self._sub: Inbox | None = None
        # Messages handed back (NAKed) while the inbox is subscribed wait here until it is
        # unsubscribed (see _give_back); None: NAK at once. Loop thread only.
        self._held: list[Msg] | None = None
        self._burst: list[Msg] = []
        self._heartbeat: HeartbeatMonitor | None = None
        self._stopping = False
        self._suspended = False  # between suspend() and retarget()
        self.pulls_sent = 0
        self.heartbeats_missed = 0
        self.reconnects = 0
        self.pins_lost = 0
        self.resets = 0  # times the mode moved this engine to another consumer (ordered reads)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Subscribe the inbox and send the first pull."""
        link = self._link
        self.inbox = link.new_inbox()
        self._sub = await link.subscribe_inbox(self.inbox, self._on_msg, self._deliver)
        self._held = []
        link.register(self)
        if self.settings.heartbeat:
            self._heartbeat = HeartbeatMonitor(
                self.loop_thread.loop,
                self.settings.heartbeat,
                lambda: link.is_connected,
                self._on_heartbeat_missed,
            )
            self._heartbeat.start()
        self.pull()
        if not self.settings.one_shot:
            self.emit("connected")

    @property
    def running(self) -> bool:
        """True from start() until the engine stops (its queue's drain/stop, or the end of a
        one-shot request)."""
        return self._sub is not None and not self._stopping

    @property
    def heartbeat_interval(self) -> float:
        """The silence after which a heartbeat counts as missed (0: heartbeats not watched)."""
        return 0.0 if self._heartbeat is None else self._heartbeat.interval

    async def move_inbox(self) -> bool:
        """Read a fresh inbox from now on: subscribe it, then unsubscribe the old one, whose
        late statuses are then ignored (a mode that moves to another consumer leaves its old
        requests behind). Returns False, moving nothing, when the engine stopped meanwhile.
        Raises natspull.Error when the connection is closed."""
        link = self._link
        inbox = link.new_inbox()
        sub = await link.subscribe_inbox(inbox, self._on_msg, self._deliver)
        if not self.running:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return False
        stale, self._sub, self.inbox = self._sub, sub, inbox
        assert stale is not None  # (running)
        stale.unroute()
        with contextlib.suppress(Exception):
            await stale.unsubscribe()
        return True

    def suspend(self) -> None:
        """Send no pull and watch no heartbeat until :meth:`retarget` (a mode moving this engine
        to another consumer). Messages that arrive still go through :attr:`accept`."""
        self._suspended = True
        self._cancel_heartbeat()

    def retarget(self, consumer: str) -> None:
        """Pull from *consumer* (of the same stream) from now on, at once: what was requested
        from the old one is forgotten, what is buffered stays. Ends a :meth:`suspend`. Does
        nothing once the engine stopped."""
        if not self.running:
            return
        self.consumer = consumer
        self.subject = f"{self._js_prefix}.CONSUMER.MSG.NEXT.{self.stream}.{consumer}"
        self._suspended = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat.start()  # (from now: the old consumer's silence does not count)
        self.queue.forget_outstanding()
        self.pull()

    def _on_state_threadsafe(self, state: State) -> None:
        """Queue transition listener. Any thread; never blocks."""
        self.loop_thread.call_soon(self._on_state, state)

    def _on_state(self, state: State) -> None:
        if self._stopping or self._sub is None:
            return
        self._stopping = True
        self.loop_thread.loop.create_task(self._shutdown())

    async def _shutdown(self) -> None:
        """Take the subscription down; what is in flight is handed out (DRAINING) or NAKed (CLOSED)."""
        self._cancel_heartbeat()
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.unroute()  # stragglers: through nats-py
        link = self._link
        if sub is not None and not link.is_closed:
            try:
                if link.is_connected:
                    # Pulls and acks still in the outbox go first, so that a pull request
                    # never reaches the server after the UNSUB of its own inbox.
                    await link.flush_outbox()
                    await sub.unsubscribe_settled(link.ping, _DRAIN_TIMEOUT)
                else:
                    await sub.unsubscribe()
            except Exception as exc:
                log.debug("natspull: inbox %s: unsubscribe failed: %s", self.inbox, exc)
                with contextlib.suppress(Exception):  # already gone with the connection
                    await sub.unsubscribe()
        self._flush_burst()
        self.queue.finish()
        self._release_held()
        link.unregister(self)
        self._done()
        await self.mode.on_stopped()

    # ---------------------------------------------------------------- pulling

    def _request_pull_threadsafe(self) -> None:
        """Queue low-water callback. Any thread; never blocks."""
        self.loop_thread.call_soon(self.pull)

    def pull(self) -> None:
        """Send a pull for whatever the queue reserves (nothing if not below the threshold)."""
        if self._sub is None or self._stopping or self._suspended or not self.mode.may_pull(self.pulls_sent):
            return
        msgs, nbytes = self.queue.reserve()
        if msgs <= 0:
            return
        self._send(msgs, nbytes)

    def _send(self, msgs: int, nbytes: int, expires: float | None = None) -> None:
        request: dict[str, Any] = {"batch": msgs}
        if self.settings.no_wait:
            # With "expires" as well, the server lingers until expiry instead of
            # answering at once (seen with nats-server 2.15; see test_jetstream).
            request["no_wait"] = True
        else:
            request["expires"] = int((expires or self.settings.expires) * 1e9)
        if nbytes:
            request["max_bytes"] = nbytes
        elif self.queue.flow.request_bytes:
            request["max_bytes"] = self.queue.flow.request_bytes
        if self.settings.heartbeat:
            request["idle_heartbeat"] = int(self.settings.heartbeat * 1e9)
        if self._group is not None:
            request.update(self._group.fields(self.pin_id))
        self.pulls_sent += 1
        try:
            self._link.publish_nowait(self.subject, json.dumps(request).encode(), self.inbox)
        except ConnectionClosedError as exc:
            self.queue.fail(exc)

    def nudge(self, group: str | None) -> None:
        """This client resumed the consumer, or unpinned *group*: pull now.

        The server serves requests already waiting only when something wakes it (a new
        message or pull, or their next heartbeat tick): a resume does not. So a request
        reaches it now - for what the queue reserves, or else for one message (booked as
        pending, released by its 408 after two heartbeat intervals). After an unpin of
        this engine's group its pin is forgotten first. Loop thread; continuous engines only.
        """
        if self._sub is None or self._stopping or self._suspended or self.settings.one_shot:
            return
        if group is not None:
            if self._group is None or self._group.group != group:
                return
            if self.pin_id is not None:
                had = self.pin_id
                self._set_pin(None)
                self.emit("pin_lost", description="unpinned by this client", pin_id=had)
        msgs, nbytes = self.queue.reserve()
        if msgs <= 0:
            if not self.queue.book(1):
                return
            msgs, nbytes = 1, 0
        # Short-lived: the server wants expires >= 2 x idle_heartbeat.
        self._send(msgs, nbytes, expires=2 * (self.settings.heartbeat or 0.5))

    # --------------------------------------------------------------- receiving

    def _on_msg(
        self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None, size: int
    ) -> None:
        """One message or status on the inbox that went through nats-py (see ``_wire``);
        *size* as the server counts it (see :meth:`_deliver`)."""
        # A status has no reply subject; a stream message always has one (its ack subject), so
        # an application header named "Status" on an empty message is still a message.
        if headers and not data and not reply and "Status" in headers:
            if subject != self.inbox:
                return  # a status for a request on an inbox this engine moved away from (move_inbox)
            self._touch()
            self._on_status(headers)
            return
        self._deliver(subject, reply, data, size, headers or None)

    def _deliver(
        self, subject: str, reply: str, data: bytes, size: int, headers: dict[str, str] | None = None
    ) -> None:
        """One message for the application; also called by the parser's fast path (no headers).

        *size* is what the server charged the message against the request's
        ``max_bytes``: subject + reply + header block + payload, in bytes on
        the wire (see ``_parser``). Counting less would leave pending bytes
        that never drop below the threshold: no re-pull, a stalled iterator.
        """
        if headers and self._pinned:
            pin = headers.get("Nats-Pin-Id")
            if pin and pin != self.pin_id:
                self._set_pin(pin)
                self.emit("pinned", pin_id=pin)
        burst = self._burst
        first = not burst
        burst.append(Msg(subject, data, reply, headers, self.ack_sink, size))
        # Messages come through the connection's parser (nats-py's reader calls it per read),
        # fast path or not: hand the read's burst over when it is parsed (else: next iteration).
        if first and not self._link.after_read(self._flush_burst):
            self.loop_thread.loop.call_soon(self._flush_burst)
        mode = self.mode
        if mode.__class__ is not Continuous:  # (Continuous counts nothing: no call per message)
            mode.on_delivered(size)

    def _flush_burst(self) -> None:
        """Hand the messages that arrived in this loop iteration to the queue in one go, through
        the :attr:`accept` step if there is one."""
        burst = self._burst
        if not burst:
            return
        self._burst = []
        accept = self.accept
        msgs = burst if accept is None else accept(burst)
        if msgs:
            self._touch()
            self.queue.put_many(msgs)
            if self.lease is not None:
                self.lease.arrived(msgs)

    def _touch(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.touch()

    # ----------------------------------------------------------------- status

    def _on_status(self, headers: dict[str, str]) -> None:
        code = headers.get("Status", "")
        description = headers.get("Description", "")
        handler = _STATUS.get(code)
        if code == "409":
            lowered = description.lower()
            handler = next((h for text, h in _CONFLICTS if text in lowered), None)
        if handler is None:
            self.emit("status", code=int(code) if code.isdigit() else 0, description=description)
            self.mode.on_unknown_status(code, description)
            return
        handler(self, headers, description)

    def _on_heartbeat(self, headers: dict[str, str], description: str) -> None:
        """100 Idle Heartbeat: the server is alive (the activity was noted)."""

    def _on_request_ended(self, headers: dict[str, str], description: str) -> None:
        """404 No Messages, 408 Request Timeout, 409 Batch Completed."""
        self.mode.on_request_ended(*_unfilled(headers))

    def _on_max_bytes(self, headers: dict[str, str], description: str) -> None:
        """409 Message Size Exceeds MaxBytes: the next message does not fit what is left of a request."""
        msgs, nbytes = _unfilled(headers)
        where = f"{self.stream}/{self.consumer}"
        max_bytes = self.queue.flow.max_bytes or self.queue.flow.request_bytes
        self.mode.on_max_bytes(
            msgs, nbytes, f"a message on {where} is larger than max_bytes={max_bytes}: {description}"
        )

    def _on_pin_lost(self, headers: dict[str, str], description: str) -> None:
        """423: the pull carried a pin id that is not the group's pin (any more).

        ``Nats-Wrong-Pin-Id`` ends a waiting request and says what it left unfilled;
        ``Nats-Pin-Id mismatch`` refuses a request on arrival, without those headers. A
        refused request whose id this engine already forgot belongs to the pulls it forgot
        then (requests reach the server, and their answers come back, in the order sent).
        """
        exact = "Nats-Pending-Messages" in headers
        had = self.pin_id
        self._set_pin(None)
        if not exact and had is None:
            return
        if had is not None:
            self.pins_lost += 1
            self.emit("pin_lost", code=423, description=description, pin_id=had)
        msgs, nbytes = _unfilled(headers)
        self.mode.on_pin_lost(msgs, nbytes, exact)

    def _set_pin(self, pin: str | None) -> None:
        old, self.pin_id = self.pin_id, pin
        store = self._pin_store
        if store is not None and self._group is not None:
            name = self._group.group
            if pin is not None:
                store[name] = pin
            elif old is not None and store.get(name) == old:  # not a newer one of another engine
                del store[name]

    def emit(self, kind: str, *, code: int = 0, description: str = "", pin_id: str | None = None) -> None:
        """Log a :class:`ConsumerEvent` and hand it to the application's ``on_event`` thread."""
        event = ConsumerEvent(kind, self.stream, self.consumer, code, description, pin_id)
        log_event(event)
        if self.events is not None:
            self.events.put(event)

    def _done(self) -> None:
        """Nothing more happens to this engine: its event thread ends after what it was handed."""
        if self.events is not None:
            self.events.close()

    def _on_consumer_deleted(self, headers: dict[str, str], description: str) -> None:
        if self.queue.state is not State.CLOSED:  # (each waiting request gets a 409: report one)
            self.emit("consumer_deleted", code=409, description=description)
        self.mode.on_consumer_gone(
            ConsumerDeletedError(f"consumer {self.stream}/{self.consumer} was deleted", 409)
        )

    def _on_server_shutdown(self, headers: dict[str, str], description: str) -> None:
        # The request died with the server. A reconnect re-pulls (or ends a fetch);
        # a connection closed for good ends everything with ConnectionClosedError.
        self.emit("status", code=409, description=description)
        self.queue.forget_outstanding()

    def _on_leadership_change(self, headers: dict[str, str], description: str) -> None:
        self.emit("leadership_change", code=409, description=description)
        self.mode.on_leadership_change()

    def _on_bad_request(self, headers: dict[str, str], description: str) -> None:
        self.fail(JetStreamAPIError(f"bad pull request: {description}", code=400))

    def _on_no_responders_status(self, headers: dict[str, str], description: str) -> None:
        self.loop_thread.loop.create_task(self._on_no_responders())

    async def _on_no_responders(self) -> None:
        """503: nobody answered the pull. A missing consumer is terminal; JetStream away is not."""
        try:
            await self._link.api_request(self._js_prefix, f"CONSUMER.INFO.{self.stream}.{self.consumer}")
        except (ConsumerNotFoundError, JetStreamAPIError) as exc:
            if isinstance(exc, ConsumerNotFoundError) or exc.code == 404:
                if self.queue.state is not State.CLOSED:
                    self.emit("consumer_deleted", code=404, description="no responders; consumer not found")
                self.mode.on_consumer_gone(
                    ConsumerNotFoundError(f"consumer {self.stream}/{self.consumer} does not exist", 404)
                )
                return
        except Error:
            pass
        self.mode.on_no_responders()

    # ---------------------------------------------------------------- ending

    def request_done(self) -> None:
        """One-shot: the single request is complete; nothing more will arrive on the inbox."""
        if self._stopping:
            return
        self._stopping = True
        self.loop_thread.loop.create_task(self._finish_one_shot())

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
        self._release_held()
        self._link.unregister(self)
        self._done()

    def fail(self, exc: BaseException) -> None:
        """End the queue with the terminal error *exc* (logged; what was buffered is NAKed)."""
        log.warning("natspull: %s/%s: %s", self.stream, self.consumer, exc)
        self._flush_burst()
        self.queue.fail(exc)

    def _nak_all(self, msgs: list[Msg]) -> None:
        """Return messages the application will never see, so the server redelivers them now.

        Any thread, including a signal handler that interrupted a thread inside
        ``Msg.ack()``: the NAKs are sent from the loop thread, so this takes no lock. Messages
        that cannot be acked through this engine (``acks`` None) have nothing to give back.
        """
        if self.acks is None:
            return
        if self.loop_thread.in_loop_thread():
            self._give_back(msgs)
        else:
            self.loop_thread.call_soon(self._give_back, msgs)

    def _give_back(self, msgs: list[Msg]) -> None:
        """Loop thread: NAK *msgs* now, or - while the inbox is subscribed - once it is not.

        The server redelivers a NAKed message to the oldest pull request waiting, which can be
        this inbox's own; one that reaches it while the inbox is being unsubscribed may be
        dropped by nats-py (its ``Subscription.drain()``, the portable mode's unsubscribe,
        writes its PING ahead of its UNSUB, so the PONG can come back before the server has
        seen the UNSUB), and then only ack_wait brings it back. Once the UNSUB is settled the
        server skips this inbox's requests: the NAKed message goes to another one at once.
        """
        if self._held is not None:
            self._held.extend(msgs)
        else:
            nak_unacked(msgs)

    def _release_held(self) -> None:
        """Loop thread: the inbox is unsubscribed (or the connection closing): NAK what waited."""
        held, self._held = self._held, None
        if held:
            nak_unacked(held)

    # ------------------------------------------------------ heartbeat, reconnect

    def _on_heartbeat_missed(self) -> None:
        if not self.queue.has_outstanding():
            self.pull()
            return
        assert self._heartbeat is not None
        interval = self._heartbeat.interval
        self.heartbeats_missed += 1
        self.emit("heartbeat_missed", description=f"no heartbeat for {interval:g} s")
        self.mode.on_heartbeat_missed(
            NoHeartbeatError(f"no heartbeat from {self.stream}/{self.consumer} for {interval:g} s")
        )

    def _cancel_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    def on_reconnected(self) -> None:
        """The client reconnected: outstanding pulls died with the old connection."""
        self.reconnects += 1
        self._touch()
        self.emit("reconnected")
        self.mode.on_reconnected()  # (a pinned engine pulls with its pin: the server says 423 if it is gone)

    def on_disconnected(self) -> None:
        """The connection dropped; nats-py reconnects (then :meth:`on_reconnected` pulls again)."""
        self.emit("disconnected")

    def abort(self, exc: BaseException) -> None:
        """The connection ends this engine (closing, or a permissions violation): fail its queue,
        NAKing what it buffered now (the connection may not outlive this loop iteration)."""
        self._release_held()
        self.queue.fail(exc)

    def on_closed(self) -> None:
        """The connection is closed for good."""
        self._cancel_heartbeat()
        self._sub = None
        self._held = None  # (nothing can be NAKed now: the server redelivers after ack_wait)
        if self.lease is not None:
            self.lease.close()
        self.queue.fail(ConnectionClosedError("the connection is closed"))
        self._link.unregister(self)
        self._done()

    def stats(self) -> dict[str, int]:
        """A snapshot for ``stats()``. Any thread (reads plain ints)."""
        return {
            "pulls_sent": self.pulls_sent,
            "heartbeats_missed": self.heartbeats_missed,
            "reconnects": self.reconnects,
            "pins_lost": self.pins_lost,
            "resets": self.resets,
            "acked": 0 if self.acks is None else self.acks.acked,
        }


_E = TypeVar("_E", bound=PullEngine)


def start_engine(link: Link, settings: PullSettings, build: Callable[[EventThread | None], _E]) -> _E:
    """``build(events)`` an engine, with an event thread for ``settings.on_event`` (None: none),
    and start it.

    Blocks on: the inbox subscription and the first pull (:data:`START_TIMEOUT`). Raises what
    building or starting raises, after closing the event thread. Any thread but the loop's.
    """
    events = EventThread(settings.on_event) if settings.on_event is not None else None
    try:
        engine = build(events)
        link.run(engine.start(), START_TIMEOUT, "start pulling")
    except BaseException:
        if events is not None:
            events.close()
        raise
    return engine


_Handler = Callable[[PullEngine, "dict[str, str]", str], None]

#: Status code -> handler. 409 is dispatched on its description (:data:`_CONFLICTS`); any
#: other code goes to the mode as unknown.
_STATUS: dict[str, _Handler] = {
    "100": PullEngine._on_heartbeat,
    "400": PullEngine._on_bad_request,
    "404": PullEngine._on_request_ended,
    "408": PullEngine._on_request_ended,
    "423": PullEngine._on_pin_lost,  # a priority group's pin moved on
    "503": PullEngine._on_no_responders_status,
}

#: 409 descriptions (lower-cased substrings, first match wins) -> handler.
_CONFLICTS: tuple[tuple[str, _Handler], ...] = (
    ("maxbytes", PullEngine._on_max_bytes),
    ("batch completed", PullEngine._on_request_ended),
    ("consumer deleted", PullEngine._on_consumer_deleted),
    ("server shutdown", PullEngine._on_server_shutdown),
    ("leadership change", PullEngine._on_leadership_change),
)
