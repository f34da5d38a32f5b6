"""Unit tests for natspull._redact: the one function that strips credentials from a server URL."""

from __future__ import annotations

import pytest

from natspull._redact import redact


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("127.0.0.1:4222", "127.0.0.1:4222"),
        ("nats://alice:s3cret@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://s3cret-token@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("nats://a@b@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        # No scheme: read as nats://, as nats-py does; the credentials must not survive.
        ("alice:s3cret@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("s3cret-token@host", "nats://***@host"),
        # The host part is kept as written.
        ("tls://alice:s3cret@Nats.Example:4443", "tls://***@Nats.Example:4443"),
        ("nats://alice:s3cret@[::1]:4222", "nats://***@[::1]:4222"),
        ("nats://alice:s3cret@127.0.0.1:notaport", "nats://***@127.0.0.1:notaport"),
        ("ws://alice:s3cret@127.0.0.1:8080/path?x=1", "ws://***@127.0.0.1:8080/path?x=1"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
