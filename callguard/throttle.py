"""A log line per interval, not per occurrence: for events a peer can make happen thousands of times a
second (a connection flood, a clock-skewed event stream). Counts add up between lines, so none is lost."""

from __future__ import annotations

import time
from collections.abc import Callable


class LogThrottle:
    """``note(kind)`` counts; it returns the counts gathered since the last line when one is due."""

    __slots__ = ("_clock", "_counts", "_next", "every")

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._counts: dict[str, int] = {}
        self._next = float("-inf")  # the first occurrence is logged at once

    def note(self, kind: str, n: int = 1) -> dict[str, int] | None:
        self._counts[kind] = self._counts.get(kind, 0) + n
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.every
        counts, self._counts = self._counts, {}
        return counts
