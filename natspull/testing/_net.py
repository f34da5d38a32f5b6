"""Loopback plumbing shared by the test servers: ports, and the probes that say a server is ready.

Picks free TCP ports on ``127.0.0.1``, tells a port clash (another process took a picked port
between pick and bind) from any other start-up failure, and reads a monitoring endpoint (HTTP,
JSON). Starts no process and keeps no state; any thread.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

__all__ = ["HOST", "POLL_INTERVAL", "PORT_ATTEMPTS", "free_ports", "http_json", "port_taken"]

HOST = "127.0.0.1"
POLL_INTERVAL = 0.01
# Attempts with freshly picked ports when another process grabbed one between pick and bind.
PORT_ATTEMPTS = 4


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on loopback a moment ago."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_taken(log: str) -> bool:
    """Whether a start-up log shows a listener failing on a port that is already in use."""
    return "address already in use" in log.lower() or "only one usage of each socket" in log.lower()


def http_json(url: str) -> tuple[int, dict[str, Any]]:
    """GET ``url`` and return (status, decoded JSON body); HTTP errors still return their body.

    Raises:
        OSError: the endpoint could not be reached (``urllib.error.URLError`` is a subclass).
    """
    try:
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, {"error": body.decode(errors="replace")}
