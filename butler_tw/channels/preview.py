"""The request a webhook would send, as text, without sending it (``butler-tw render``). Pure.

The URL is redacted as in the logs, every header value but the harmless ones
is replaced by ``<redacted>``, and the body is shown exactly as it would be
sent, except that the webhook's secrets (the PagerDuty ``routingKey``) are
replaced by ``<redacted>`` wherever they appear.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from butler_tw.channels.butler import Request
from butler_tw.config import Webhook
from butler_tw.core.redact import redact_url

REDACTED = "<redacted>"
#: Headers whose values hold no secret.
SHOWN_HEADERS = frozenset({"user-agent", "content-type", "webhook-id", "webhook-timestamp", "content-length"})


def describe(request: Request, webhook: Webhook) -> str:
    """``POST https://host/…``, the headers, a blank line and the body (with its size)."""
    lines = [f"{request.method} {redact_url(request.url, safePath=webhook.logFullPath)}"]
    for name, value in request.headers:
        lines.append(f"{name}: {value if name.lower() in SHOWN_HEADERS else REDACTED}")
    if request.body is None:
        lines += ["", "(no body)"]
        query = _alert_query(request.url, webhook.url)
        if query:
            lines += [f"the alert's fields, appended to the URL's query: {query}"]
        return "\n".join(lines) + "\n"
    text = request.body.decode("utf-8", errors="replace")
    for secret in _secrets(webhook):
        text = text.replace(secret, REDACTED)
    lines += ["", text, "", f"({len(request.body)} bytes)"]
    return "\n".join(lines) + "\n"


def _secrets(webhook: Webhook) -> list[str]:
    found = []
    if webhook.routingKey:
        found.append(webhook.routingKey)
        found.append(json.dumps(webhook.routingKey, ensure_ascii=False)[1:-1])
    return [s for s in found if s]


def _alert_query(sent: str, configured: str) -> str:
    """The part of a GET request's query that the alert added (the configured URL's own may hold a token)."""
    query, own = urlsplit(sent).query, urlsplit(configured).query
    if own:
        return query[len(own) + 1 :] if query.startswith(own + "&") else ""
    return query
