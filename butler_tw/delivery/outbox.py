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
from zope.interface import Attribute, Interface, implementer

from butler_tw.core.alert import Alert, EventKind

#: The last outcome of a delivery whose webhook left the config: at a start
#: or at a reload, its pending deliveries become dead letters saying this.
REMOVED = "webhook removed from the config, or its URL or method changed"


def removed_key(key: str, fingerprint: str) -> str:
    """Where the deliveries of a removed webhook are kept, pending or dead.

    A key no configured webhook has: the position ``key`` may be taken by
    another webhook, and none of these deliveries must ever go there (a
    replayed one becomes a dead letter again).
    """
    return f"{key}@removed-{fingerprint}"


def describe_key(key: str, names: Mapping[str, str]) -> str:
    """How the admin command names the webhook of a stored delivery.

    :param names: config key -> webhook name, for the webhooks configured now.
    """
    if key in names:
        return names[key]
    shown = shown_key(key)
    return shown if shown != key else f"{key} (no longer configured)"


def shown_key(key: str) -> str:
    """``key`` as it may be shown: a removed webhook's without the fingerprint of its URL."""
    position, removed, _ = key.partition("@removed-")
    return f"{position} (removed)" if removed else key


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
    :ivar notBefore: when the receiver's ``Retry-After`` on the last attempt
        ends (clock seconds), 0 when it sent none: a reload that re-times the
        retry keeps it. Not stored: ``dueAt``, which is, already honours it.
    """

    alert: Alert
    webhookKey: str
    acceptedAt: float
    attempts: int = 0
    dueAt: float = 0.0
    state: State = State.PENDING
    lastOutcome: str = ""
    notBefore: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.alert.alertId}/{self.webhookKey}"


@attrs.frozen
class Rebinding:
    """What :meth:`IOutbox.rebind` did to the stored deliveries.

    :ivar moved: old key -> new key, for each webhook now at another position
        (its deliveries followed it).
    :ivar removed: old key -> how many of its pending deliveries became dead
        letters, for each webhook gone from the config or now sending elsewhere.
    """

    moved: Mapping[str, str] = attrs.field(factory=dict)
    removed: Mapping[str, int] = attrs.field(factory=dict)


def match_webhooks(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str | None]:
    """Where each webhook of ``before`` is in ``after``: the pairing a rebind makes.

    Both map config key -> fingerprint (``Webhook.fingerprint``: method and
    URL). A key with the same fingerprint in both is settled and left out of
    the answer. Every other key of ``before`` is paired with the first
    (in key order) unsettled key of ``after`` that has its fingerprint, or
    with ``None`` when there is none: that webhook was removed or now sends
    elsewhere. Pure; the outbox and a configuration reload both use it, so
    deliveries in memory and on disk always follow the same pairing.
    """
    settled = {key for key, fp in before.items() if after.get(key) == fp}
    taken = set(settled)
    changes: dict[str, str | None] = {}
    for key, fp in sorted(before.items()):
        if key in settled:
            continue
        target = next((k for k, f in sorted(after.items()) if f == fp and k not in taken), None)
        if target is not None:
            taken.add(target)
        changes[key] = target
    return changes


class IOutbox(Interface):
    """Where deliveries live between acceptance and their end.

    It also keeps the de-duplication keys (table ``"dedup"``) and rate-limit
    windows (table ``"windows"``) so that a restart forgets neither.
    """

    deadLetterRetention = Attribute(
        "Seconds a dead letter is kept before prune() drops it; may be changed while running."
    )
    healthy = Attribute("False after a write failed and until one succeeds again.")
    lastError = Attribute("Why the last write failed (str), or None.")
    writeErrors = Attribute("How many write batches failed (int).")
    unsavedAlerts = Attribute(
        "Alerts handed on to delivery while their write waits for a retry (int): they count "
        "against butlerWebhook.maxBufferedAlerts, so a dead disk cannot grow memory forever."
    )

    def open() -> None:
        """Get ready to work; called from ``startService``, after twistd forked."""

    def add(alert: Alert, webhookKeys: Sequence[str], now: float) -> Deferred[list[Delivery]]:
        """Record ``alert`` with one pending delivery per webhook, due ``now``."""

    def record(delivery: Delivery) -> None:
        """Store a delivery's new state after an attempt (pending, delivered or dead)."""

    def recent(state: State | None, limit: int) -> Deferred[list[Delivery]]:
        """The ``limit`` most recently accepted pending or dead deliveries (of ``state`` only, if given)."""

    def pending() -> Deferred[list[Delivery]]:
        """The deliveries still pending, to resume at start-up."""

    def rebind(webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        """Reconcile stored deliveries with the webhooks now configured.

        Runs in order with the other writes: what was added or recorded
        before the call is reconciled, what comes after uses the new keys.
        Called at start-up (before :meth:`pending`) and at each configuration
        reload. Webhooks are paired as :func:`match_webhooks` says; moved
        ones take their deliveries along, the pending deliveries of removed
        ones become dead letters (:data:`REMOVED`), and all of a removed
        one's deliveries move to its :func:`removed_key`.

        :param webhooks: config key -> fingerprint of every webhook now.
        :return: fires with what moved and what was removed, or with
            ``None`` when the write failed (it is retried, still in order).
        """

    def requeued() -> Deferred[list[Delivery]]:
        """Deliveries re-queued from outside (``butler-tw replay``) since the last call."""

    def remember(table: str, kind: EventKind, key: tuple[str, ...], expiresAt: float) -> None:
        """Keep a de-duplication key or rate-limit window until ``expiresAt``.

        ``key`` is ``(taskId, executionId)`` in ``dedup``, ``(taskId,)`` in ``windows``.
        """

    def remembered(table: str, now: float) -> list[tuple[EventKind, tuple[str, ...], float]]:
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
        self.deadLetterRetention = 0.0  # dead letters are bounded by count here, not age
        # Nothing to write, so nothing fails.
        self.healthy = True
        self.lastError: str | None = None
        self.writeErrors = 0
        self.unsavedAlerts = 0
        self._webhooks: dict[str, str] = {}

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

    def prune(self) -> None:
        pass

    def close(self) -> Deferred[None]:
        return succeed(None)
