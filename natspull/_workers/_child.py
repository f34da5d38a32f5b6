"""One worker process: import the target, connect, run the init function, ``consume()``, report
counts, obey the supervisor.

The connected client is :func:`natspull.worker_client` while the process runs (``_current``).
An init function that raises ends the process with ("fatal", EXIT_INIT, ...), which the
supervisor never restarts.

The supervisor starts :func:`child_main` in a *spawned* process (a fresh interpreter: no
inherited loop threads, locks or sockets) with one end of a duplex pipe. Over it the child sends
(main thread only, so one writer)::

    ("ready", pid)                              consuming
    ("stats", handled, failed, redelivered)     every REPORT_INTERVAL seconds and at the end
    ("health", connected, terminated, buckets, duration_sum)    right after each "stats"
    ("fatal", exit_code, message)               it could not start or the consumption broke

and receives ``"drain"`` (finish started and buffered handlers, ack, exit 0) or ``"stop"``
(finish running handlers, NAK the buffered messages, exit 0). End of file on the pipe means the
supervisor is gone (even SIGKILLed: the kernel closes its end): the child stops, waits for
running handlers at most ``grace`` seconds, and exits - it never outlives the supervisor for
longer than that. SIGINT and SIGHUP are ignored (a terminal sends them to the whole process
group; the supervisor decides); SIGTERM sent to the child itself drains it.

The messages in handlers do not go over the pipe: each worker thread writes its current one to
the process's shared :class:`~._handlers.HandlerTable` and runs a message on the supervisor's
:class:`~._handlers.SuspectList` alone (:class:`~._handlers.Gate`).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from .._client import Client, connect
from .._msg import Msg
from ..errors import ConnectError, ConsumerNotFoundError, Error, StreamNotFoundError
from ._codes import EXIT_CONNECT, EXIT_ERROR, EXIT_INIT, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from ._current import set_client
from ._handlers import Gate, HandlerTable, SuspectList
from ._target import key_function, load

__all__ = ["DURATION_BUCKETS", "REPORT_INTERVAL", "child_main"]

log = logging.getLogger("natspull")

REPORT_INTERVAL = 0.5  # seconds between two ("stats", ...) reports
#: upper bounds (seconds) of the handler duration histogram's buckets (prometheus_client's defaults)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class _Counts:
    """Handler outcomes, counted on the worker threads and read by the main thread."""

    def __init__(
        self,
        handler: Callable[[Any], Any],  # a Msg, or a list of them with consume(batch=)
        table: HandlerTable | None = None,
        suspects: SuspectList | None = None,
    ) -> None:
        self._handler = handler
        self.terminated = 0  # the consume context's count once it ended (main thread)
        self._table = table
        self._suspects = suspects
        self._gate = Gate()
        # guards the counts and the histogram; leaf lock, never held across a call
        self._lock = threading.Lock()
        self.handled = 0
        self.failed = 0
        self.redelivered = 0  # handled messages delivered more than once (num_delivered > 1)
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0

    def __call__(self, msg: Msg | list[Msg]) -> None:
        first = msg[0] if isinstance(msg, list) else msg  # consume(batch=): a list
        if self._table is None:
            self._call(msg)
            return
        # With batch=, the handler table and the poison tracking know the first message of a call.
        seq = first.metadata.sequence.stream
        alone = self._suspects is not None and self._suspects.contains(seq)
        self._gate.enter(alone)
        try:
            row = self._table.begin(seq, first.reply)
            try:
                self._call(msg)
            finally:
                self._table.end(row)
        finally:
            self._gate.leave(alone)

    def _call(self, msg: Msg | list[Msg]) -> None:
        msgs = msg if isinstance(msg, list) else [msg]
        start = time.perf_counter()
        try:
            self._handler(msg)
        except BaseException:
            self._timed(time.perf_counter() - start)
            with self._lock:
                self.failed += len(msgs)
            raise
        self._timed(time.perf_counter() - start)
        again = sum(m.metadata.num_delivered > 1 for m in msgs)
        with self._lock:
            self.handled += len(msgs)
            self.redelivered += again

    def _timed(self, seconds: float) -> None:
        index = bisect.bisect_left(DURATION_BUCKETS, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._duration_sum += seconds

    def health(self, connected: bool, terminated: int) -> tuple[str, bool, int, tuple[int, ...], float]:
        with self._lock:
            return ("health", connected, terminated, tuple(self._buckets), self._duration_sum)

    def report(self) -> tuple[str, int, int, int]:
        with self._lock:
            return ("stats", self.handled, self.failed, self.redelivered)


def _fatal(conn: Connection, code: int, message: str) -> int:
    with contextlib.suppress(OSError):  # the supervisor is gone
        conn.send(("fatal", code, message))
    return code


def child_main(
    conn: Connection,
    spec: str,
    servers: str | list[str] | None,
    stream: str,
    consumer: str,
    threads: int,
    consume_options: Mapping[str, Any],
    grace: float,
    connect_options: Mapping[str, Any],
    init: str | None,
    table: HandlerTable | None = None,
    suspects: SuspectList | None = None,
) -> None:
    """The body of a worker process (spawned by the supervisor); exits with its status code.

    *table* is where its worker threads write the messages in their handlers, *suspects* the
    stream sequences to run alone (both shared with the supervisor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise SystemExit(
        _run(
            conn,
            spec,
            servers,
            stream,
            consumer,
            threads,
            consume_options,
            grace,
            connect_options,
            init,
            table,
            suspects,
        )
    )


def _run(
    conn: Connection,
    spec: str,
    servers: str | list[str] | None,
    stream: str,
    consumer_name: str,
    threads: int,
    consume_options: Mapping[str, Any],
    grace: float,
    connect_options: Mapping[str, Any],
    init: str | None,
    table: HandlerTable | None = None,
    suspects: SuspectList | None = None,
) -> int:
    try:
        counts = _Counts(load(spec), table, suspects)
        init_function = None if init is None else (init, load(init))
    except (ValueError, TypeError) as exc:
        return _fatal(conn, EXIT_USAGE, str(exc))
    try:
        client = connect(servers, **{"name": f"natspull-worker-{os.getpid()}", **connect_options})
    except ConnectError as exc:
        return _fatal(conn, EXIT_CONNECT, str(exc))
    except (ValueError, TypeError) as exc:  # a context or a file that changed since the check
        return _fatal(conn, EXIT_USAGE, f"connect options: {exc}")
    set_client(client)
    try:
        with client:
            code = _consume(
                conn, client, counts, stream, consumer_name, threads, consume_options, grace, init_function
            )
    finally:
        set_client(None)
    if code == EXIT_OK:  # leaving the client's block flushed every ack: the final counts
        with contextlib.suppress(OSError):
            conn.send(counts.report())
            conn.send(counts.health(False, counts.terminated))
    return code


def _consume(
    conn: Connection,
    client: Client,
    counts: _Counts,
    stream: str,
    consumer_name: str,
    threads: int,
    consume_options: Mapping[str, Any],
    grace: float,
    init: tuple[str, Callable[..., Any]] | None,
) -> int:
    """Run the init function, then consume until told to stop; the caller closes the client."""
    if init is not None:
        spec, function = init
        try:
            function(client)
        except Exception as exc:
            return _fatal(conn, EXIT_INIT, f"init {spec} raised {type(exc).__name__}: {exc}")
    try:
        consumer = client.jetstream().consumer(stream, consumer_name)
        options = dict(consume_options)
        if isinstance(options.get("key"), str):  # a key spec (natspull worker --key): built here
            options["key"] = key_function(options["key"])
        ctx = consumer.consume(counts, workers=threads, **options)
    except (StreamNotFoundError, ConsumerNotFoundError) as exc:
        return _fatal(conn, EXIT_NOT_FOUND, str(exc))
    except (ValueError, TypeError) as exc:  # bad consume options
        return _fatal(conn, EXIT_USAGE, f"consume options: {exc}")
    except Error as exc:
        return _fatal(conn, EXIT_ERROR, str(exc))

    def on_term(signum: int, frame: FrameType | None) -> None:
        ctx.drain()  # never blocks; safe in a signal handler

    signal.signal(signal.SIGTERM, on_term)
    orphaned = False
    try:
        conn.send(("ready", os.getpid()))
        while not ctx.wait(0):
            if conn.poll(REPORT_INTERVAL):
                try:
                    command = conn.recv()
                except (EOFError, OSError):
                    orphaned = True
                    break
                if command == "drain":
                    ctx.drain()
                elif command == "stop":
                    ctx.stop()
            conn.send(counts.report())
            conn.send(counts.health(client.is_connected, ctx.stats().terminated))
    except (EOFError, OSError):  # BrokenPipeError from send(): the supervisor is gone
        orphaned = True
    except Error as exc:  # what ended the consumption (ConsumerDeletedError, ...)
        return _fatal(conn, EXIT_ERROR, f"consumption ended: {exc}")
    if orphaned:
        log.warning("natspull: worker %d: the supervisor is gone; stopping", os.getpid())
        ctx.stop()
        deadline = time.monotonic() + grace
        with contextlib.suppress(Error):
            ctx.wait(max(deadline - time.monotonic(), 0))
        os._exit(EXIT_ERROR)  # a handler may still run: do not wait for it in the interpreter's exit
    counts.terminated = ctx.stats().terminated
    return EXIT_OK
