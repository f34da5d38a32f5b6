"""The supervisor's own connection: the consumer's lag, early NAKs, poison terminations.

One thread, ``natspull-supervisor-client``, owns a natspull :class:`~natspull.Client` (the public
API, like a worker process) and does everything that waits on the network, so the supervisor's
main loop never does:

- every ``LAG_INTERVAL`` seconds, ``Consumer.info()``: ``num_pending`` and ``num_ack_pending``
  for ``/metrics`` and the status table (:meth:`SupervisorClient.lag`). A scrape sees values at
  most ``LAG_MAX_AGE`` old, or none: while the server does not answer, the two gauges are absent
  rather than stale. (The lag is read here, not reported by a child: it is one number for the
  consumer, a child may be restarting or disconnected, and N children would ask N times.)
- ``nak(reply)``: publishes ``-NAK`` to the ack subject a dead (or stuck) process reported, so
  the message is redelivered now instead of after ``ack_wait``;
- ``terminate(seq, reply, reason)``: with a dead-letter subject, fetches the message by stream
  sequence (a ``STREAM.MSG.GET`` API request: the children never ship message data) and
  publishes it there with ``Natspull-*`` headers naming its stream, sequence, consumer and the
  reason, then publishes ``+TERM <reason>`` to its ack subject.

The thread connects when started and again after a failure, once a second; jobs wait in a
bounded queue meanwhile. :meth:`close` does what is queued (at most ``CLOSE_TIMEOUT`` s),
closes the client and joins the thread. The main thread calls ``nak``/``terminate``/``close``;
``lag`` is read from any thread.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._client import Client, connect
from ..errors import Error

__all__ = ["DEAD_LETTER_HEADERS", "Lag", "SupervisorClient"]

log = logging.getLogger("natspull")

LAG_INTERVAL = 0.5  # seconds between two consumer info requests
LAG_MAX_AGE = 1.0  # an older reading is not shown on /metrics (the server is away, or slow)
RECONNECT_WAIT = 1.0
CLOSE_TIMEOUT = 5.0
MAX_JOBS = 100_000  # NAKs and terminations waiting for a connection (oldest dropped first)

#: the headers of a message published to the dead-letter subject (besides its own headers)
DEAD_LETTER_HEADERS = (
    "Natspull-Stream",
    "Natspull-Sequence",
    "Natspull-Consumer",
    "Natspull-Subject",
    "Natspull-Reason",
)


@dataclass(frozen=True)
class Lag:
    """The consumer's backlog at ``at`` (time.monotonic())."""

    pending: int  # num_pending: messages not yet delivered
    ack_pending: int  # num_ack_pending: delivered, not yet acked
    at: float


def _headers(block: bytes) -> dict[str, str]:
    """The headers of a ``NATS/1.0`` header block (as STREAM.MSG.GET returns it), first value each."""
    found: dict[str, str] = {}
    for line in block.decode(errors="replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip() and name.strip() not in found:
            found[name.strip()] = value.strip()
    return found


class SupervisorClient:
    def __init__(
        self,
        servers: str | list[str] | None,
        stream: str,
        consumer: str,
        dead_letter: str | None,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._servers = servers
        # what the worker processes connect with too (credentials, TLS, ...); name is ours
        self._connect_options = {**(connect_options or {}), "name": "natspull-supervisor"}
        self._stream = stream
        self._consumer = consumer
        self._dead_letter = dead_letter
        # guards _jobs, _closing and _lag; leaf lock, never held across a network call
        self._cond = threading.Condition(threading.Lock())
        self._jobs: collections.deque[Callable[[Client], None]] = collections.deque(maxlen=MAX_JOBS)
        self._closing = False
        self._lag: Lag | None = None
        self._thread = threading.Thread(target=self._main, name="natspull-supervisor-client", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ main thread

    def lag(self) -> Lag | None:
        """The last consumer info read (None before the first). Any thread."""
        with self._cond:
            return self._lag

    def nak(self, reply: str) -> None:
        """Publish ``-NAK`` to *reply* (queued; never blocks)."""
        self._put(lambda client: client.publish(reply, b"-NAK"))

    def terminate(self, seq: int, reply: str, reason: str) -> None:
        """Dead-letter (when configured) and ``+TERM`` the message *seq* (queued; never blocks)."""
        self._put(lambda client: self._terminate(client, seq, reply, reason))

    def _put(self, job: Callable[[Client], None]) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()

    def close(self) -> None:
        """Do what is queued (at most CLOSE_TIMEOUT s), close the connection, join the thread.

        This method is idempotent. Additional calls have no effect."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(CLOSE_TIMEOUT + 2.0)

    # ------------------------------------------------------------------ its thread

    def _main(self) -> None:
        client: Client | None = None
        next_lag = 0.0
        close_by: float | None = None
        try:
            while True:
                if client is None:
                    client = self._connect()  # None after a failure (and a wait) or when closing
                with self._cond:
                    if self._closing:
                        if close_by is None:
                            close_by = time.monotonic() + CLOSE_TIMEOUT
                        if client is None or not self._jobs or time.monotonic() >= close_by:
                            if self._jobs:
                                log.warning(
                                    "natspull: supervisor: %d NAKs or terminations not sent", len(self._jobs)
                                )
                            return
                    elif client is not None and not self._jobs:
                        self._cond.wait(max(next_lag - time.monotonic(), 0.0))
                    job = self._jobs.popleft() if self._jobs and client is not None else None
                    closing = self._closing
                if client is None:
                    continue
                if job is not None:
                    try:
                        job(client)
                    except Error as exc:
                        log.warning("natspull: supervisor: %s", exc)
                elif not closing and time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + LAG_INTERVAL
                    self._read_lag(client)
        finally:
            if client is not None:
                with contextlib.suppress(Error):
                    client.close(timeout=CLOSE_TIMEOUT)

    def _connect(self) -> Client | None:
        with self._cond:
            if self._closing:
                return None
        try:
            return connect(self._servers, **self._connect_options)
        except Error as exc:
            log.warning("natspull: supervisor: cannot connect (retrying in %g s): %s", RECONNECT_WAIT, exc)
            with self._cond:
                if not self._closing:
                    self._cond.wait(RECONNECT_WAIT)
            return None

    def _read_lag(self, client: Client) -> None:
        try:
            info = client.jetstream().consumer_info(self._stream, self._consumer)
        except Error as exc:
            log.debug("natspull: supervisor: consumer info: %s", exc)
            return
        lag = Lag(int(info.num_pending or 0), int(info.num_ack_pending or 0), time.monotonic())
        with self._cond:
            self._lag = lag

    def _terminate(self, client: Client, seq: int, reply: str, reason: str) -> None:
        if self._dead_letter is not None:
            try:
                self._publish_dead_letter(client, seq, reason)
            except (Error, ValueError, KeyError) as exc:
                log.error("natspull: poison message %d not published to %s: %s", seq, self._dead_letter, exc)
        if reply:
            client.publish(reply, b"+TERM " + reason.encode())
            client.flush(timeout=5.0)
        else:
            log.error("natspull: poison message %d: its ack subject is unknown, not terminated", seq)

    def _publish_dead_letter(self, client: Client, seq: int, reason: str) -> None:
        assert self._dead_letter is not None
        js = client.jetstream()
        request = json.dumps({"seq": seq}).encode()
        reply = client.request(f"{js.api_prefix}.STREAM.MSG.GET.{self._stream}", request, timeout=5.0)
        answer: dict[str, Any] = json.loads(reply.data)
        if "error" in answer:
            raise KeyError(f"stream {self._stream} message {seq}: {answer['error'].get('description')}")
        message = answer["message"]
        headers = _headers(base64.b64decode(message["hdrs"])) if message.get("hdrs") else {}
        values = (self._stream, str(seq), self._consumer, message.get("subject", ""), reason)
        headers.update(zip(DEAD_LETTER_HEADERS, values))
        data = base64.b64decode(message.get("data") or b"")
        client.publish(self._dead_letter, data, headers)
        client.flush(timeout=5.0)
