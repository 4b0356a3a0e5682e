"""``format: discord``: a Discord webhook message with one embed. Pure.

Discord's limits: embed title 256 characters, description 4096, 25 fields of
name 256 and value 1024, and 6000 characters over all of an embed's text.
Mentions in the log message (``@everyone``) are switched off with
``allowed_mentions``.
"""

from __future__ import annotations

import datetime
from typing import Any

from butler_tw.channels.text import facts, title, truncate
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert, EventKind

MAX_TITLE = 256
MAX_DESCRIPTION = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_TOTAL = 6000
MAX_CONTENT = 2000

_COLOR = {EventKind.FAILED: 0xD13438, EventKind.ABORTED: 0xF7A700}


def payload(alert: Alert, webhook: Webhook, timestamp: int) -> dict[str, Any]:
    pairs = [
        (truncate(label, MAX_FIELD_NAME), truncate(value, MAX_FIELD_VALUE) or "-")  # no empty value
        for label, value in facts(alert)[:MAX_FIELDS]
    ]
    fields = [{"name": name, "value": value, "inline": True} for name, value in pairs]
    heading = truncate(title(alert), MAX_TITLE)
    used = len(heading) + sum(len(name) + len(value) for name, value in pairs)
    description = truncate(alert.logMessage or "(no log message)", min(MAX_DESCRIPTION, MAX_TOTAL - used))
    when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return {
        "embeds": [
            {
                "title": heading,
                "description": description,
                "color": _COLOR[alert.kind],
                "fields": fields,
                "timestamp": when.isoformat(),
            }
        ],
        "allowed_mentions": {"parse": []},
    }
