"""``format: pagerduty``: a PagerDuty Events API v2 ``trigger`` event. Pure.

``dedup_key`` is the same for every alert of one task and kind, so that
repeated failures of a task group into one incident until it is resolved.
``payload.summary`` is at most 1024 characters; every field of the alert goes
in ``custom_details``.
"""

from __future__ import annotations

import datetime
from typing import Any

from butler_tw.channels.text import kind_word, task_key, title, truncate
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert, EventKind

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_SOURCE = 255

DEFAULT_SEVERITY = {EventKind.FAILED: "error", EventKind.ABORTED: "warning"}


def dedup_key(alert: Alert) -> str:
    """PagerDuty's ``dedup_key``: :func:`~butler_tw.channels.text.task_key`."""
    return task_key(alert, MAX_DEDUP_KEY)


def payload(alert: Alert, webhook: Webhook, timestamp: int) -> dict[str, Any]:
    when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return {
        "routing_key": webhook.routingKey,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert),
        "payload": {
            "summary": truncate(title(alert), MAX_SUMMARY),
            "source": truncate(alert.hostName, MAX_SOURCE) or "qlik-sense",
            "severity": webhook.severity or DEFAULT_SEVERITY[alert.kind],
            "timestamp": when.isoformat(),
            "component": truncate(alert.appName, MAX_SOURCE),
            "group": "qlik-sense-reloads",
            "class": f"reload {kind_word(alert)}",
            "custom_details": {**dict(alert.fields()), "kind": kind_word(alert), "alertId": alert.alertId},
        },
    }
