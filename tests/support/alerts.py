"""Alerts and datagrams for tests: one fixed alert, a datagram for any ids, fresh ids."""

from __future__ import annotations

import uuid

from butler_tw.core.alert import Alert, EventKind

#: One failed-reload alert, every field set (``appId`` empty, as Qlik sends it for some tasks).
ALERT = Alert(
    kind=EventKind.FAILED,
    hostName="h",
    user="D\\u",
    taskName="t",
    taskId="dec2a02a-1680-44ef-8dc2-e2bfb180af87",
    appName="a",
    appId="",
    logTimeStamp="2021-02-16 09:24:59,099",
    logLevel="INFO",
    executionId="14a81bf5-f81c-4047-b1a1-193b0920de28",
    logMessage="Max retries reached",
)


def datagram(kind: str, taskId: str, executionId: str, taskName: str = "Reload Finance KPIs") -> bytes:
    """A well-formed failed or aborted datagram for ``taskId``."""
    message = "Max retries reached" if kind == "failed" else "Execution State Change to Aborting"
    return (
        f"/scheduler-task-{kind}/;pro2-win1;{taskName};Finance KPIs;LAB\\anna;{taskId};"
        f"a4c6e8f0-1b3d-4f5a-8c7e-9d0b2f4a6c81;2025-11-03 10:42:31,870;INFO;{executionId};{message}"
    ).encode()


def new_ids() -> tuple[str, str]:
    """A fresh (taskId, executionId)."""
    return str(uuid.uuid4()), str(uuid.uuid4())
