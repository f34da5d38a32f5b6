"""Which message kills worker processes: deaths counted per stream sequence.

When a process dies, the messages that were in its handlers (its :class:`~._handlers.HandlerTable`)
are the suspects. Each suspect's count of deaths goes up by one, and the supervisor NAKs it at
once, so it comes back in moments instead of after ``ack_wait``. A suspect then runs alone in
whichever process gets it (``_handlers.Gate``), so a message that kills again is the only one in
a handler at that death, and a message that was merely running beside a poison message once
does not reach the limit by riding along with it. A message in a handler at ``poison_after``
deaths is poison: the supervisor terminates it (after publishing it to the dead-letter subject).

Crash-loop detection counts, per slot, the deaths in a row that did not run ``STABLE`` seconds;
each death remembers its suspects. When a message is terminated as poison, every death it was
a suspect of is forgotten in every slot: it has an explanation that is now gone, so a single
poison message (``poison_after`` < ``CRASH_LIMIT``) never ends the run with exit 5, while a
process that dies with nothing in its handlers (at start-up, say) still does.

Main thread of the supervisor only.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

__all__ = ["DeathCounts"]

REMEMBERED = 10_000  # stream sequences whose deaths are remembered (oldest forgotten first)


class DeathCounts:
    """Deaths per stream sequence, and which sequences reached the limit."""

    def __init__(self, poison_after: int | None) -> None:
        self.poison_after = poison_after  # None: never terminate
        self._deaths: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.terminated: set[int] = set()  # sequences terminated as poison (not counted again)

    def died(self, suspects: Iterable[int]) -> list[int]:
        """Count a death for each of *suspects*; return those that are now poison (each once)."""
        poison = []
        for seq in suspects:
            if seq in self.terminated:
                continue
            count = self._deaths.pop(seq, 0) + 1
            self._deaths[seq] = count
            if self.poison_after is not None and count >= self.poison_after:
                self.terminated.add(seq)
                del self._deaths[seq]
                poison.append(seq)
        while len(self._deaths) > REMEMBERED:
            self._deaths.popitem(last=False)
        while len(self.terminated) > REMEMBERED:
            self.terminated.pop()
        return poison

    def deaths(self, seq: int) -> int:
        """How many deaths *seq* was a suspect of (the limit, once it was terminated)."""
        if seq in self.terminated and self.poison_after is not None:
            return self.poison_after
        return self._deaths.get(seq, 0)
