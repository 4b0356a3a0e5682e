"""What every preset shows of an alert, and the truncation helpers they share. Pure.

Each service has its own limits (characters per field, bytes per message);
a preset cuts the log message (and, defensively, any other value) to fit and
says so with :data:`MARKER`, so that a reader knows the text goes on.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from butler_tw.core.alert import Alert, EventKind

#: Appended to a value that was cut to fit a limit.
MARKER = " … [truncated]"

KIND_WORD = {EventKind.FAILED: "failed", EventKind.ABORTED: "aborted"}


def kind_word(alert: Alert) -> str:
    """``failed`` or ``aborted``: the ``kind`` of templates and presets."""
    return KIND_WORD[alert.kind]


def title(alert: Alert) -> str:
    """``Qlik Sense reload failed: <task name>``."""
    return f"{alert.event}: {alert.taskName}"


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The facts a human reads first, as (label, value)."""
    return [
        ("Host", alert.hostName),
        ("User", alert.user),
        ("Task", alert.taskName),
        ("App", alert.appName),
        ("Time", alert.logTimeStamp),
        ("Execution ID", alert.executionId),
    ]


def truncate(text: str, limit: int, marker: str = MARKER) -> str:
    """``text`` if it has at most ``limit`` characters, else cut with ``marker`` to exactly ``limit``."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


def truncate_escaped(text: str, limit: int, escape: Callable[[str], str], marker: str = MARKER) -> str:
    """``escape(text)`` cut to ``limit`` characters without leaving half an entity (``&am``)."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = _PARTIAL_ENTITY.sub("", escaped[: limit - len(marker)])
    return cut + marker


def dumps(tree: Any) -> bytes:
    """A JSON body: compact, UTF-8 (like Butler's ``JSON.stringify``)."""
    return json.dumps(tree, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fit_bytes(build: Callable[[str], Any], message: str, maxBytes: int, marker: str = MARKER) -> Any:
    """``build(message)``, with ``message`` cut (and marked) until the JSON body has at most ``maxBytes``.

    Every character removed saves at least one byte, so cutting the excess
    (plus the marker) converges in a step or two.
    """
    tree = build(message)
    size = len(dumps(tree))
    text = message
    while size > maxBytes and text:
        keep = max(0, len(text) - (size - maxBytes) - len(marker.encode("utf-8")))
        text = text[:keep]
        tree = build(text + marker)
        size = len(dumps(tree))
    return tree
