"""What the layers above the connection may use of it: two small ``Protocol`` types.

Pull engines, ``Msg``, ``JetStream`` and ``Consumer`` type against :class:`Link`, never
against ``Client`` or ``Connection`` (``_connection.py`` implements it). The connection in
turn sees its engines only as :class:`Engine`. So neither side imports the other, and the
core has no import cycle (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ._loop import LoopThread
from ._parser import Deliver
from ._replies import OnReply
from ._wire import Inbox, OnMsg, Reply

__all__ = ["Engine", "Link"]

T = TypeVar("T")


class Engine(Protocol):
    """A pull engine as the connection sees it (registered while it runs). Loop thread."""

    @property
    def subject(self) -> str:
        """The pull request subject (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``)."""

    @property
    def inbox(self) -> str:
        """The inbox the pulls' messages arrive on."""

    @property
    def stream(self) -> str:
        """The stream of the consumer it pulls from."""

    @property
    def consumer(self) -> str:
        """The name of the consumer it pulls from."""

    def nudge(self, group: str | None) -> None:
        """Pull now (after a resume, or an unpin of *group*): waiting requests are not woken."""

    def on_disconnected(self) -> None:
        """The connection dropped; nats-py is reconnecting."""

    def on_reconnected(self) -> None:
        """The connection is back: outstanding pulls died with the old one."""

    def on_closed(self) -> None:
        """The connection is closed for good."""

    def abort(self, exc: BaseException) -> None:
        """End the engine's queue with *exc* (what was buffered is NAKed)."""


class Link(Protocol):
    """One connection's services for the layers above it.

    "Any thread" methods never block for long; "loop" methods and coroutines run on the
    connection's loop thread (:attr:`loop_thread`).
    """

    @property
    def loop_thread(self) -> LoopThread:
        """The thread that owns nats-py (call_soon from anywhere, run from user threads)."""

    @property
    def is_connected(self) -> bool:
        """nats-py is connected (not reconnecting, not closed). Any thread."""

    @property
    def is_closed(self) -> bool:
        """nats-py is closed for good. Any thread."""

    def check_fork(self) -> None:
        """Raise ForkedError in a child process after os.fork() (the connection is the parent's)."""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str) -> T:
        """Run *coro* on the loop and wait, every error a natspull error. Any thread but the loop's."""

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO of the latest (re)connect (a copy): ``version``, ``server_id``, ... Any thread."""

    @property
    def max_payload(self) -> int:
        """The server's max_payload. Any thread."""

    def check_message(
        self, subject: str, data: bytes, headers: dict[str, str] | None, reply_bytes: int = 0
    ) -> tuple[bytes, dict[str, str] | None]:
        """Validate a message to publish (with a reply of *reply_bytes*) against the server's
        max_payload and max_control_line; returns the data and a copy of the headers. Any thread."""

    def check_line(self, what: str, subject: str, reply_bytes: int, size: int, header_bytes: int = 0) -> None:
        """Refuse (ValueError) a protocol line longer than the server's max_control_line. Any thread."""

    def inbox_bytes(self) -> int:
        """Length of an inbox from :meth:`new_inbox`. Any thread."""

    def request_reply_bytes(self) -> int:
        """Length of a request's reply subject. Any thread."""

    # ------------------------------------------------------ fire and forget

    def publish_nowait(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Queue a publish in the outbox (acks, pull requests). Any thread; never blocks."""

    def expect_reply(self, timeout: float, on_reply: OnReply) -> str:
        """A fresh reply subject whose answer (or natspull.TimeoutError after *timeout*, or
        ConnectionClosedError) goes to *on_reply* on the loop thread. Any thread but the loop's."""

    def forget_reply(self, subject: str) -> bool:
        """Drop the callback of *subject* (its publish was refused); False when already called."""

    def async_reply_bytes(self) -> int:
        """Length of a reply subject from :meth:`expect_reply`. Any thread."""

    def request_ack(self, subject: str, payload: bytes, timeout: float) -> None:
        """A request to an ack subject, waiting for the confirmation. Any thread but the loop's."""

    # ------------------------------------------------------------ loop side

    async def api_request(
        self,
        prefix: str,
        api: str,
        payload: bytes = b"",
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A JetStream API request (with *headers*); raises the matching JetStreamAPIError."""

    async def request(
        self, subject: str, payload: bytes, timeout: float, headers: dict[str, str] | None = None
    ) -> Reply:
        """A request; raises natspull.TimeoutError, PermissionError, a no-responders JetStreamAPIError."""

    async def ping(self, timeout: float) -> None:
        """A PING/PONG round trip, at most *timeout* seconds (natspull.TimeoutError)."""

    async def flush_outbox(self) -> None:
        """Write everything the outbox accepted so far."""

    def new_inbox(self) -> str:
        """A fresh inbox subject."""

    async def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Publish through nats-py now (in order with everything else it sends)."""

    async def subscribe_inbox(self, subject: str, on_msg: OnMsg, deliver: Deliver) -> Inbox:
        """A pull inbox: plain messages to *deliver*, the rest (status, headers) to *on_msg*."""

    def after_read(self, callback: Callable[[], None]) -> bool:
        """Run *callback* once the current socket read is parsed; False outside a read."""

    def register(self, engine: Engine) -> None:
        """Tell *engine* about reconnects, closes and permission errors from now on."""

    def unregister(self, engine: Engine) -> None:
        """Stop telling *engine* (idempotent)."""

    @property
    def engines(self) -> frozenset[Engine]:
        """The registered engines (a snapshot). Any thread."""
