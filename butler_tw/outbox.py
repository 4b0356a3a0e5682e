"""The outbox: every accepted alert, as one delivery per webhook, until done.

``IOutbox`` is the seam between accepting an alert and dispatching it: the
dispatcher only talks to this interface, so a durable store (SQLite, or a
store shared by several daemons) replaces the in-memory one without touching
it. An implementation fires ``add``'s Deferred only once the deliveries are
as safe as it can make them; until then the alert does not count as accepted.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from butler_tw.alert import Alert, EventKind


class State(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@attrs.frozen
class Delivery:
    """One alert to one webhook.

    :ivar webhookKey: the webhook's config key (``Webhook.key``).
    :ivar acceptedAt: when the alert was accepted (clock seconds); the retry
        schedule counts from here.
    :ivar attempts: attempts made so far.
    :ivar dueAt: when the next attempt is due.
    :ivar lastOutcome: what the last attempt came to, for the admin.
    """

    alert: Alert
    webhookKey: str
    acceptedAt: float
    attempts: int = 0
    dueAt: float = 0.0
    state: State = State.PENDING
    lastOutcome: str = ""

    @property
    def id(self) -> str:
        return f"{self.alert.alertId}/{self.webhookKey}"


class IOutbox(Interface):
    """Where deliveries live between acceptance and their end.

    It also keeps the de-duplication keys (table ``"dedup"``) and rate-limit
    windows (table ``"windows"``) so that a restart forgets neither.
    """

    def open() -> None:
        """Get ready to work; called from ``startService``, after twistd forked."""

    def add(alert: Alert, webhookKeys: Sequence[str], now: float) -> Deferred[list[Delivery]]:
        """Record ``alert`` with one pending delivery per webhook, due ``now``."""

    def record(delivery: Delivery) -> None:
        """Store a delivery's new state after an attempt (pending, delivered or dead)."""

    def pending() -> Deferred[list[Delivery]]:
        """The deliveries still pending, to resume at start-up."""

    def rebind(webhooks: Mapping[str, str]) -> dict[str, str | None]:
        """Reconcile stored deliveries with the webhooks now configured.

        :param webhooks: config key -> fingerprint of every webhook now.
        :return: for each stored key whose webhook moved, its new key; for
            each whose webhook is gone (or now sends elsewhere), ``None``, its
            pending deliveries having become dead letters. Synchronous: called
            once at start-up, before :meth:`pending`.
        """

    def requeued() -> Deferred[list[Delivery]]:
        """Deliveries re-queued from outside (``butler-tw replay``) since the last call."""

    def remember(table: str, kind: EventKind, key: str, expiresAt: float) -> None:
        """Keep a de-duplication key or rate-limit window until ``expiresAt``."""

    def remembered(table: str, now: float) -> list[tuple[EventKind, str, float]]:
        """The unexpired keys of ``table``. Synchronous: called once at start-up,
        before the intake starts, so no datagram can race the restore."""

    def prune() -> None:
        """Drop what is no longer needed (expired keys, old dead letters)."""

    def close() -> Deferred[None]:
        """Flush and release the store."""


@implementer(IOutbox)
class MemoryOutbox:
    """Keeps deliveries in memory: fast, and lost when the process ends.

    Dead letters are kept, most recent last, up to ``keepDead``.
    """

    def __init__(self, keepDead: int = 1000) -> None:
        self.live: dict[str, Delivery] = {}
        self.dead: deque[Delivery] = deque(maxlen=keepDead)

    def add(self, alert: Alert, webhookKeys: Sequence[str], now: float) -> Deferred[list[Delivery]]:
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

    def pending(self) -> Deferred[list[Delivery]]:
        return succeed(list(self.live.values()))

    def open(self) -> None:
        pass

    def rebind(self, webhooks: Mapping[str, str]) -> dict[str, str | None]:
        return {}  # nothing outlives the process

    def requeued(self) -> Deferred[list[Delivery]]:
        return succeed([])

    def remember(self, table: str, kind: EventKind, key: str, expiresAt: float) -> None:
        pass

    def remembered(self, table: str, now: float) -> list[tuple[EventKind, str, float]]:
        return []

    def prune(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        return succeed(None)
