"""The outbox: every accepted alert, as one delivery per webhook, until done.

``IOutbox`` is the seam between accepting an alert and dispatching it: the
dispatcher only talks to this interface, so a durable store (SQLite, or a
store shared by several daemons) replaces the in-memory one without touching
it. An implementation fires ``add``'s Deferred only once the deliveries are
as safe as it can make them; until then the alert does not count as accepted.

The values it stores (:class:`~butler_tw.core.delivery.Delivery`, ...) are in
:mod:`butler_tw.core.delivery`; the stores in :mod:`butler_tw.delivery.stores`.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.delivery import Delivery, Page, Rebinding, State


class AlreadyTaken(Exception):
    """Another daemon sharing the store accepted this alert, or its task's rate-limit window, first."""

    def __init__(self, reason: str, by: str) -> None:
        super().__init__(f"{reason} (taken by {by})")
        #: ``duplicate`` or ``rate_limited``.
        self.reason = reason
        #: The instanceName of the daemon that has it.
        self.by = by


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
    shared = Attribute("Whether several daemons may share this store (bool).")
    cluster = Attribute("What a store shared by several daemons last read of them (a ClusterView), or None.")
    unsavedAlerts = Attribute(
        "Alerts handed on to delivery while their write waits for a retry (int): they count "
        "against butlerWebhook.maxBufferedAlerts, so a dead disk cannot grow memory forever."
    )

    def open() -> None:
        """Get ready to work; called from ``startService``, after twistd forked."""

    def add(
        alert: Alert, webhookKeys: Sequence[str], now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        """Record ``alert`` with one pending delivery per webhook, due ``now``.

        :param window: the alert's rate-limit window (seconds; 0: none). A
            store shared by several daemons decides there, for all of them,
            whether the alert is new and its task's window free: if another
            daemon has the alert or the window already, the Deferred fails
            with :class:`AlreadyTaken` and nothing is stored. A store of one
            daemon leaves both to the in-memory checks.
        """

    def record(delivery: Delivery) -> None:
        """Store a delivery's new state after an attempt (pending, delivered or dead)."""

    def recent(state: State | None, limit: int) -> Deferred[list[Delivery]]:
        """The ``limit`` most recently accepted pending or dead deliveries (of ``state`` only, if given)."""

    def due(webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        """Up to ``limit`` of the pending deliveries of ``webhookKey``, earliest due first.

        How a dispatcher resumes at start-up and reads back what waits in the
        outbox only (butlerWebhook.maxPendingInMemory). With ``count``, the
        page also says how many that webhook has pending in all (a count over
        the index: asked once, at the first read, not at every page). It leaves out what ``butler-tw
        replay`` re-queued (that is :meth:`requeued`'s, so that no delivery
        is handed out twice). A store shared by several daemons claims for
        this one what it returns: its own, and those nobody holds.
        """

    def rebind(webhooks: Mapping[str, str]) -> Deferred[Rebinding | None]:
        """Reconcile stored deliveries with the webhooks now configured.

        Runs in order with the other writes: what was added or recorded
        before the call is reconciled, what comes after uses the new keys.
        Called at start-up (before :meth:`pending`) and at each configuration
        reload. Webhooks are paired as :func:`~butler_tw.core.delivery.match_webhooks` says; moved
        ones take their deliveries along, the pending deliveries of removed
        ones become dead letters (:data:`~butler_tw.core.delivery.REMOVED`), and all of a removed
        one's deliveries move to its :func:`~butler_tw.core.delivery.removed_key`.

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

    def renew(held: Callable[[], Sequence[str]]) -> None:
        """Keep the claim on the deliveries this daemon holds, where a store is shared.

        Called every couple of seconds; a shared store renews its leases as
        often as they need, asking ``held`` for the ids then (a store of one
        daemon does nothing, and never asks).
        """

    def prune() -> None:
        """Drop what is no longer needed (expired keys, old dead letters)."""

    def close() -> Deferred[None]:
        """Flush and release the store."""
