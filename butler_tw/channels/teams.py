"""``format: teams``: a Teams Workflows (Power Automate) message with an Adaptive Card. Pure.

The shape is the one the "Post to a channel when a webhook request is
received" workflow takes: a ``message`` with one Adaptive Card attachment.
Teams refuses a message over 28 KB, so the log message is cut (and marked)
until the whole body fits in :data:`MAX_BYTES`.
"""

from __future__ import annotations

from typing import Any

from butler_tw.channels.text import facts, fit_bytes, title, truncate
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert, EventKind

#: Teams' limit is 28 KB; this stays under it whether a KB is 1000 or 1024 bytes.
MAX_BYTES = 28_000
#: Any one fact's value at most (the fields are short; this keeps a card readable).
MAX_FACT = 1000

_COLOR = {EventKind.FAILED: "Attention", EventKind.ABORTED: "Warning"}


def payload(alert: Alert, webhook: Webhook, timestamp: int) -> dict[str, Any]:
    factSet = [{"title": label, "value": truncate(value, MAX_FACT)} for label, value in facts(alert)]
    heading = truncate(title(alert), MAX_FACT)

    def build(message: str) -> dict[str, Any]:
        body = [
            {
                "type": "TextBlock",
                "text": heading,
                "weight": "Bolder",
                "size": "Medium",
                "style": "heading",
                "color": _COLOR[alert.kind],
                "wrap": True,
            },
            {"type": "FactSet", "facts": factSet},
            {"type": "TextBlock", "text": message, "wrap": True, "fontType": "Monospace"},
        ]
        return {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": {
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "body": body,
                    },
                }
            ],
        }

    return fit_bytes(build, alert.logMessage, MAX_BYTES)  # type: ignore[no-any-return]
