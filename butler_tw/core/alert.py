"""The alert: one Qlik Sense reload failure or abort, as a frozen value."""

from __future__ import annotations

import enum
import functools
import hashlib
import uuid

import attrs


class EventKind(enum.Enum):
    """What happened to the reload task.

    The value is the Butler config block that holds the webhooks for it.
    """

    FAILED = "reloadTaskFailure"
    ABORTED = "reloadTaskAborted"

    @property
    def event(self) -> str:
        """The ``event`` field of the payload, exactly as Butler sends it."""
        return _EVENT_TEXT[self]


_EVENT_TEXT = {
    EventKind.FAILED: "Qlik Sense reload failed",
    EventKind.ABORTED: "Qlik Sense reload aborted",
}

#: The payload's field names, in the order of the seed document.
FIELD_ORDER: tuple[str, ...] = (
    "event",
    "hostName",
    "user",
    "taskName",
    "taskId",
    "appName",
    "appId",
    "logTimeStamp",
    "logLevel",
    "executionId",
    "logMessage",
)

_ID_NAMESPACE = uuid.UUID("6c0b7f4e-2f44-4c55-9a5e-1f4a1f7d3b21")


@attrs.frozen
class Alert:
    """A reload failure or abort reported by a Qlik Sense scheduler node.

    Every field is the text the log appender sent, cleaned of control
    characters and bounded in length by the parser.
    """

    kind: EventKind
    hostName: str
    user: str
    taskName: str
    taskId: str
    appName: str
    appId: str
    logTimeStamp: str
    logLevel: str
    executionId: str
    logMessage: str

    @property
    def event(self) -> str:
        return self.kind.event

    @functools.cached_property
    def alertId(self) -> str:
        """A stable id for this alert, the same on every attempt and replay.

        Derived from (kind, taskId, executionId) so that a receiver can
        de-duplicate, and so that the same datagram received twice gets the
        same id. Without an executionId, from every field: two failures of a
        task (their timestamps differ) are then two alerts to a receiver too.
        """
        parts: tuple[str, ...] = (self.kind.value, self.taskId, self.executionId)
        if not self.executionId.strip():
            parts = tuple(value for _, value in self.fields())
        return "msg_" + uuid.uuid5(_ID_NAMESPACE, "\x00".join(parts)).hex

    def fields(self) -> list[tuple[str, str]]:
        """The 11 payload fields as ``(name, value)`` pairs, in seed order."""
        return [(name, getattr(self, name)) for name in FIELD_ORDER]


def fingerprint(data: bytes) -> str:
    """A short digest of raw bytes, for log lines about input we reject."""
    return hashlib.sha256(data).hexdigest()[:12]
