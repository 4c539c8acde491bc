"""Clocks: the real one, and the time-skipping one of `flowz.testing`."""

from __future__ import annotations

import time

__all__ = ["Clock", "SkippingClock"]


class Clock:
    """Wall-clock time in epoch seconds, as a store stamps and compares it."""

    def now(self) -> float:
        """The current time."""
        return time.time()

    def until(self, due: float, idle: bool) -> float:
        """Seconds to wait for work due at `due`; `idle` when nothing is running."""
        return max(0.0, due - self.now())


class SkippingClock(Clock):
    """A clock that jumps to the next due time whenever nothing is running.

    A durable sleep of a week, or a retry delay of an hour, then ends as soon
    as the run has nothing else to do, and `flowz.now()` shows the skipped time.
    """

    def __init__(self) -> None:
        self.skipped = 0.0

    def now(self) -> float:
        return time.time() + self.skipped

    def until(self, due: float, idle: bool) -> float:
        wait = due - self.now()
        if wait > 0 and idle:
            self.skipped += wait
            return 0.0
        return max(0.0, wait)
