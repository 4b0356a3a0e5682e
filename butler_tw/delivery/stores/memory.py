"""The outbox in memory: fast, and lost when the process ends (``--in-memory-outbox``, tests)."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.delivery import REMOVED, Delivery, Page, Rebinding, State, match_webhooks, removed_key
from butler_tw.delivery.outbox import IOutbox


@implementer(IOutbox)
class MemoryOutbox:
    """Keeps deliveries in memory: fast, and lost when the process ends.

    Dead letters are kept, most recent last, up to ``keepDead``.
    """

    def __init__(self, keepDead: int = 1000) -> None:
        self.live: dict[str, Delivery] = {}
        self.dead: deque[Delivery] = deque(maxlen=keepDead)
        self.deadLetterRetention = 0.0  # dead letters are bounded by count here, not age
        # Nothing to write, so nothing fails.
        self.healthy = True
        self.lastError: str | None = None
        self.writeErrors = 0
        self.unsavedAlerts = 0
        self.shared = False
        self.cluster = None
        self._webhooks: dict[str, str] = {}

    def add(
        self, alert: Alert, webhookKeys: Sequence[str], now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        deliveries = [Delivery(alert, key, acceptedAt=now, dueAt=now) for key in webhookKeys]
        for delivery in deliveries:
            self.live[delivery.id] = delivery
        return succeed(deliveries)

    def record(self, delivery: Delivery) -> None:
        if delivery.state is State.PENDING:
            self.live[delivery.id] = delivery
            return
        self.live.pop(delivery.id, None)
        if delivery.state is State.DEAD:
            self.dead.append(delivery)

    def due(self, webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        mine = [d for d in self.live.values() if d.webhookKey == webhookKey]
        first = heapq.nsmallest(limit, mine, key=lambda d: (d.dueAt, d.id))
        return succeed(Page(first, len(mine) if count else None))

    def recent(self, state: State | None, limit: int) -> Deferred[list[Delivery]]:
        rows = [d for d in [*self.live.values(), *self.dead] if state is None or d.state is state]
        rows.sort(key=lambda d: d.acceptedAt, reverse=True)
        return succeed(rows[:limit])

    def open(self) -> None:
        pass

    def rebind(self, webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        """As in the durable outbox: nothing outlives the process, but a reload moves webhooks too."""
        before, self._webhooks = self._webhooks, dict(webhooks)
        changes = match_webhooks(before, webhooks)
        removed = {key: 0 for key, new in changes.items() if new is None}

        def followed(delivery: Delivery) -> Delivery:
            """A dead letter follows its webhook too, or moves out of the way of its old position."""
            if delivery.webhookKey not in changes:
                return delivery
            new = changes[delivery.webhookKey]
            key = removed_key(delivery.webhookKey, before[delivery.webhookKey]) if new is None else new
            return attrs.evolve(delivery, webhookKey=key)

        self.dead = deque(map(followed, self.dead), maxlen=self.dead.maxlen)
        moving = [d for d in self.live.values() if d.webhookKey in changes]
        for delivery in moving:
            del self.live[delivery.id]
        for delivery in moving:
            new = changes[delivery.webhookKey]
            if new is None:
                removed[delivery.webhookKey] += 1
                key = removed_key(delivery.webhookKey, before[delivery.webhookKey])
                self.dead.append(
                    attrs.evolve(delivery, webhookKey=key, state=State.DEAD, lastOutcome=REMOVED)
                )
            else:
                moved = attrs.evolve(delivery, webhookKey=new)
                self.live[moved.id] = moved
        rebinding = Rebinding({k: v for k, v in changes.items() if v is not None}, removed)
        return succeed(rebinding)

    def requeued(self) -> Deferred[list[Delivery]]:
        return succeed([])

    def remember(self, table: str, kind: EventKind, key: tuple[str, ...], expiresAt: float) -> None:
        pass

    def remembered(self, table: str, now: float) -> list[tuple[EventKind, tuple[str, ...], float]]:
        return []

    def renew(self, held: Callable[[], Sequence[str]]) -> None:
        pass

    def prune(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        return succeed(None)
