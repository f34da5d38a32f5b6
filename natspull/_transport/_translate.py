"""Turn nats-py and asyncio exceptions into natspull errors at the API boundary."""

from __future__ import annotations

import asyncio
import builtins

import nats.errors
import nats.js.errors

from ..errors import (
    ConnectionClosedError,
    ConsumerNotFoundError,
    Error,
    JetStreamAPIError,
    PermissionError,
    StreamNotFoundError,
    TimeoutError,
)

__all__ = ["api_error", "translate"]

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014


def api_error(description: str, code: int | None, err_code: int | None) -> JetStreamAPIError:
    """The most specific JetStreamAPIError for a JetStream API error response."""
    if err_code == STREAM_NOT_FOUND:
        return StreamNotFoundError(description, code, err_code)
    if err_code == CONSUMER_NOT_FOUND:
        return ConsumerNotFoundError(description, code, err_code)
    return JetStreamAPIError(description, code, err_code)


def translate(exc: BaseException, what: str = "") -> BaseException:
    """Map *exc* to a natspull error; natspull errors and builtin argument errors pass through."""
    if isinstance(exc, (Error, ValueError, TypeError, RuntimeError)) and not isinstance(
        exc, nats.errors.Error
    ):
        return exc
    prefix = f"{what}: " if what else ""
    if isinstance(exc, nats.js.errors.APIError):
        return api_error(f"{prefix}{exc.description or 'JetStream API error'}", exc.code, exc.err_code)
    if isinstance(exc, nats.errors.NoRespondersError):
        return JetStreamAPIError(f"{prefix}no responders (is JetStream enabled, does the stream exist?)", 503)
    # asyncio.TimeoutError is the builtin TimeoutError only since Python 3.11.
    if isinstance(exc, (nats.errors.TimeoutError, asyncio.TimeoutError, builtins.TimeoutError)):
        return TimeoutError(f"{prefix}timed out")
    if isinstance(exc, (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError)):
        return ConnectionClosedError(f"{prefix}the connection is closed")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return ValueError(f"{prefix}payload exceeds the server's max_payload")
    if isinstance(exc, nats.errors.BadSubjectError):
        return ValueError(f"{prefix}invalid subject")
    message = str(exc) or type(exc).__name__
    if "permissions violation" in message.lower():
        return PermissionError(f"{prefix}{message.removeprefix('nats: ')}")
    return Error(f"{prefix}{message}")
