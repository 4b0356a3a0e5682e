"""Make URLs safe to log. Pure.

A webhook URL is a secret: chat and on-call systems put their tokens in the
query string or in the user-info part. Log lines carry only
``scheme://host:port/path``.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` of ``url``: no user info, query or fragment."""
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
    return f"{parts.scheme.lower()}://{host}:{port}{parts.path or '/'}"
