"""What the commands share: exit codes, the expected-failure exception, signals, connecting, a server.

:class:`CliError` carries a one-line message and an exit code up to :func:`natspull.cli.main`.
The signal helpers implement the policy described in :mod:`natspull.cli` (SIGHUP like SIGTERM
unless ignored; SIGTERM and SIGHUP raise KeyboardInterrupt outside a drain window); main thread
only. :func:`connect` and :func:`start_server` wrap the public API with the CLI's client name
and error messages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import natspull
from natspull._connect_options import selected_context
from natspull._redact import redact

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
    "connect_options",
    "server_urls",
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
EXIT_CONNECT = 4  # cannot connect, or the server refused the login (authorization, TLS)
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: a one-line message for stderr and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: the cleanup this starts (drain, delete, stop the server) must not be interrupted by
    # the next SIGTERM/SIGHUP - a closing terminal sends SIGHUP to the session leader and again
    # to its foreground group, and the second one escaped the cleanup as a KeyboardInterrupt.
    for sig in stop_signals():
        if sig != signal.SIGINT:
            signal.signal(sig, signal.SIG_IGN)
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

    The first one only: the later ones are ignored from then on, up to the process's exit, so
    that they cannot interrupt the cleanup (or turn exit code 130 into a death by signal).
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
            if signal.getsignal(sig) is not signal.SIG_IGN:  # interrupted: still ignored up to the exit
                signal.signal(sig, handler)


def silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def server_urls(text: str) -> list[str]:
    """``URL[,URL...]`` checked here: nats-py fails badly on a malformed port. Raises ValueError."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise ValueError("expected a server URL such as nats://127.0.0.1:4222")
    for url in urls:
        try:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            parts.port  # noqa: B018  # raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"invalid server URL {redact(url)!r}") from None
        if not parts.hostname:
            raise ValueError(f"invalid server URL {redact(url)!r}: no host")
    return urls


#: Connection flags (their ``dest``), the variable the ``nats`` CLI reads for each, and the
#: connect() keyword it sets. Precedence: flag, environment, the named context (--context,
#: $NATS_CONTEXT), the selected context (nats/context.txt), connect()'s default.
CONNECTION_ENV = {
    "server": ("NATS_URL", "servers"),
    "context": ("NATS_CONTEXT", "context"),
    "user": ("NATS_USER", "user"),
    "password": ("NATS_PASSWORD", "password"),
    "token": ("NATS_TOKEN", "token"),
    "creds": ("NATS_CREDS", "creds"),
    "nkey": ("NATS_NKEY", "nkey"),
    "tlscert": ("NATS_CERT", "tls_cert"),
    "tlskey": ("NATS_KEY", "tls_key"),
    "tlsca": ("NATS_CA", "tls_ca"),
}


def connect_options(args: argparse.Namespace) -> tuple[list[str] | None, dict[str, Any]]:
    """The servers (None: the context's, else the default) and connect() keywords of a command:
    its connection flags, else the environment, over the named or selected context.

    Raises ValueError for a malformed $NATS_URL. Main thread (reads the environment).
    """
    options: dict[str, Any] = {}
    servers: list[str] | None = None
    for dest, (variable, keyword) in CONNECTION_ENV.items():
        value: Any = getattr(args, dest, None)
        if value is None:
            value = os.environ.get(variable) or None
            if value is not None and dest == "server":
                value = server_urls(value)
        if value is None:
            continue
        if dest == "server":
            servers = value
        else:
            options[keyword] = value
    if "context" not in options:
        selected = selected_context()
        if selected is not None:  # by name: worker processes read the same one
            options["context"] = selected
    if getattr(args, "tlsfirst", False):
        options["tls_handshake_first"] = True
    return servers, options


def connect(args: argparse.Namespace) -> natspull.Client:
    """Connect as the command's connection flags, the environment and the contexts say.

    Blocks until connected (at most 2 s); raises natspull.ConnectError (refused logins
    included), ValueError for a bad option or context.
    """
    servers, options = connect_options(args)
    return natspull.connect(servers, name="natspull-cli", **options)


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
