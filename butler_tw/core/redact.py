"""Make URLs safe to log. Pure.

A webhook URL is a secret. Chat and on-call systems put their tokens in the
query string, in the user-info part, and often in the path itself: Slack
``/services/T…/B…/<token>``, Teams ``/webhookb2/<guid>@<guid>/…/<hex>/…``,
Discord ``/api/webhooks/<id>/<token>``, Zapier ``/hooks/catch/<n>/<id>/``,
Home Assistant ``/api/webhook/<id>``, ntfy ``/<topic>``. Log lines therefore
carry only ``scheme://host:port/path``, and of the path only its first
segment:

* the first segment is shown if it reads like a word (a letter, then up to
  19 lower-case letters, ``-``, ``_`` or ``.``; or a short version number
  such as ``v2``) **and** more path follows it;
* every other non-empty segment is ``***``, whatever it looks like.

So ``/services/T0/B0/XyZ…`` logs as ``/services/***/***/***``, ``/api/v1/alerts``
as ``/api/***/***``, and a path of one segment (``/qlikalerts``, an ntfy topic)
as ``/***``. Empty segments (a trailing ``/``) are kept, so the shape of the
path still shows.

An earlier rule kept every word-like segment and masked only those with
digits or capitals in them; it leaked the tokens that happen to be all
lower-case letters (one Zapier hook id in ten, ntfy topics, Home Assistant ids,
passphrase-like paths). Telling a token from a word by its letters cannot be
made safe, so now only the position decides.

``safePath=True`` (for a webhook whose owner has said its path holds no
secret) shows the whole path; user info, query and fragment are still dropped.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
_WORD = re.compile(r"[A-Za-z][a-z_.\-]{0,19}|v?\d{1,3}")


def redact_path(path: str) -> str:
    """``path`` with every segment but a word-like first one (when more follows) replaced by ``***``."""
    if not path:
        return "/"
    segments = path.split("/")
    nonEmpty = [i for i, seg in enumerate(segments) if seg]
    shown = nonEmpty[0] if len(nonEmpty) > 1 and _WORD.fullmatch(unquote(segments[nonEmpty[0]])) else None
    return "/".join(seg if seg == "" or i == shown else MASK for i, seg in enumerate(segments))


def redact_url(url: str, safePath: bool = False) -> str:
    """``scheme://host:port/path`` of ``url``: no user info, query or fragment, the path redacted.

    :param safePath: show the path as it is (the webhook's owner says it holds
        no secret) instead of :func:`redact_path` of it.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    path = (parts.path or "/") if safePath else redact_path(parts.path)
    return f"{parts.scheme.lower()}://{host}:{port}{path}"
