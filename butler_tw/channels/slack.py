"""``format: slack``: a Slack incoming-webhook message, ``text`` plus Block Kit ``blocks``. Pure.

Slack reads ``&``, ``<`` and ``>`` as control characters (links, mentions),
so each is escaped in every value. Slack's limits per block: a header's text
150 characters, a section's text 3000, a section's fields 10 of 2000 each.
"""

from __future__ import annotations

from typing import Any

from butler_tw.channels.text import facts, title, truncate_escaped
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert

MAX_HEADER = 150
MAX_SECTION = 3000
MAX_FIELD = 2000
MAX_FIELDS = 10
#: The ``text`` fallback (notifications, old clients); Slack cuts beyond 40,000.
MAX_TEXT = 3000

_FENCE = "```"


def escape(text: str) -> str:
    """Slack's escaping: ``&``, ``<``, ``>`` only, as its docs say."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(alert: Alert, webhook: Webhook, timestamp: int) -> dict[str, Any]:
    heading = title(alert)
    fields = [
        {"type": "mrkdwn", "text": truncate_escaped(f"*{label}*\n{value}", MAX_FIELD, escape)}
        for label, value in facts(alert)[:MAX_FIELDS]
    ]
    # The fence cannot be closed early by the message: its own ``` are broken up.
    message = alert.logMessage.replace(_FENCE, "`\u200b``") or "(no log message)"
    inner = truncate_escaped(message, MAX_SECTION - 2 * len(_FENCE) - 2, escape)
    return {
        "text": truncate_escaped(heading, MAX_TEXT, escape),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": truncate_escaped(heading, MAX_HEADER, escape)},
            },
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{_FENCE}\n{inner}\n{_FENCE}"}},
        ],
    }
