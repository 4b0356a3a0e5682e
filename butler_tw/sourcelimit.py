"""``Butler.udpServerConfig.rateLimit``: at most N datagrams per minute from each source address.

Butler counts all datagrams together, so one noisy or hostile sender silences
every Qlik server; here each source address has its own budget. A fixed
one-minute window (as Butler's), reset by one ``callLater`` timer, so the
state is one counter per address seen this minute, and at most ``maxSources``
of those: beyond that, further addresses share one budget, so a flood from
spoofed addresses cannot grow memory. Clock injected.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Where addresses go once a window has seen ``maxSources`` distinct ones.
OTHERS = "other sources"


class SourceRateLimit:
    """Counts datagrams per source address in the current minute."""

    def __init__(
        self, clock: IReactorTime, perMinute: int, maxSources: int = 10000, window: float = 60.0
    ) -> None:
        self._clock = clock
        self.perMinute = perMinute
        self._maxSources = maxSources
        self._window = window
        self._counts: dict[str, int] = {}
        self._timer: IDelayedCall | None = None

    def allow(self, source: str) -> bool:
        """Whether one more datagram from ``source`` is within its budget (and count it)."""
        if source not in self._counts and len(self._counts) >= self._maxSources:
            source = OTHERS
        n = self._counts.get(source, 0) + 1
        self._counts[source] = n
        if self._timer is None:
            self._timer = self._clock.callLater(self._window, self._reset)
        return n <= self.perMinute

    def _reset(self) -> None:
        self._timer = None
        self._counts.clear()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._counts.clear()
