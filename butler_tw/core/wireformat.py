"""Parse the Qlik Sense scheduler's log-appender datagrams, and write them. Pure: no I/O.

See ``docs/wire-format.md`` for the format. In short, one datagram is::

    TOKEN;hostName;taskName;appName;user;taskId;appId;logTimeStamp;logLevel;executionId;logMessage

Butler splits on every ``;`` and drops anything that is not exactly 11 fields,
so a ``;`` in a task name or message loses the alert. Here the parse is
anchored on the five fixed-shape fields (taskId, appId, timestamp, level,
executionId): the message keeps its ``;``, and a ``;`` in the task or app name
still yields an alert, with the most plausible split and a note saying so.
"""

from __future__ import annotations

import enum
import re
import time
from typing import Union

import attrs

from butler_tw.core.alert import Alert, EventKind

#: Longest value kept for any field, in code points (Butler keeps 500 too).
MAX_FIELD_CHARS = 500

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[,.]\d{1,9})?")
_LEVEL = re.compile(r"[A-Za-z]{3,10}")
# C0 controls, DEL and C1 controls: never let them reach a payload or a log raw.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SLASHES = re.compile(r"/+")


class Ignored(enum.Enum):
    """A well-formed message that is not an alert: counted, not logged."""

    SUCCESS = "success"
    DISTRIBUTE = "distribute"


_TOKENS: dict[str, Union[EventKind, Ignored]] = {
    "/scheduler-task-failed/": EventKind.FAILED,
    "/scheduler-reload-failed/": EventKind.FAILED,
    "/scheduler-reloadtask-failed/": EventKind.FAILED,
    "/scheduler-task-aborted/": EventKind.ABORTED,
    "/scheduler-reload-aborted/": EventKind.ABORTED,
    "/scheduler-task-success/": Ignored.SUCCESS,
    "/scheduler-reloadtask-success/": Ignored.SUCCESS,
    "/scheduler-reload-success/": Ignored.SUCCESS,
    "/scheduler-distribute/": Ignored.DISTRIBUTE,
}


@attrs.frozen
class Parsed:
    """A datagram that is an alert.

    :ivar note: set when the split was a guess (a ``;`` inside the task or
        app name); the alert is still delivered, and the note logged.
    """

    alert: Alert
    note: str | None = None


@attrs.frozen
class Rejected:
    """A datagram that cannot be an alert, and why (safe to log).

    :ivar kind: a short, fixed name for the problem, for counting and for
        throttling its log lines (``reason`` varies with the input).
    """

    reason: str
    kind: str = attrs.field(default="invalid", eq=False)


ParseResult = Union[Parsed, Ignored, Rejected]


def decode(data: bytes) -> str:
    """Decode a datagram: UTF-8, or the Windows ANSI code page if that fails.

    The appender is configured for UTF-8, but an admin who removed
    ``encoding=utf-8`` makes log4net send cp1252. Dropping the alert for that
    would be worse than a wrong glyph, so undecodable bytes never raise.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.removeprefix("\ufeff")


def clean(value: str) -> str:
    """Replace control characters by spaces and bound the length.

    Slicing a ``str`` cuts between code points, never inside a UTF-8
    sequence; surrogates cannot occur in text that :func:`decode` produced.
    """
    return _CONTROL.sub(" ", value)[:MAX_FIELD_CHARS]


def classify(token: str) -> EventKind | Ignored | None:
    """Map a type token to what it means: case-insensitive, ``//`` as ``/``."""
    return _TOKENS.get(_SLASHES.sub("/", token.strip().lower()))


def parse(data: bytes) -> ParseResult:
    """Turn one datagram into an alert, an ignorable message, or a rejection."""
    text = decode(data).rstrip("\r\n\x00")
    if not text.strip():
        return Rejected("empty datagram", "empty")
    parts = text.split(";")
    kind = classify(parts[0])
    if kind is None:
        return Rejected(f"unknown type token {clean(parts[0])[:60]!r}", "unknown-token")
    if isinstance(kind, Ignored):
        return kind
    if len(parts) < 11:
        return Rejected(f"too few fields ({len(parts)}, expected 11)", "too-few-fields")
    anchor = _find_anchor(parts)
    if anchor is None:
        if not _GUID.fullmatch(parts[5]):
            return Rejected("taskId is not a GUID", "bad-task-id")
        if len(parts) != 11:
            return Rejected("cannot find taskId, appId, timestamp, level and executionId", "unparseable")
        anchor = 5  # shapes are off (a custom date format?), but the count is exact
    return _build(kind, parts, anchor)


def _find_anchor(parts: list[str]) -> int | None:
    """Index of taskId: the first place the five fixed-shape fields line up."""
    for i in range(5, len(parts) - 5):
        if (
            _GUID.fullmatch(parts[i])
            and (parts[i + 1] == "" or _GUID.fullmatch(parts[i + 1]))
            and _TIMESTAMP.fullmatch(parts[i + 2])
            and _LEVEL.fullmatch(parts[i + 3])
            and _GUID.fullmatch(parts[i + 4])
        ):
            return i
    return None


def _build(kind: EventKind, parts: list[str], anchor: int) -> Parsed:
    # Before the anchor: hostName, taskName, appName, user. Host names and
    # DIRECTORY\user ids hold no ';', so any extra ';' is in the task or app name.
    names = parts[2 : anchor - 1]
    taskName, appName, note = _split_names(names, appId=parts[anchor + 1])
    alert = Alert(
        kind=kind,
        hostName=clean(parts[1]),
        taskName=clean(taskName),
        appName=clean(appName),
        user=clean(parts[anchor - 1]),
        taskId=parts[anchor],
        appId=clean(parts[anchor + 1]),
        logTimeStamp=clean(parts[anchor + 2]),
        logLevel=clean(parts[anchor + 3]),
        executionId=clean(parts[anchor + 4]),
        logMessage=clean(";".join(parts[anchor + 5 :])),
    )
    return Parsed(alert, note)


def _split_names(names: list[str], appId: str) -> tuple[str, str, str | None]:
    """Split the pieces between hostName and user into (taskName, appName).

    With no extra ``;`` there are exactly two pieces. Otherwise, in order of
    plausibility: a task without an app (empty appId) has an empty appName, so
    everything else is the task name; a task name usually contains its app's
    name ("Reload Sales dashboard" / "Sales dashboard"), so prefer the split
    where that holds (with the longest such app name); failing both, the task
    name takes the extra ``;``.
    """
    if len(names) == 2:
        return names[0], names[1], None
    if appId == "" and names[-1] == "":
        return ";".join(names[:-1]), "", None
    splits = [(";".join(names[:k]), ";".join(names[k:])) for k in range(1, len(names))]
    contained = [(t, a) for t, a in splits if a and a in t]
    if contained:
        # The longest app name that fits: with a ';' in the app name, its last
        # piece alone is also "in the task name", but is the less plausible split.
        task, app = contained[0]
        return task, app, "';' in task or app name: split where the app name is part of the task name"
    task, app = splits[-1]
    return task, app, "';' in task or app name: split ambiguous, task name took the extra ';'"


# --------------------------------------------------------------------------
# Writing: what the scheduler's appender sends (for ``butler-tw emit``)

#: The type token written for each kind (the first that :func:`classify` maps to it).
TOKEN = {EventKind.FAILED: "/scheduler-task-failed/", EventKind.ABORTED: "/scheduler-task-aborted/"}


def qlik_timestamp(now: float) -> str:
    """``now`` as log4net writes it: ``yyyy-MM-dd HH:mm:ss,fff``, local time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"


def format_datagram(alert: Alert, token: str | None = None) -> bytes:
    """``alert`` as one datagram of the scheduler's UDP appender: what :func:`parse` reads back.

    :param token: the type token to write (default: :data:`TOKEN` of its kind).
    """
    fields = (
        TOKEN[alert.kind] if token is None else token,
        alert.hostName,
        alert.taskName,
        alert.appName,
        alert.user,
        alert.taskId,
        alert.appId,
        alert.logTimeStamp,
        alert.logLevel,
        alert.executionId,
        alert.logMessage,
    )
    return ";".join(fields).encode("utf-8")
