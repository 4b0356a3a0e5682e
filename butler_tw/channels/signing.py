"""A webhook's own headers, its ``auth``, and Standard Webhooks signatures. Pure.

- :func:`apply_headers`: the ``headers:`` of the webhook (each replacing a
  header of the same name, e.g. ``User-Agent``), then its ``auth:`` as
  ``Authorization: Bearer ...``, ``Authorization: Basic base64(user:password)``
  or the named header. With ``auth:``, user info in the URL is dropped: the
  explicit setting wins (the config loader warns about the pair).
- :func:`sign`: ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
  ``<webhook-id>.<webhook-timestamp>.<body>`` (the empty string for a GET),
  as https://www.standardwebhooks.com specifies. Each attempt has its own
  timestamp, so each is signed anew.
- :func:`verify`: what a receiver does with such a request; ``butler-tw
  receive --verify-secret`` uses it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import attrs

from butler_tw.channels.butler import Request
from butler_tw.config import Auth, Webhook
from butler_tw.config.headers import signing_key

#: Seconds a signed request's timestamp may be away from the receiver's clock,
#: either way, as in the Standard Webhooks reference libraries.
DEFAULT_TOLERANCE = 300


def auth_header(auth: Auth) -> tuple[str, str]:
    """The header an :class:`~butler_tw.config.Auth` is sent as."""
    if auth.type == "bearer":
        return ("Authorization", f"Bearer {auth.secret}")
    if auth.type == "basic":
        token = base64.b64encode(f"{auth.username}:{auth.secret}".encode()).decode("ascii")
        return ("Authorization", f"Basic {token}")
    return (auth.name, auth.secret)


def _set(headers: list[tuple[str, str]], name: str, value: str) -> None:
    headers[:] = [(n, v) for n, v in headers if n.lower() != name.lower()]
    headers.append((name, value))


def apply_headers(request: Request, webhook: Webhook) -> Request:
    """``request`` with the webhook's ``headers:`` and ``auth:`` added."""
    if not webhook.headers and webhook.auth is None:
        return request
    headers = list(request.headers)
    for name, value in webhook.headers:
        _set(headers, name, value)
    url = request.url
    if webhook.auth is not None:
        _set(headers, *auth_header(webhook.auth))
        url = _without_userinfo(url)
    return attrs.evolve(request, url=url, headers=tuple(headers))


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def signature(key: bytes, msgId: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "<msgId>.<timestamp>.<body>">``."""
    content = f"{msgId}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _header(headers: Mapping[str, str] | tuple[tuple[str, str], ...], name: str) -> str | None:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for n, v in pairs:
        if n.lower() == name:
            return v
    return None


def sign(request: Request, webhook: Webhook) -> Request:
    """``request`` with its ``webhook-signature``, when the webhook has a signing key."""
    if webhook.signingKey is None:
        return request
    msgId = _header(request.headers, "webhook-id") or ""
    timestamp = _header(request.headers, "webhook-timestamp") or ""
    value = signature(webhook.signingKey, msgId, timestamp, request.body or b"")
    headers = list(request.headers)
    _set(headers, "webhook-signature", value)
    return attrs.evolve(request, headers=tuple(headers))


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> str | None:
    """Check a Standard Webhooks signature: None if the request is genuine, else why not.

    :param secret: ``whsec_<base64>``, as in ``signing.secret`` (a bare
        base64 key is taken too, as the reference libraries do).
    :param headers: the request's headers, names in any case.
    :param body: the raw body (``b""`` for a GET).
    :param now: the receiver's clock (seconds since the epoch).
    :param tolerance: seconds the timestamp may be from ``now``, either way.
    :raises ValueError: when ``secret`` is not a valid secret (says why, not what).
    """
    key = signing_key(secret if secret.startswith("whsec_") else "whsec_" + secret)
    msgId = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    for name, value in (
        ("webhook-id", msgId),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signatures),
    ):
        if not value:
            return f"no {name} header"
    assert msgId is not None and timestamp is not None and signatures is not None
    if not timestamp.isdigit():
        return "webhook-timestamp is not a whole number of seconds"
    age = now - int(timestamp)
    if age > tolerance:
        return f"the timestamp is {age:.0f} s old (more than {tolerance:g} s: a replay, or a clock is wrong)"
    if -age > tolerance:
        return f"the timestamp is {-age:.0f} s ahead (more than {tolerance:g} s: a clock is wrong)"
    expected = signature(key, msgId, timestamp, body).encode("ascii")
    offered = [s for s in signatures.split(" ") if s.startswith("v1,")]
    if not offered:
        return "webhook-signature holds no v1 signature"
    if any(hmac.compare_digest(expected, s.encode("utf-8", "replace")) for s in offered):
        return None
    return "the signature does not match (another secret, or the body or headers were changed)"
