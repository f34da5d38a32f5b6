"""Argument checks at the API boundary: each error names the argument, the value and what is allowed."""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "check_bytes",
    "check_header_value",
    "check_headers",
    "check_int",
    "check_name",
    "check_nanoseconds",
    "check_number",
    "check_subject",
    "check_timeout",
]

_MAX_SECONDS = 86400.0 * 365
# nats-server's max_control_line is 4 KiB for a whole PUB line (subject, reply, sizes).
MAX_SUBJECT_BYTES = 3900
# nats-server's default max_control_line: the longest argument part of a protocol line
# (what follows "PUB "/"HPUB "/"SUB ", without CRLF) it accepts. A longer one is answered
# with -ERR and the connection is closed for good.
MAX_CONTROL_LINE = 4096
# The server keeps durations as Go time.Duration: int64 nanoseconds.
MAX_NANOSECONDS = 2**63 - 1
# RFC 9110 field-name = token (tchar). nats-py refuses any other name (BadHeaderError) and
# its parser drops or splits one it receives (non-ASCII, whitespace, ':').
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_number(
    name: str, value: Any, *, minimum: float = 0.0, allow_none: bool = False, exclusive: bool = False
) -> Any:
    """A finite real number >= minimum (> minimum with exclusive=True)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if (
        not math.isfinite(value)
        or value < minimum
        or (exclusive and value == minimum)
        or value > _MAX_SECONDS
    ):
        op = ">" if exclusive else ">="
        raise ValueError(
            f"{name} must be a finite number {op} {minimum:g} and <= {_MAX_SECONDS:g}, got {value!r}"
        )
    return float(value)


def check_timeout(name: str, value: Any) -> float | None:
    """None (no bound) or a finite number of seconds >= 0."""
    result: float | None = check_number(name, value, allow_none=True)
    return result


def check_nanoseconds(name: str, value: Any) -> int:
    """A finite number of seconds >= 0 that fits the server's int64 nanoseconds; returns the ns.

    The conversion is nats-py's (``int(seconds * 10**9)``), so the check is on what is sent.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    nanoseconds = int(value * 10**9)
    if nanoseconds > MAX_NANOSECONDS:
        raise ValueError(
            f"{name} must be at most {MAX_NANOSECONDS / 10**9:.0f} s (the server's int64 nanoseconds), "
            f"got {value!r}"
        )
    return nanoseconds


def check_int(
    name: str, value: Any, *, minimum: int = 1, maximum: int = 2**31 - 1, allow_none: bool = False
) -> Any:
    """An int in [minimum, maximum]."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def check_name(kind: str, value: Any) -> str:
    """A stream/consumer name: non-empty; no spaces, '.', '*', '>', path separators, control characters."""
    if not isinstance(value, str):
        raise TypeError(f"{kind} name must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{kind} name must not be empty")
    bad = sorted({c for c in value if c in " .*>/\\\t\r\n" or not c.isprintable()})
    if bad:
        raise ValueError(
            f"{kind} name {value!r} must not contain {''.join(bad)!r} (no spaces, '.', '*', '>', '/', '\\\\')"
        )
    if len(value) > 255:
        raise ValueError(f"{kind} name must be at most 255 characters, got {len(value)}")
    return value


#: Subjects without wildcards that passed :func:`check_subject` (publishing checks the same
#: few subjects again and again). Bounded: cleared when full. Dict operations are atomic.
_CHECKED_SUBJECTS: dict[str, None] = {}
_CHECKED_MAX = 1024


def check_subject(name: str, value: Any, *, wildcards: bool = False) -> str:
    """A NATS subject: dot-separated non-empty tokens without whitespace; wildcards only if allowed."""
    if type(value) is str and value in _CHECKED_SUBJECTS:
        return value  # (valid without wildcards, so valid with them too)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{name} {value!r} must not contain whitespace or control characters")
    if len(value.encode()) > MAX_SUBJECT_BYTES:
        raise ValueError(
            f"{name} is {len(value.encode())} bytes long; at most {MAX_SUBJECT_BYTES} are allowed"
        )
    tokens = value.split(".")
    for i, token in enumerate(tokens):
        if not token:
            raise ValueError(f"{name} {value!r} has an empty token")
        if not wildcards and ("*" in token or ">" in token):
            raise ValueError(f"{name} {value!r} must not contain wildcards ('*', '>')")
        if wildcards and (("*" in token or ">" in token) and len(token) > 1):
            raise ValueError(f"{name} {value!r}: a wildcard must be a whole token")
        if wildcards and token == ">" and i != len(tokens) - 1:
            raise ValueError(f"{name} {value!r}: '>' must be the last token")
    if type(value) is str and "*" not in value and ">" not in value:
        if len(_CHECKED_SUBJECTS) >= _CHECKED_MAX:
            _CHECKED_SUBJECTS.clear()
        _CHECKED_SUBJECTS[value] = None
    return value


def check_bytes(name: str, value: Any) -> bytes:
    """bytes, bytearray or memoryview (as bytes)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{name} must be bytes, got {type(value).__name__} (encode str payloads first)")


def check_header_value(name: str, value: str) -> str:
    """A header value that is sent exactly as given: one line, no surrounding whitespace, UTF-8.

    nats-py strips a value's surrounding whitespace and turns CR/LF into spaces: a value it
    would change (``msg_id="order-1 "`` deduplicated as "order-1") is refused instead.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} {value!r:.80} must not contain CR or LF")
    if value != value.strip():
        raise ValueError(
            f"{name} {value!r:.80} must not start or end with whitespace (it would be sent trimmed)"
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{name} {value!r:.80} is not encodable as UTF-8") from None
    return value


def check_headers(value: Any) -> dict[str, str] | None:
    """None or a dict of str -> str: token names, values sent exactly as given. Returns a copy,
    so that changing the dict after a publish cannot change the message on its way."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"headers must be a dict of str to str, got {type(value).__name__}")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"headers must map str to str, got {key!r}: {val!r}")
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(
                f"header name {key!r} is not allowed: use ASCII letters, digits and "
                "!#$%&'*+-.^_`|~ (an HTTP token: no spaces, ':', '/', '@', '=', '(', ')' ...)"
            )
        check_header_value(f"header {key!r} value", val)
    return dict(value)
