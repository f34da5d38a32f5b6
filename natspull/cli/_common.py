"""What the commands share: exit codes, the expected-failure exception, signals, connecting, a server.

:class:`CliError` carries a one-line message and an exit code up to :func:`natspull.cli.main`.
The signal helpers implement the policy described in :mod:`natspull.cli` (SIGHUP like SIGTERM
unless ignored; SIGTERM and SIGHUP raise KeyboardInterrupt outside a drain window); main thread
only. :func:`connect` and :func:`start_server` wrap the public API with the CLI's client name
and error messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import natspull

if TYPE_CHECKING:
    from natspull.testing import NatsServer

__all__ = [
    "EXIT_CONNECT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "connect",
    "silence_stdout",
    "start_server",
    "stop_signals",
    "stop_signals_as_interrupt",
]

# Documented in the --help epilog (natspull.cli._args).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONNECT = 4
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: a one-line message for stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that end a command: SIGINT, SIGTERM and SIGHUP (a closed terminal).

    SIGHUP only when it is not ignored: ``nohup natspull server`` must survive the terminal.
    Main thread only (reads the current handler).
    """
    hangup = getattr(signal, "SIGHUP", None)  # not on Windows
    if hangup is None or signal.getsignal(hangup) is signal.SIG_IGN:
        return (signal.SIGINT, signal.SIGTERM)
    return (signal.SIGINT, signal.SIGTERM, hangup)


@contextlib.contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so they end a command like Ctrl-C.

    Main thread only; elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in stop_signals() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def connect(servers: list[str]) -> natspull.Client:
    """Blocks until connected (at most 2 s); raises natspull.ConnectError."""
    return natspull.connect(servers, name="natspull-cli")


def start_server(port: int | None = None, store_dir: str | None = None) -> NatsServer:
    """Start a local nats-server with JetStream; raise CliError when it cannot start.

    The caller must ``stop()`` the returned server; on failure nothing is left behind.
    """
    from natspull.testing import NatsServer

    server = NatsServer(port=port, store_dir=store_dir)
    try:
        server.start()
    except FileNotFoundError as exc:
        server.stop()
        raise CliError(str(exc)) from None
    except (RuntimeError, TimeoutError) as exc:
        server.stop()
        text = str(exc)
        if "address already in use" in text.lower():
            raise CliError(f"cannot start nats-server: port {server.port} is already in use") from None
        raise CliError(f"cannot start nats-server: {text}") from None
    except BaseException:
        server.stop()
        raise
    return server
