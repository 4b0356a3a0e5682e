"""Drop a datagram seen before: the same (kind, taskId, executionId) within a TTL.

A Qlik node with two appenders pointing at us, or a network that duplicates
packets, must not double-alert. An alert without an executionId is never a
duplicate (as in Butler): nothing tells two such failures apart, and dropping
a real alert is worse than sending one twice; the rate limit governs those.
Clock injected; expiry is a sweep from the oldest key (all keys share one
TTL, so insertion order is expiry order).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable

from butler_tw.core.alert import Alert, EventKind

if TYPE_CHECKING:  # annotations only: importing Twisted would load socket and ssl
    from twisted.internet.interfaces import IReactorTime

#: (kind, taskId, executionId), the ids lower-cased.
Key = tuple[EventKind, str, str]


class Deduplicator:
    """Remembers (kind, taskId, executionId) triples for ``ttl`` seconds.

    :param onRemember: called with (kind, (taskId, executionId), expiresAt)
        for every new key, so a store can keep the keys across restarts.
    """

    def __init__(
        self,
        clock: IReactorTime,
        ttl: float,
        onRemember: Callable[[EventKind, tuple[str, str], float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._onRemember = onRemember
        self._expiries: OrderedDict[Key, float] = OrderedDict()

    def seen(self, alert: Alert) -> bool:
        """True if ``alert`` is a duplicate; otherwise remember it and say False.

        An alert with an empty executionId is never a duplicate, nor remembered.
        """
        if self._ttl <= 0 or not alert.executionId.strip():
            return False
        now = self._clock.seconds()
        self._sweep(now)
        key = (alert.kind, alert.taskId.lower(), alert.executionId.lower())
        if key in self._expiries:
            return True
        expiresAt = now + self._ttl
        self._expiries[key] = expiresAt
        if self._onRemember is not None:
            self._onRemember(key[0], key[1:], expiresAt)
        return False

    def restore(self, entries: Iterable[tuple[EventKind, tuple[str, ...], float]]) -> None:
        """Re-arm the keys remembered before a restart: (kind, (taskId, executionId), expiresAt)."""
        for kind, (taskId, executionId), expiresAt in entries:
            key = (kind, taskId.lower(), executionId.lower())
            self._expiries[key] = max(expiresAt, self._expiries.get(key, 0.0))
        self._expiries = OrderedDict(sorted(self._expiries.items(), key=lambda kv: kv[1]))

    def reconfigure(self, ttl: float) -> None:
        """Take a new TTL (a configuration reload), keeping the keys already seen.

        As for rate-limit windows: a longer TTL applies to keys seen from now
        on; a shorter one also to the keys held, each then expiring at the
        time it was seen plus the new TTL. 0 turns de-duplication off and
        forgets the keys.
        """
        if ttl <= 0:
            self._expiries.clear()
        elif 0 < ttl < self._ttl:
            shift = self._ttl - ttl
            self._expiries = OrderedDict((key, at - shift) for key, at in self._expiries.items())
            self._sweep(self._clock.seconds())
        self._ttl = ttl

    def __len__(self) -> int:
        return len(self._expiries)

    def _sweep(self, now: float) -> None:
        while self._expiries:
            key, expiresAt = next(iter(self._expiries.items()))
            if expiresAt > now:
                return
            del self._expiries[key]
