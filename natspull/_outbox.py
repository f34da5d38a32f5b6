"""Fire-and-forget publishes (acks and core publishes) from any thread, coalesced.

``Msg.ack()`` and ``Client.publish()`` must return without waiting for the
loop, and thousands of them per second from many threads must not cost one
cross-thread wake-up each. They append to a deque; the first append after a
flush schedules one flush callback on the loop, which writes everything that
has accumulated by then to the socket. One wake-up and one write per burst.

Ordering: entries leave in the order they were appended.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.aio.transport import TcpTransport
from nats.protocol.command import pub_cmd

from ._loop import LoopThread
from .errors import ConnectionClosedError

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

__all__ = ["Outbox"]

log = logging.getLogger("natspull")

_Entry = tuple[str, bytes, str, "dict[str, str] | None"]


class Outbox:
    """A multi-producer queue of publishes drained by the loop thread."""

    def __init__(self, loop_thread: LoopThread, nc: NatsClient) -> None:
        self._loop_thread = loop_thread
        self._nc = nc
        # deque append/popleft are atomic; the lock only guards _scheduled and
        # _closed, and is never held while calling into the loop or nats-py.
        self._entries: deque[_Entry] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        # Set only in a child process after os.fork(), with _closed: raises the ForkedError.
        self._check_fork: Callable[[], None] | None = None

    def put(
        self, subject: str, payload: bytes, reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Accept one publish; returns at once. Any thread.

        Raises ConnectionClosedError once the client is closing: an accepted
        entry is always flushed, a refused one is reported, none is dropped;
        ForkedError in a child process after os.fork().
        """
        if self._closed:
            if self._check_fork is not None:
                self._check_fork()
            raise ConnectionClosedError("the connection is closed")
        self._entries.append((subject, payload, reply, headers))
        # Benign race: _flush clears _scheduled *before* it takes entries, so an
        # append that reads a stale True is taken by that flush.
        if not self._scheduled:
            with self._lock:
                if self._scheduled:
                    return
                self._scheduled = True
            self._loop_thread.call_soon(self._start_flush)

    def close(self) -> None:
        """Refuse new entries (accepted ones are still flushed by :meth:`flush`). Any thread."""
        with self._lock:
            self._closed = True

    def after_fork_in_child(self, check_fork: Callable[[], None]) -> None:
        """Child process after os.fork(), single-threaded: every put() calls *check_fork*, which raises.

        The lock is replaced (the loop thread or an acking thread may have held
        it at the fork); the entries are the parent's to send, not the child's.
        """
        self._lock = threading.Lock()
        self._entries.clear()
        self._check_fork = check_fork
        self._closed = True

    def _start_flush(self) -> None:
        """Loop thread: the callback that the first put() after a flush scheduled."""
        if not self._write_now():
            self._loop_thread.loop.create_task(self.flush())

    def _write_now(self) -> bool:
        """Write the accepted plain entries straight to the socket; False when flush() must go on.

        Loop thread only. A plain callback, no task: an ack burst costs one
        ``transport.write``. It writes only when nats-py has nothing queued
        ahead (its ``_pending`` is empty and it is connected over TCP), so the order of
        everything on the connection is kept: a pull request never overtakes
        the SUB of its inbox, an UNSUB never overtakes a pull. Otherwise, or at
        an entry with headers, it stops and :meth:`flush` takes the rest
        through nats-py's own write buffer.
        """
        with self._lock:
            self._scheduled = False
        nc = self._nc
        entries = self._entries
        if not entries:
            return True
        flusher, transport = nc._flusher_task, nc._transport
        if nc._pending or not nc.is_connected or flusher is None or flusher.done():
            return False
        # (a WebSocket transport only queues in write(); it sends when nats-py's flusher drains it)
        if not isinstance(transport, TcpTransport):
            return False
        write: Callable[[bytes], None] = transport.write  # TcpTransport.write has no annotations
        commands = []
        done = True
        while entries:
            entry = entries.popleft()
            if entry[3] is not None:  # headers: nats-py formats it (rare)
                entries.appendleft(entry)  # the loop thread is the only consumer
                done = False
                break
            commands.append(pub_cmd(entry[0], entry[2], entry[1]))
        if commands:
            write(b"".join(commands))
        # (an entry appended after the loop scheduled its own flush, see put())
        return done

    async def flush(self) -> None:
        """Write every accepted entry, then kick nats-py's flusher. Loop thread only.

        Entries without headers (acks, pull requests: nearly all of them) are
        formatted as ``PUB`` commands and written as one buffer: one call per
        burst instead of a ``publish()`` coroutine per entry, which was the
        largest natspull cost on the loop thread (see benchmarks/README.md).
        """
        if self._write_now():
            return
        entries = self._entries
        nc = self._nc
        if nc.is_closed:
            log.warning("natspull: connection closed: %d publishes/acks not sent", len(entries))
            entries.clear()
            return
        commands = []
        while entries:
            subject, payload, reply, headers = entries.popleft()
            if headers is None:
                commands.append(pub_cmd(subject, reply, payload))
                continue
            try:
                if commands:  # keep the order
                    await nc._send_command(b"".join(commands))
                    commands = []
                await nc.publish(subject, payload, reply=reply, headers=headers)
            except Exception as exc:
                log.warning("natspull: could not publish to %s: %s", subject, exc)
        if commands:
            await nc._send_command(b"".join(commands))
        await nc._flush_pending()
