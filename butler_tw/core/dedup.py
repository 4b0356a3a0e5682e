"""Drop a datagram seen before: the same (kind, taskId, executionId) within a TTL.

A Qlik node with two appenders pointing at us, or a network that duplicates
packets, must not double-alert. An alert without an executionId is never a
duplicate (as in Butler): nothing tells two such failures apart, and dropping
a real alert is worse than sending one twice; the rate limit governs those.
Clock injected; expiry is a sweep from the oldest key (all keys share one
TTL, so insertion order is expiry order).
"""

from __future__ import annotations

from collections import deque
from hashlib import blake2b
from typing import TYPE_CHECKING, Callable, Iterable

from butler_tw.core.alert import Alert, EventKind

if TYPE_CHECKING:  # annotations only: importing Twisted would load socket and ssl
    from twisted.internet.interfaces import IReactorTime

#: (kind, taskId, executionId), the ids lower-cased.
Key = tuple[EventKind, str, str]


def digest(kind: EventKind, taskId: str, executionId: str) -> bytes:
    """The 16 bytes a key is held as: a 128-bit BLAKE2b of the key, lower-cased.

    Held this way a key costs about 100 bytes instead of 400 (the tuple and its two
    lower-cased copies of 36-character ids): at 2,000 alerts/s and a 10-minute TTL that
    is the difference between 120 MB and 480 MB. Two keys share a digest with a
    probability near 2^-128 per pair: never, in practice.
    """
    text = f"{kind.value}\x00{taskId.lower()}\x00{executionId.lower()}"
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


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
        # The keys held, and the same keys oldest first beside the time each expires (all
        # share one TTL, so the order they came in is the order they expire in).
        self._held: set[bytes] = set()
        self._keys: deque[bytes] = deque()
        self._expiries: deque[float] = deque()

    def seen(self, alert: Alert) -> bool:
        """True if ``alert`` is a duplicate; otherwise remember it and say False.

        An alert with an empty executionId is never a duplicate, nor remembered.
        """
        if self._ttl <= 0 or not alert.executionId.strip():
            return False
        now = self._clock.seconds()
        self._sweep(now)
        key = digest(alert.kind, alert.taskId, alert.executionId)
        if key in self._held:
            return True
        expiresAt = now + self._ttl
        self._hold(key, expiresAt)
        if self._onRemember is not None:
            self._onRemember(alert.kind, (alert.taskId.lower(), alert.executionId.lower()), expiresAt)
        return False

    def restore(self, entries: Iterable[tuple[EventKind, tuple[str, ...], float]]) -> None:
        """Re-arm the keys remembered before a restart: (kind, (taskId, executionId), expiresAt)."""
        latest = dict(zip(self._keys, self._expiries, strict=True))
        for kind, (taskId, executionId), expiresAt in entries:
            key = digest(kind, taskId, executionId)
            latest[key] = max(expiresAt, latest.get(key, 0.0))
        self._rebuild(sorted(latest.items(), key=lambda kv: kv[1]))

    def reconfigure(self, ttl: float) -> None:
        """Take a new TTL (a configuration reload), keeping the keys already seen.

        As for rate-limit windows: a longer TTL applies to keys seen from now
        on; a shorter one also to the keys held, each then expiring at the
        time it was seen plus the new TTL. 0 turns de-duplication off and
        forgets the keys.
        """
        if ttl <= 0:
            self._rebuild([])
        elif 0 < ttl < self._ttl:
            shift = self._ttl - ttl
            self._expiries = deque(at - shift for at in self._expiries)
            self._sweep(self._clock.seconds())
        self._ttl = ttl

    def __len__(self) -> int:
        return len(self._held)

    def _hold(self, key: bytes, expiresAt: float) -> None:
        self._held.add(key)
        self._keys.append(key)
        self._expiries.append(expiresAt)

    def _rebuild(self, entries: list[tuple[bytes, float]]) -> None:
        self._held, self._keys, self._expiries = set(), deque(), deque()
        for key, expiresAt in entries:
            self._hold(key, expiresAt)

    def _sweep(self, now: float) -> None:
        expiries, keys, held = self._expiries, self._keys, self._held
        while expiries and expiries[0] <= now:
            expiries.popleft()
            held.discard(keys.popleft())
