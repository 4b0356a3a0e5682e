"""How the daemon is doing, for ``/health``: the rules are pure, the inputs come from the live parts.

Overall status, in order:

- ``failing`` (HTTP 503): the UDP socket is not listening, the outbox
  cannot be written (alerts would not survive a restart), or an alert was
  shed in the last :data:`RECENT` seconds (one was lost). Act now.
- ``degraded`` (HTTP 200): the daemon works, but a receiver does not, or
  the outbox lags: a webhook's last attempt failed, a delivery was given up
  (dead letter) in the last :data:`RECENT` seconds, a delivery has waited
  longer than :data:`STALE_PENDING` seconds, the alerts waiting to be
  stored passed ``messageQueue.backpressureThreshold``, a source went over
  its per-minute limit recently, or nothing is configured to be sent. 200, because
  restarting butler-tw fixes none of these.
- ``ok`` (HTTP 200) otherwise.

With a shared store (PostgreSQL), ``cluster`` says which instance this is,
every instance sharing the store and what each holds; another instance that
stopped renewing its leases (not cleanly stopped) makes this one "degraded",
and so does the database being unreachable (not "failing": both daemons go
on delivering from memory, and restarting them would not bring it back).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

import attrs

from butler_tw.core.cluster import ClusterView
from butler_tw.delivery.attempts import WebhookHealth

#: A pending delivery older than this makes the daemon "degraded".
STALE_PENDING = 300.0
#: How long a shed alert (failing) or a dead letter (degraded) counts as recent.
RECENT = 900.0


@attrs.frozen
class WebhookState:
    name: str
    key: str
    health: WebhookHealth
    queued: int
    inFlight: int
    oldestPendingAt: float | None
    #: Of ``queued``, about how many wait in the outbox only (beyond butlerWebhook.maxPendingInMemory).
    waitingInOutbox: int = 0


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def report(
    now: float,
    udpListening: bool,
    udpAddress: str,
    storeWritable: bool,
    storeError: str | None,
    webhooks: Iterable[WebhookState],
    lastShedAt: float | None = None,
    backlogged: bool = False,
    lastSourceLimitedAt: float | None = None,
    notSending: str | None = None,
    cluster: ClusterView | None = None,
    instance: str | None = None,
    leaseSeconds: float = 30.0,
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of ``/health``."""
    hooks = list(webhooks)
    pending = [w.oldestPendingAt for w in hooks if w.oldestPendingAt is not None]
    oldest = min(pending) if pending else None
    oldestAge = None if oldest is None else max(0.0, now - oldest)
    problems = []
    if not udpListening:
        problems.append("the UDP socket is not listening")
    shared = instance is not None  # this daemon's name among others: the store is shared
    if not storeWritable and not shared:
        problems.append(f"the outbox cannot be written ({storeError or 'error'})")
    if lastShedAt is not None and now - lastShedAt < RECENT:
        problems.append(f"alerts were shed {now - lastShedAt:.0f} s ago: the outbox could not keep up")
    worries = [
        f"{w.name}: last attempt failed ({w.health.lastFailureReason})" for w in hooks if w.health.failing
    ]
    worries += [
        f"{w.name}: a delivery was given up {now - w.health.lastDead:.0f} s ago (a dead letter)"
        for w in hooks
        if w.health.lastDead is not None and now - w.health.lastDead < RECENT
    ]
    if oldestAge is not None and oldestAge > STALE_PENDING:
        worries.append(f"a delivery has been pending for {oldestAge:.0f} s")
    if backlogged:
        worries.append("the outbox is falling behind (messageQueue.backpressureThreshold passed)")
    if lastSourceLimitedAt is not None and now - lastSourceLimitedAt < RECENT:
        worries.append(
            f"datagrams from a source were dropped by rateLimit.maxMessagesPerMinute "
            f"{now - lastSourceLimitedAt:.0f} s ago: alerts may have been among them"
        )
    if notSending:
        worries.append(notSending)
    if shared and not storeWritable:
        # Shared: the daemons deliver from memory meanwhile, and a restart would not help.
        worries.append(
            f"the shared outbox cannot be written ({storeError or 'error'}): deliveries go on from "
            "memory, and what is kept is written when the database is back"
        )
    if cluster is not None:
        worries += [
            f"instance {m.name} has not renewed its leases for {m.silentFor:.0f} s (is it down?): "
            "its deliveries are taken over as their leases run out"
            for m in cluster.members
            if m.name != instance and not m.stopped and m.silentFor > leaseSeconds
        ]
    status = "failing" if problems else "degraded" if worries else "ok"
    body = {
        "status": status,
        "problems": problems + worries,
        "udp": {"listening": udpListening, "address": udpAddress},
        "outbox": {
            "writable": storeWritable,
            "error": storeError,
            "pending": sum(w.queued + w.inFlight for w in hooks),
            "oldestPendingSeconds": None if oldestAge is None else round(oldestAge, 1),
        },
        **({"cluster": cluster_body(now, cluster, instance, leaseSeconds)} if cluster is not None else {}),
        "webhooks": [
            {
                "name": w.name,
                "key": w.key,
                "status": "failing" if w.health.failing else "ok",
                "lastSuccess": iso(w.health.lastSuccess),
                "lastFailure": iso(w.health.lastFailure),
                "lastFailureReason": w.health.lastFailureReason,
                "consecutiveFailures": w.health.consecutiveFailures,
                "lastDeadLetter": iso(w.health.lastDead),
                "queued": w.queued,
                "waitingInOutbox": w.waitingInOutbox,
                "inFlight": w.inFlight,
            }
            for w in hooks
        ],
    }
    return (503 if status == "failing" else 200), body


def cluster_body(now: float, view: ClusterView, instance: str | None, leaseSeconds: float) -> dict[str, Any]:
    """``/health``'s ``cluster``: this daemon's name, every instance sharing the store, what each holds."""
    return {
        "instance": instance,
        "readSecondsAgo": round(max(0.0, now - view.readAt), 1),
        "pending": view.pending,
        "unowned": view.unowned,
        "dead": view.dead,
        "oldestPendingSeconds": None
        if view.oldestPendingAt is None
        else round(max(0.0, now - view.oldestPendingAt), 1),
        "instances": [
            {
                "name": m.name,
                "host": m.host,
                "pid": m.pid,
                "version": m.version,
                "state": "stopped" if m.stopped else "silent" if m.silentFor > leaseSeconds else "up",
                "lastSeenSecondsAgo": round(m.silentFor, 1),
                "holds": m.holds,
            }
            for m in view.members
        ],
    }
