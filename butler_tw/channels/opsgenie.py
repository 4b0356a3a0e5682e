"""``format: opsgenie``: an Opsgenie Alert API v2 create-alert request. Pure.

Opsgenie authenticates with a ``GenieKey`` header (the entry's ``auth:``),
not in the body. Its limits: ``message`` 130 characters, ``alias`` 512,
``description`` 15,000, ``details`` 8,000 over all keys and values,
``source`` 100, ``entity`` 512, 20 tags of 50.
"""

from __future__ import annotations

from typing import Any

from butler_tw.channels.text import facts, kind_word, task_key, title, truncate
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert, EventKind

MAX_MESSAGE = 130
MAX_ALIAS = 512
MAX_DESCRIPTION = 15000
MAX_DETAILS = 8000
MAX_ENTITY = 512
MAX_SOURCE = 100

DEFAULT_PRIORITY = {EventKind.FAILED: "P3", EventKind.ABORTED: "P4"}


def alias(alert: Alert) -> str:
    """Opsgenie's ``alias``: :func:`~butler_tw.channels.text.task_key`."""
    return task_key(alert, MAX_ALIAS)


def details(alert: Alert) -> dict[str, str]:
    """Every field, the log message cut so that keys and values add up to at most 8,000 characters."""
    found = {**dict(alert.fields()), "kind": kind_word(alert), "alertId": alert.alertId}
    others = {k: truncate(v, 500) for k, v in found.items() if k != "logMessage"}
    used = sum(len(k) + len(v) for k, v in others.items()) + len("logMessage")
    return {**others, "logMessage": truncate(alert.logMessage, MAX_DETAILS - used)}


def payload(alert: Alert, webhook: Webhook, timestamp: int) -> dict[str, Any]:
    lines = [f"{label}: {value}" for label, value in _facts(alert)]
    head = "\n".join(lines) + "\n\n"
    return {
        "message": truncate(title(alert), MAX_MESSAGE),
        "alias": alias(alert),
        "description": head + truncate(alert.logMessage, MAX_DESCRIPTION - len(head)),
        "details": details(alert),
        "entity": truncate(alert.taskName, MAX_ENTITY),
        "source": truncate(f"butler-tw on {alert.hostName}", MAX_SOURCE),
        "tags": ["qlik-sense", f"reload-{kind_word(alert)}"],
        "priority": webhook.priority or DEFAULT_PRIORITY[alert.kind],
    }


def _facts(alert: Alert) -> list[tuple[str, str]]:
    return [(label, truncate(value, 500)) for label, value in facts(alert)]
