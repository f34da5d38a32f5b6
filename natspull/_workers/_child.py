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
    ("fatal", exit_code, message)               it could not start or the consumption broke

and receives ``"drain"`` (finish started and buffered handlers, ack, exit 0) or ``"stop"``
(finish running handlers, NAK the buffered messages, exit 0). End of file on the pipe means the
supervisor is gone (even SIGKILLed: the kernel closes its end): the child stops, waits for
running handlers at most ``grace`` seconds, and exits - it never outlives the supervisor for
longer than that. SIGINT and SIGHUP are ignored (a terminal sends them to the whole process
group; the supervisor decides); SIGTERM sent to the child itself drains it.
"""

from __future__ import annotations

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
from ._target import load

__all__ = ["REPORT_INTERVAL", "child_main"]

log = logging.getLogger("natspull")

REPORT_INTERVAL = 0.5  # seconds between two ("stats", ...) reports


class _Counts:
    """Handler outcomes, counted on the worker threads and read by the main thread."""

    def __init__(self, handler: Callable[[Msg], Any]) -> None:
        self._handler = handler
        self._lock = threading.Lock()  # guards the three counts; leaf lock, never held across a call
        self.handled = 0
        self.failed = 0
        self.redelivered = 0  # handled messages delivered more than once (num_delivered > 1)

    def __call__(self, msg: Msg) -> None:
        try:
            self._handler(msg)
        except BaseException:
            with self._lock:
                self.failed += 1
            raise
        again = msg.metadata.num_delivered > 1
        with self._lock:
            self.handled += 1
            self.redelivered += again

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
) -> None:
    """The body of a worker process (spawned by the supervisor); exits with its status code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise SystemExit(
        _run(conn, spec, servers, stream, consumer, threads, consume_options, grace, connect_options, init)
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
) -> int:
    try:
        counts = _Counts(load(spec))
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
        ctx = consumer.consume(counts, workers=threads, **consume_options)
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
    return EXIT_OK
