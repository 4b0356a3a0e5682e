"""Throttle repetitive log lines (garbage on the UDP port must not flood the log)."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class LogThrottle:
    """Allows ``burst`` lines per ``period`` seconds, and counts the rest.

    ``allow()`` answers whether to log now; when a new period begins, the
    caller is told via ``suppressed`` how many lines the last one swallowed.
    """

    def __init__(self, clock: IReactorTime, burst: int = 10, period: float = 60.0) -> None:
        self._clock = clock
        self._burst = burst
        self._period = period
        self._start = -period
        self._used = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock.seconds()
        if now - self._start >= self._period:
            self._start = now
            self._used = 0
        if self._used < self._burst:
            self._used += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """Lines swallowed since the last call (for a 'and N more' line)."""
        n, self.suppressed = self.suppressed, 0
        return n
