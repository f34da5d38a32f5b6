"""Units of natspull._transport._translate: nats-py and asyncio errors become natspull errors."""

from __future__ import annotations

import asyncio
import builtins

import nats.errors
import pytest

import natspull
from natspull._transport._translate import translate


@pytest.mark.parametrize(
    "exc",
    [builtins.TimeoutError("no PONG"), asyncio.TimeoutError(), nats.errors.TimeoutError()],
    ids=["builtin", "asyncio", "nats"],
)
def test_every_timeout_class_becomes_natspull_timeout(exc: BaseException) -> None:
    # Before Python 3.11 asyncio's TimeoutError is not the builtin one, which natspull's own
    # loop code raises (Client._ping, JetStream.publish_many).
    translated = translate(exc, "flush")
    assert type(translated) is natspull.TimeoutError
    assert str(translated) == "flush: timed out"
