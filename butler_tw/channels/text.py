"""What every preset shows of an alert, and the truncation helpers they share. Pure.

Each service has its own limits (characters per field, bytes per message);
a preset cuts the log message (and, defensively, any other value) to fit and
says so with :data:`MARKER`, so that a reader knows the text goes on.
"""

from __future__ import annotations

import hashlib
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


def task_key(alert: Alert, limit: int) -> str:
    """``butler-tw/failed/<taskId>``: one open incident per task and kind (a digest when too long).

    PagerDuty's ``dedup_key`` and Opsgenie's ``alias``: the same task failing
    again updates the incident its first failure opened.
    """
    key = f"butler-tw/{kind_word(alert)}/{alert.taskId}"
    if len(key) <= limit:
        return key
    return f"butler-tw/{kind_word(alert)}/sha256:{hashlib.sha256(alert.taskId.encode()).hexdigest()}"


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
    """``build(message)``, with ``message`` cut (and marked) so that the JSON body has at most ``maxBytes``.

    The longest prefix that fits is found by bisection (a body's size grows
    with the prefix; JSON escapes make characters cost 1 to 6 bytes each).
    """
    tree = build(message)
    if len(dumps(tree)) <= maxBytes:
        return tree
    low, high = 0, len(message)  # build(message[:low] + marker) fits (or low is 0); message[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        if len(dumps(build(message[:mid] + marker))) <= maxBytes:
            low = mid
        else:
            high = mid
    return build(message[:low] + marker)
