"""``--http [HOST:]PORT``: /livez, /readyz and /metrics, served by the supervisor.

A ``ThreadingHTTPServer`` on a thread named ``natspull-http`` (one more thread per request,
daemonic, as the standard library does). The handlers never touch the supervisor's state: they
read the latest :class:`~._metrics.Snapshot` the main thread published (:class:`HttpServer.publish`)
and the lag the supervisor's client read.

- ``GET /livez``: 200 while the supervisor runs and is not ending on a crash loop (or another
  error); 503 otherwise.
- ``GET /readyz``: 200 while every process is connected and consuming; 503 while one starts, is
  disconnected or restarting, and while the run drains.
- ``GET /metrics``: the Prometheus text format; 501 without ``prometheus_client``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._metrics import MetricsUnavailable, Snapshot, render
from ._supervisor_client import Lag

__all__ = ["HttpServer", "parse_address"]

log = logging.getLogger("natspull")


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for an IPv6 host) -> (host, port); no host: every interface.

    Raises ValueError naming the value."""
    if not isinstance(text, str):
        raise TypeError(f"http must be a '[HOST:]PORT' string, got {type(text).__name__}")
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or int(port) > 65535 or (sep and ":" in host and not text.startswith("[")):
        raise ValueError(f"http must look like '[HOST:]PORT' (e.g. ':9464', '127.0.0.1:0'), got {text!r}")
    return host, int(port)


class HttpServer:
    """Serves the endpoints until :meth:`close`. Main thread: ``__init__``, ``publish``, ``close``."""

    def __init__(
        self, address: tuple[str, int], stream: str, consumer: str, lag: Callable[[], Lag | None]
    ) -> None:
        self._snapshot = Snapshot()  # replaced whole by publish(); read by request threads
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                snapshot = server._snapshot
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    self._answer(200 if snapshot.live else 503, b"ok\n" if snapshot.live else b"not live\n")
                elif path == "/readyz":
                    ready = snapshot.live and snapshot.ready
                    self._answer(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
                elif path == "/metrics":
                    try:
                        body, content_type = render(snapshot, lag(), stream, consumer)
                    except MetricsUnavailable as exc:
                        self._answer(501, f"{exc}\n".encode())
                    else:
                        self._answer(200, body, content_type)
                else:
                    self._answer(404, b"not found: try /livez, /readyz or /metrics\n")

            def _answer(
                self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("natspull: http: " + format, *args)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            if ":" in address[0]:
                import socket

                address_family = socket.AF_INET6

        self._server = Server(address, Handler)  # raises OSError (address in use, ...)
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="natspull-http", daemon=True)
        self._thread.start()

    def publish(self, snapshot: Snapshot) -> None:
        """Make *snapshot* what the endpoints answer from (one reference swap)."""
        self._snapshot = snapshot

    def close(self) -> None:
        """Stop serving, close the socket, join the thread. Blocks on the thread's next poll
        (0.5 s at most). This method is idempotent. Additional calls have no effect."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
