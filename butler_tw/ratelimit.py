"""At most one alert per (event kind, taskId) per window. Clock injected.

A window starts when an alert is accepted for delivery and ends through an
``IReactorTime.callLater`` expiry, so nothing polls and tests drive time with
``task.Clock``. Unlike Butler, ``rateLimit: 0`` means "no limit"; Butler's 0
means "never again until restart".
"""

from __future__ import annotations

from typing import Mapping

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from butler_tw.alert import Alert, EventKind


class RateLimiter:
    """Remembers which tasks alerted recently, per kind of event."""

    def __init__(self, clock: IReactorTime, windows: Mapping[EventKind, float]) -> None:
        self._clock = clock
        self._windows = dict(windows)
        self._expiries: dict[tuple[EventKind, str], IDelayedCall] = {}

    def allow(self, alert: Alert) -> bool:
        """Whether ``alert`` may go out; if so, its task's window starts now."""
        window = self._windows.get(alert.kind, 0.0)
        if window <= 0:
            return True
        key = (alert.kind, alert.taskId.lower())
        if key in self._expiries:
            return False
        self._expiries[key] = self._clock.callLater(window, self._expire, key)
        return True

    def remaining(self, alert: Alert) -> float:
        """Seconds until ``alert``'s task may alert again (0 when it may now)."""
        call = self._expiries.get((alert.kind, alert.taskId.lower()))
        if call is None:
            return 0.0
        return max(0.0, call.getTime() - self._clock.seconds())

    def __len__(self) -> int:
        """How many (kind, task) windows are open."""
        return len(self._expiries)

    def _expire(self, key: tuple[EventKind, str]) -> None:
        self._expiries.pop(key, None)

    def stop(self) -> None:
        """Cancel every pending expiry (on shutdown: no timers left behind)."""
        for call in self._expiries.values():
            if call.active():
                call.cancel()
        self._expiries.clear()
