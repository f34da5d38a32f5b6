"""``shutdown_on_signals``: drain on the first SIGINT/SIGTERM, stop on the second."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any, Protocol

__all__ = ["SignalShutdown", "shutdown_on_signals"]

log = logging.getLogger("natspull")


class _Closable(Protocol):
    def drain(self) -> None: ...

    def stop(self) -> None: ...


class SignalShutdown:
    """Installed signal handlers; a context manager that restores the previous ones on exit."""

    def __init__(self, targets: tuple[_Closable, ...], signals: Iterable[int]) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "shutdown_on_signals() must be called from the main thread (a Python rule for signals)"
            )
        self._targets = targets
        self.received = 0  # signals received so far
        self._previous: dict[int, Any] = {}
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes, possibly inside next():
        # drain()/stop() never block and are safe there by design (see _queue.py).
        self.received += 1
        first = self.received == 1
        log.info("natspull: signal %d: %s", signum, "draining" if first else "stopping")
        for target in self._targets:
            target.drain() if first else target.stop()
        if not first:
            self.restore()

    def restore(self) -> None:
        """Put the previous handlers back. Idempotent; main thread only."""
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def __enter__(self) -> SignalShutdown:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()


def shutdown_on_signals(
    *targets: _Closable, signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
) -> SignalShutdown:
    """Install handlers that drain *targets* (iterators or consume contexts) on the first signal
    and stop them on the second; the second also restores the previous handlers.

    Use it as a context manager so the previous handlers come back when the
    work ends::

        with consumer.messages() as msgs, natspull.shutdown_on_signals(msgs):
            for msg in msgs:
                handle(msg)
                msg.ack()

    Raises RuntimeError off the main thread, TypeError for targets without drain()/stop().
    """
    for target in targets:
        if not (callable(getattr(target, "drain", None)) and callable(getattr(target, "stop", None))):
            raise TypeError(f"shutdown_on_signals() needs objects with drain() and stop(), got {target!r}")
    if isinstance(signals, (str, bytes)) or not isinstance(signals, Iterable):
        raise TypeError(f"signals must be an iterable of signal numbers, got {type(signals).__name__}")
    checked = []
    for signum in signals:
        try:
            checked.append(signal.Signals(signum))
        except (ValueError, TypeError):
            raise ValueError(f"signals: {signum!r} is not a signal number") from None
        if checked[-1] in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(f"signals: {checked[-1].name} cannot be handled")
    return SignalShutdown(targets, checked)
