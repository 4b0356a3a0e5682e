"""At most one alert per (event kind, taskId) per window. Clock injected.

A window starts when an alert is accepted for delivery and ends through an
``IReactorTime.callLater`` expiry, so nothing polls and tests drive time with
``task.Clock``. Unlike Butler, ``rateLimit: 0`` means "no limit"; Butler's 0
means "never again until restart".

The open windows of one kind are an ``OrderedDict`` taskId -> start time in
start order: every window of a kind has the kind's current length, so start
order is expiry order, a new one ends last and goes at the end (``restore``
merges in sorted order), and a reload that changes the length changes every
window's end at once without touching an entry. One timer per kind is armed
for the first entry's expiry; when it fires it drops every entry that has
ended and re-arms for the next. That keeps about 190 bytes per
open window (taskId string included) instead of a ``DelayedCall`` each.
``OrderedDict`` rather than ``dict``: taking the first entry off a plain dict
scans the deleted slots before it, quadratic under steady churn.
"""

from __future__ import annotations

from collections import OrderedDict
from operator import itemgetter
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from butler_tw.core.alert import Alert, EventKind

if TYPE_CHECKING:  # annotations only: importing Twisted would load socket and ssl
    from twisted.internet.interfaces import IDelayedCall, IReactorTime


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
        # Per limited kind: lowercased taskId -> start of its window, first to end first.
        self._open: dict[EventKind, OrderedDict[str, float]] = {
            kind: OrderedDict() for kind, window in self._windows.items() if window > 0
        }
        # Per kind with open windows: the one timer, due at the first expiry.
        self._timers: dict[EventKind, IDelayedCall] = {}

    def allow(self, alert: Alert) -> bool:
        """Whether ``alert`` may go out; if so, its task's window starts now."""
        window = self._windows.get(alert.kind, 0.0)
        if window <= 0:
            return True
        starts = self._open[alert.kind]
        taskId = alert.taskId.lower()
        now = self._clock.seconds()
        start = starts.get(taskId)
        if start is not None:
            if start + window > now:
                return False
            # Ended, but its timer has not run yet: drop it so the new window
            # goes at the end. The timer is due and will re-arm itself.
            del starts[taskId]
        starts[taskId] = now
        if alert.kind not in self._timers:
            self._arm(alert.kind)
        if self._onChange is not None:
            self._onChange(alert.kind, taskId, now + window)
        return True

    def release(self, alert: Alert) -> None:
        """End ``alert``'s task window now: its alert reached no webhook.

        The window exists so that one task does not alert twice in a row;
        an alert that was never delivered must not silence the next one.
        """
        starts = self._open.get(alert.kind)
        taskId = alert.taskId.lower()
        if starts is None or taskId not in starts:
            return
        wasFirst = next(iter(starts)) == taskId
        del starts[taskId]
        if wasFirst:
            self._cancel(alert.kind)
            self._arm(alert.kind)
        if self._onChange is not None:
            self._onChange(alert.kind, taskId, self._clock.seconds())

    def restore(self, entries: Iterable[tuple[EventKind, str, float]]) -> None:
        """Re-arm windows opened before a restart, for the time they have left.

        A window is never made longer than the kind's current ``rateLimit``
        (the config may have changed), and expired ones are skipped. A task
        whose window is already open keeps it; of repeated entries, the first
        counts. The store keeps each window's end as it was when the window
        opened: one a reload lengthened since then ends at that time.
        """
        now = self._clock.seconds()
        restored: dict[EventKind, dict[str, float]] = {}
        for kind, taskId, expiresAt in entries:
            window = self._windows.get(kind, 0.0)
            left = min(expiresAt - now, window)
            if left <= 0:
                continue
            key = taskId.lower()
            if key in self._open[kind]:
                continue
            # The start that makes it end in ``left`` seconds at the current length.
            restored.setdefault(kind, {}).setdefault(key, now + left - window)
        for kind, added in restored.items():
            # Restored windows may end before the open ones: merge in start
            # order (the sort is stable, so equal starts keep their order).
            merged = sorted([*self._open[kind].items(), *added.items()], key=itemgetter(1))
            self._open[kind] = OrderedDict(merged)
            self._cancel(kind)
            self._arm(kind)

    def reconfigure(self, windows: Mapping[EventKind, float]) -> None:
        """Take new ``rateLimit`` values (a configuration reload), keeping the open windows.

        Every open window lasts the new length from its start: a longer
        limit makes the open windows longer, a shorter one ends them sooner
        (those older than the new length at once). Windows are kept by their
        start, so any number of reloads, in either direction, leave each
        window exactly its current length from its start. A kind whose limit
        becomes 0 forgets its windows. The store is not rewritten: after a
        restart, :meth:`restore` re-arms what it kept.
        """
        before, self._windows = self._windows, dict(windows)
        now = self._clock.seconds()
        for kind in {*before, *windows}:
            window, old = windows.get(kind, 0.0), before.get(kind, 0.0)
            if window <= 0:
                self._cancel(kind)
                self._open.pop(kind, None)
            elif old <= 0:
                self._open[kind] = OrderedDict()
            elif window != old:
                self._cancel(kind)
                self._drop_ended(kind, now)
                self._arm(kind)

    def remaining(self, alert: Alert) -> float:
        """Seconds until ``alert``'s task may alert again (0 when it may now)."""
        starts = self._open.get(alert.kind)
        if starts is None:
            return 0.0
        start = starts.get(alert.taskId.lower())
        if start is None:
            return 0.0
        return max(0.0, start + self._windows[alert.kind] - self._clock.seconds())

    def __len__(self) -> int:
        """How many (kind, task) windows are open."""
        return sum(len(starts) for starts in self._open.values())

    def _arm(self, kind: EventKind) -> None:
        """Start ``kind``'s timer for its first expiry, if it has open windows."""
        starts = self._open[kind]
        if not starts:
            return
        expiresAt = starts[next(iter(starts))] + self._windows[kind]
        delay = max(0.0, expiresAt - self._clock.seconds())
        self._timers[kind] = self._clock.callLater(delay, self._expire, kind, expiresAt)

    def _cancel(self, kind: EventKind) -> None:
        call = self._timers.pop(kind, None)
        if call is not None and call.active():
            call.cancel()

    def _expire(self, kind: EventKind, due: float) -> None:
        """``kind``'s timer: drop the windows that have ended, re-arm for the next.

        ``due`` is the expiry the timer was armed for: the reactor may run it
        a rounding error early, and that window has ended all the same.
        """
        del self._timers[kind]
        self._drop_ended(kind, max(self._clock.seconds(), due))
        self._arm(kind)

    def _drop_ended(self, kind: EventKind, now: float) -> None:
        """Drop ``kind``'s windows that have ended by ``now`` (they are first)."""
        starts = self._open[kind]
        window = self._windows[kind]
        while starts:
            taskId = next(iter(starts))
            if starts[taskId] + window > now:
                break
            del starts[taskId]

    def stop(self) -> None:
        """Cancel every pending expiry (on shutdown: no timers left behind)."""
        for kind in list(self._timers):
            self._cancel(kind)
        for starts in self._open.values():
            starts.clear()
