"""A delivery: one accepted alert to one webhook, and the naming of its webhook key.

Values and pure functions only: the outbox (:mod:`butler_tw.delivery.outbox`)
stores these, the dispatcher moves them on, a reload pairs webhooks with
:func:`match_webhooks`, and the admin command names them with
:func:`describe_key`.
"""

from __future__ import annotations

import enum
from typing import Mapping

import attrs

from butler_tw.core.alert import Alert

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
class Page:
    """What :meth:`~butler_tw.delivery.outbox.IOutbox.due` read for one webhook.

    :ivar deliveries: its pending deliveries, earliest due first (at most the limit asked).
    :ivar pending: how many pending deliveries it has in the outbox in all, these included
        (None: not counted, as asked).
    """

    deliveries: list[Delivery]
    pending: int | None = None


@attrs.frozen
class Rebinding:
    """What :meth:`~butler_tw.delivery.outbox.IOutbox.rebind` did to the stored deliveries.

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
