"""``natspull server``: a local nats-server with JetStream in the foreground until a stop signal.

The stop signals only set an event that the main thread polls, together with the server's
liveness, so the server is always stopped and its temporary store dir removed on the way out.
The server itself is a :class:`natspull.testing.NatsServer`. Main thread.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from ._common import EXIT_OK, CliError, start_server, stop_signals

__all__ = ["cmd_server"]


def cmd_server(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    try:
        server = start_server(args.port, args.store_dir)
        try:
            temporary = "" if args.store_dir else " (temporary, removed on exit)"
            print(f"nats-server with JetStream listening on {server.url}")
            print(f"  monitoring  {server.monitor_url}")
            print(f"  store dir   {server.store_dir}{temporary}")
            print(f"  log         {server.log_path}")
            print("Ctrl-C or SIGTERM stops it.", flush=True)
            while not stop.wait(0.2):
                if not server.running:
                    raise CliError(f"nats-server exited unexpectedly; see {server.log_path}")
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("nats-server stopped", flush=True)
    return EXIT_OK
