"""Build the HTTP request for one alert and one webhook. Pure.

The payload is the seed's: 11 string fields in the seed's order. GET sends
them as a form-encoded query string appended to any query already in the
URL (Butler replaces it and loses tokens); POST and PUT send them as a
compact JSON object, UTF-8, like ``JSON.stringify``.
"""

from __future__ import annotations

import functools
import json
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs

from butler_tw import __version__
from butler_tw.config import Webhook
from butler_tw.core.alert import Alert

USER_AGENT = f"butler-tw/{__version__}"


@attrs.frozen
class Request:
    """One HTTP request, ready to send. ``url`` is a secret: never log it."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


def query_string(alert: Alert) -> str:
    """The alert as ``application/x-www-form-urlencoded`` (space as ``+``)."""
    return urlencode(alert.fields())


def json_body(alert: Alert) -> bytes:
    """The alert as Butler's ``JSON.stringify`` would write it, in UTF-8."""
    return json.dumps(dict(alert.fields()), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def with_query(url: str, query: str) -> str:
    """``url`` with ``query`` appended to its own query; any fragment dropped."""
    parts = urlsplit(url)
    joined = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", joined, ""))


def build_request(alert: Alert, webhook: Webhook, timestamp: int) -> Request:
    """The request for one attempt of one delivery.

    ``webhook-id`` and ``webhook-timestamp`` follow Standard Webhooks: the id
    is the alert's, the same on every attempt, so a receiver can de-duplicate.
    """
    headers = base_headers(alert, timestamp)
    if webhook.method == "GET":
        return Request("GET", with_query(webhook.url, query_string(alert)), headers, None)
    headers += (("Content-Type", "application/json"),)
    return Request(webhook.method, without_fragment(webhook.url), headers, json_body(alert))


def base_headers(alert: Alert, timestamp: int) -> tuple[tuple[str, str], ...]:
    """What every request carries, whatever its format."""
    return (
        ("User-Agent", USER_AGENT),
        ("webhook-id", alert.alertId),
        ("webhook-timestamp", str(timestamp)),
    )


@functools.lru_cache(maxsize=256)
def without_fragment(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(fragment=""))
