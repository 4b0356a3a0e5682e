"""What ``butler-tw replay`` does with each dead letter: re-queue it, and where, or why not. Pure.

A re-queued delivery must reach the daemon's dispatcher for the webhook
meant, or the daemon makes it a dead letter again (:meth:`DeliveryService._resume`
for a key it has no dispatcher for; the rebind at a start or reload for a key
whose receiver changed). So a row is stored under the key that, in the
webhooks the daemon has bound (the outbox's ``webhooks`` table), sends where
the target webhook of the config file sends, and that the next rebind to the
file moves to the target: usually the target's own key. A target the daemon
has not bound yet (the file changed since its last start or reload) is
refused, as is a delivery with no webhook to go to.

The daemon counts a re-queued delivery's age (its ``retrySchedule`` and
``maxAge``) from when it takes it up (:meth:`SqliteOutbox.requeued`,
:meth:`SqliteOutbox.pending`), so a replay is never expired for being old.
"""

from __future__ import annotations

from typing import AbstractSet, Mapping, Sequence

import attrs

from butler_tw.config import Webhook
from butler_tw.core.delivery import Delivery, describe_key, match_webhooks, removed_key, shown_key

_REMOVED = "@removed-"

#: Why a delivery is not re-queued (with ``{target}``, the webhook it would go to).
NOWHERE = "no webhook in the config sends where it sent (the same method and URL): name one with --to NAME"
UNKNOWN = "where it sent is not known: name a webhook with --to NAME"
NOT_BOUND = (
    "{target} is not in the configuration the daemon runs with yet: reload the daemon "
    "(systemctl reload butler-webhook) or start it, then replay again"
)
DUPLICATE = "its alert already has a delivery to {target}"


@attrs.frozen
class Decision:
    """One dead letter's fate.

    :ivar source: how its own webhook is named (as ``butler-tw deliveries``
        does, after the daemon's next rebind: never a URL or its fingerprint).
    :ivar key: the key to store it under, pending; ``None`` when refused.
    :ivar target: the config key of the webhook it goes to (or would), or "".
    :ivar refusal: why it is not re-queued (one of the texts above), or "".
    """

    delivery: Delivery
    source: str
    key: str | None = None
    target: str = ""
    refusal: str = ""


def sent_to(key: str, bound: Mapping[str, str]) -> str | None:
    """The fingerprint of where a delivery stored under ``key`` was sent, if known."""
    _, removed, fingerprint = key.partition(_REMOVED)
    if removed:
        return fingerprint
    return bound.get(key)


def plan_replay(
    dead: Sequence[Delivery],
    webhooks: Sequence[Webhook],
    bound: Mapping[str, str],
    existing: AbstractSet[str],
    to: Webhook | None = None,
) -> list[Decision]:
    """Decide, for each dead letter in ``dead``, where it is re-queued or why not.

    :param webhooks: the webhooks of the config file.
    :param bound: config key -> fingerprint of the webhooks the daemon has
        bound (the outbox's ``webhooks`` table).
    :param existing: the ids of every delivery in the outbox.
    :param to: ``--to``: every delivery goes to this webhook; else each goes
        to its own webhook, where the config has it now, or to the first
        webhook (in key order) that sends where it sent.
    """
    file = {w.key: w.fingerprint for w in webhooks}
    # Where the next rebind (start or reload) takes each bound key: its
    # config key in the file, or None. And back: the bound key for each.
    moves = match_webhooks(bound, file)
    after = {key: moves.get(key, key) for key in bound}
    storedAt = {target: key for key, target in after.items() if target is not None}
    names = {w.key: w.name for w in webhooks}
    taken = set(existing)
    decisions = []
    for delivery in dead:
        source = _shown(delivery.webhookKey, bound, after, names)
        target = to.key if to is not None else _own(delivery.webhookKey, bound, after, webhooks)
        if target is None:
            known = sent_to(delivery.webhookKey, bound) is not None
            decisions.append(Decision(delivery, source, refusal=NOWHERE if known else UNKNOWN))
            continue
        name = names[target]
        key = storedAt.get(target)
        if key is None:
            refusal = NOT_BOUND.format(target=name)
            decisions.append(Decision(delivery, source, target=target, refusal=refusal))
            continue
        newId = f"{delivery.alert.alertId}/{key}"
        if newId != delivery.id and newId in taken:
            refusal = DUPLICATE.format(target=name)
            decisions.append(Decision(delivery, source, target=target, refusal=refusal))
            continue
        taken.discard(delivery.id)
        taken.add(newId)
        decisions.append(Decision(delivery, source, key=key, target=target))
    return decisions


def _shown(
    key: str, bound: Mapping[str, str], after: Mapping[str, str | None], names: Mapping[str, str]
) -> str:
    """How the webhook of a delivery stored under ``key`` is named once the daemon rebinds to the file."""
    own = after.get(key)
    if own is not None:
        return names[own]
    if key in bound:  # the rebind will remove it, whatever the file has at that position now
        return shown_key(removed_key(key, bound[key]))
    return describe_key(key, names)


def _own(
    key: str, bound: Mapping[str, str], after: Mapping[str, str | None], webhooks: Sequence[Webhook]
) -> str | None:
    """The config key of the webhook a delivery stored under ``key`` belongs to now, or ``None``."""
    if after.get(key) is not None:
        return after[key]
    fingerprint = sent_to(key, bound)
    return next((w.key for w in sorted(webhooks, key=lambda w: w.key) if w.fingerprint == fingerprint), None)
