"""``Butler.udpServerConfig.rateLimit``: at most N datagrams per minute from each source address.

Butler counts all datagrams together, so one noisy or hostile sender silences
every Qlik server; here each source address has its own budget, in a fixed
one-minute window (as Butler's). The counting is :class:`LogThrottle`'s: one
counter per address seen this minute, reset by one ``callLater`` timer, and
at most ``maxSources`` addresses, beyond which they share one budget
(:data:`OTHERS`), so a flood from spoofed addresses cannot grow memory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from butler_tw.core.throttle import OVERFLOW, LogThrottle

#: Where addresses go once a window has seen ``maxSources`` distinct ones.
OTHERS = OVERFLOW


class SourceRateLimit:
    """Counts datagrams per source address in the current minute."""

    def __init__(
        self, clock: IReactorTime, perMinute: int, maxSources: int = 10000, window: float = 60.0
    ) -> None:
        self.perMinute = perMinute
        # The first perMinute per address and window pass; nothing to summarise (the gate logs).
        self._counter = LogThrottle(
            clock, lambda swallowed: None, burst=perMinute, period=window, maxKeys=maxSources
        )

    def allow(self, source: str) -> bool:
        """Whether one more datagram from ``source`` is within its budget (and count it)."""
        return self._counter.allow(source)

    def stop(self) -> None:
        self._counter.stop()
