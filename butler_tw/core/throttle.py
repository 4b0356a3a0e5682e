"""Throttle repetitive log lines: hostile or broken input must not flood the log.

(The same per-key, per-period counting is the per-source datagram limit of
:mod:`butler_tw.sourcelimit`.)

Per key (for input problems: the kind of problem and the source address),
the first ``burst`` lines of a period are logged; the rest are only counted,
and a timer reports them in one summary line at the end of the period, even
if nothing else arrives. Clock injected.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # annotations only: importing Twisted would load socket and ssl
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Where keys go once a period has seen ``maxKeys`` distinct ones.
OVERFLOW: tuple[str, str] = ("*", "other sources")


class LogThrottle:
    """Decides which lines to log; summarises the ones it swallowed.

    :param summarise: called once at the end of a period in which lines were
        swallowed, with ``{key: how many}``.
    :param maxKeys: distinct keys tracked per period; further keys share
        :data:`OVERFLOW`, so a flood from spoofed addresses cannot grow memory.
    """

    def __init__(
        self,
        clock: IReactorTime,
        summarise: Callable[[dict[Any, int]], None],
        burst: int = 1,
        period: float = 60.0,
        maxKeys: int = 1000,
    ) -> None:
        self._clock = clock
        self._summarise = summarise
        self._burst = burst
        self.period = period
        self._maxKeys = maxKeys
        self._counts: dict[Hashable, int] = {}
        self._timer: IDelayedCall | None = None

    def allow(self, key: Hashable) -> bool:
        """Whether to log a line for ``key`` now."""
        if key not in self._counts and len(self._counts) >= self._maxKeys:
            key = OVERFLOW
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        if self._timer is None:
            self._timer = self._clock.callLater(self.period, self._endPeriod)
        return n <= self._burst

    def _endPeriod(self) -> None:
        self._timer = None
        swallowed = {k: n - self._burst for k, n in self._counts.items() if n > self._burst}
        self._counts.clear()
        if swallowed:
            self._summarise(swallowed)

    def stop(self) -> None:
        """Cancel the period timer (on shutdown); what was swallowed is summarised now."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._endPeriod()
        self._timer = None
