"""At most one alert per (event kind, taskId) per window. Clock injected.

A window starts when an alert is accepted for delivery and ends through an
``IReactorTime.callLater`` expiry, so nothing polls and tests drive time with
``task.Clock``. Unlike Butler, ``rateLimit: 0`` means "no limit"; Butler's 0
means "never again until restart".
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from butler_tw.alert import Alert, EventKind


class RateLimiter:
    """Remembers which tasks alerted recently, per kind of event.

    :param onChange: called with (kind, taskId, expiresAt) for every window
        opened, and with the current time for every window released, so a
        store can re-arm the open ones after a restart (:meth:`restore`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        windows: Mapping[EventKind, float],
        onChange: Callable[[EventKind, str, float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._windows = dict(windows)
        self._onChange = onChange
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
        if self._onChange is not None:
            self._onChange(alert.kind, key[1], self._clock.seconds() + window)
        return True

    def release(self, alert: Alert) -> None:
        """End ``alert``'s task window now: its alert reached no webhook.

        The window exists so that one task does not alert twice in a row;
        an alert that was never delivered must not silence the next one.
        """
        key = (alert.kind, alert.taskId.lower())
        call = self._expiries.pop(key, None)
        if call is None:
            return
        if call.active():
            call.cancel()
        if self._onChange is not None:
            self._onChange(alert.kind, key[1], self._clock.seconds())

    def restore(self, entries: Iterable[tuple[EventKind, str, float]]) -> None:
        """Re-arm windows opened before a restart, for the time they have left.

        A window is never made longer than the kind's current ``rateLimit``
        (the config may have changed), and expired ones are skipped.
        """
        now = self._clock.seconds()
        for kind, taskId, expiresAt in entries:
            left = min(expiresAt - now, self._windows.get(kind, 0.0))
            key = (kind, taskId.lower())
            if left <= 0 or key in self._expiries:
                continue
            self._expiries[key] = self._clock.callLater(left, self._expire, key)

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
