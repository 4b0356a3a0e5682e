"""Make URLs safe to log. Pure.

A webhook URL is a secret. Chat and on-call systems put their tokens in the
query string, in the user-info part, and often in the path itself (Slack
``/services/T…/B…/<token>``, Teams ``/webhookb2/<guid>@<guid>/…/<hex>``,
Discord ``/api/webhooks/<id>/<token>``). Log lines therefore carry
``scheme://host:port/path`` with every path segment that could be a token
replaced by ``***``.

The rule for a path segment: it is shown only if it reads like a word (a
letter, then up to 19 lower-case letters, ``-``, ``_`` or ``.``) or a short
version number (``v2``, ``1``). Anything with digits or capitals inside,
anything long, any GUID, hex or base64 blob is masked (a random token of
letters only almost always has a capital inside). So ``/butler/failed`` and
``/api/v1/alerts`` stay readable, while ``/services/T0000/B0000/XyZ…`` logs as
``/services/***/***/***``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
_WORD = re.compile(r"[A-Za-z][a-z_.\-]{0,19}|v?\d{1,3}")


def redact_path(path: str) -> str:
    """``path`` with every segment that could be a secret replaced by ``***``."""
    if not path:
        return "/"
    return "/".join(seg if seg == "" or _WORD.fullmatch(unquote(seg)) else MASK for seg in path.split("/"))


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: no user info, query, fragment or token-like path segment."""
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
    return f"{parts.scheme.lower()}://{host}:{port}{redact_path(parts.path)}"
