"""``natspull.Backoff``: the redelivery delays ``consume()`` asks for after a handler failed.

Plain data and arithmetic: no threads, no network. ``consume()`` NAKs a failed message with
``-NAK {"delay": ns}`` where the delay is :meth:`Backoff.delay` of the message's delivery count.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .._validate import check_number

__all__ = ["DEFAULT_RETRY", "Backoff"]


def _check_factor(name: str, value: object, *, minimum: float, maximum: float) -> float:
    """A finite real number in [minimum, maximum] (not a number of seconds: a plain factor)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a finite number between {minimum:g} and {maximum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter for the redeliveries of a failed message.

    The *n*-th delivery of a message (``msg.metadata.num_delivered``) that fails is NAKed with
    a delay of ``min(initial * multiplier ** (n - 1), maximum)``, then moved at random by up to
    ``jitter`` times itself either way (so that messages failing together do not come back
    together). ``maximum`` caps the delay before the jitter: a delay is never more than
    ``maximum * (1 + jitter)``.

    Attributes:
        initial: the delay after the first failure, in seconds (>= 0).
        maximum: the cap, in seconds (>= initial, at most a year).
        multiplier: the growth factor per delivery (1-1000; 1 is a constant delay).
        jitter: the random fraction, 0 (none) to 1.

    Raises ValueError/TypeError at construction for values outside these ranges. Immutable;
    any thread.
    """

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        check_number("initial", self.initial)
        check_number("maximum", self.maximum)
        _check_factor("multiplier", self.multiplier, minimum=1, maximum=1000)
        _check_factor("jitter", self.jitter, minimum=0, maximum=1)
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum!r}) must be >= initial ({self.initial!r})")

    def delay(self, num_delivered: int) -> float:
        """The delay in seconds to ask for when delivery number *num_delivered* (>= 1) failed.

        Random within the jitter: two calls may differ. Raises ValueError/TypeError for a
        *num_delivered* that is not an int >= 1. Never blocks; any thread.
        """
        if isinstance(num_delivered, bool) or not isinstance(num_delivered, int):
            raise TypeError(f"num_delivered must be an int, got {type(num_delivered).__name__}")
        if num_delivered < 1:
            raise ValueError(f"num_delivered must be >= 1, got {num_delivered}")
        try:
            # float powers: an int multiplier would build a huge exact int for a large count
            base = min(float(self.initial) * float(self.multiplier) ** (num_delivered - 1), self.maximum)
        except OverflowError:  # a large delivery count: far past the cap
            base = self.maximum
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return float(base)


#: What ``consume()`` retries with when no ``retry=`` is given: 1 s, 2 s, 4 s, ... up to 60 s, +/- 20 %.
DEFAULT_RETRY = Backoff(initial=1.0, maximum=60.0, multiplier=2.0, jitter=0.2)
