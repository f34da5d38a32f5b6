"""One worker process: import the target, connect, ``consume()``, report counts, obey the supervisor.

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

from .._client import connect
from .._msg import Msg
from ..errors import ConnectError, ConsumerNotFoundError, Error, StreamNotFoundError
from ._codes import EXIT_CONNECT, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
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
    servers: str | list[str],
    stream: str,
    consumer: str,
    threads: int,
    consume_options: Mapping[str, Any],
    grace: float,
) -> None:
    """The body of a worker process (spawned by the supervisor); exits with its status code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise SystemExit(_run(conn, spec, servers, stream, consumer, threads, consume_options, grace))


def _run(
    conn: Connection,
    spec: str,
    servers: str | list[str],
    stream: str,
    consumer_name: str,
    threads: int,
    consume_options: Mapping[str, Any],
    grace: float,
) -> int:
    try:
        counts = _Counts(load(spec))
    except (ValueError, TypeError) as exc:
        return _fatal(conn, EXIT_USAGE, str(exc))
    try:
        client = connect(servers, name=f"natspull-worker-{os.getpid()}")
    except ConnectError as exc:
        return _fatal(conn, EXIT_CONNECT, str(exc))
    with client:
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
    # Leaving the client's block flushed every ack.
    with contextlib.suppress(OSError):
        conn.send(counts.report())
    return EXIT_OK
