"""Server URLs made safe to print: the one place that strips credentials from a URL.

A NATS server URL may carry user-info (``nats://user:password@host`` or ``nats://token@host``).
:func:`redact` replaces it with ``***`` wherever natspull shows a URL: ``repr(Client)``,
:class:`natspull.ConnectError` messages and the command line's output. No dependencies: usable
from any module, any thread.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redact"]


def redact(url: str) -> str:
    """``url`` with its user-info replaced by ``***``; a URL without user-info is returned as is.

    A URL without a scheme is read as ``nats://`` (as nats-py does), so ``user:pw@host:4222`` is
    redacted too and comes back as ``nats://***@host:4222``. The host and port are kept as
    written (IPv6 brackets, case, even an invalid port): never raises for a string.
    """
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
