"""The idle-heartbeat monitor of a continuous pull (nats.go's rule: 2 x heartbeat of silence)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["HeartbeatMonitor"]


class HeartbeatMonitor:
    """Calls ``on_missed()`` when nothing arrived for two heartbeat intervals while connected.

    It checks every half interval. Any traffic on the inbox (a message, a status, a burst
    handed over) calls :meth:`touch`. Loop thread only.
    """

    __slots__ = ("_handle", "_heartbeat", "_is_connected", "_last_activity", "_loop", "_on_missed")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        heartbeat: float,
        is_connected: Callable[[], bool],
        on_missed: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._heartbeat = heartbeat
        self._is_connected = is_connected
        self._on_missed = on_missed
        self._last_activity = loop.time()
        self._handle: asyncio.TimerHandle | None = None

    @property
    def interval(self) -> float:
        """The time of silence after which a heartbeat counts as missed (2 x heartbeat)."""
        return 2 * self._heartbeat

    def start(self) -> None:
        self._last_activity = self._loop.time()
        self._handle = self._loop.call_later(self._heartbeat, self._check)

    def touch(self) -> None:
        """Traffic arrived: the server is alive."""
        self._last_activity = self._loop.time()

    def cancel(self) -> None:
        """Stop checking. Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = self._loop.call_later(self._heartbeat / 2, self._check)
        now = self._loop.time()
        if now - self._last_activity < self.interval or not self._is_connected():
            return
        self._last_activity = now
        self._on_missed()
