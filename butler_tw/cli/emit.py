"""``butler-tw emit``: sample Qlik scheduler datagrams, in the wire format, to a daemon's UDP port.

The datagrams are written by :func:`butler_tw.core.wireformat.format_datagram`,
the parser's other half; what they say is the sample's (``SAMPLE_*``).
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from typing import TextIO

from butler_tw.cli.text import host_name, reachable
from butler_tw.config import Config
from butler_tw.core import words
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.wireformat import format_datagram, qlik_timestamp
from butler_tw.daemon.startup import hostport

#: The default taskId of ``emit``'s sample datagrams.
SAMPLE_TASK_ID = "5a3b1e00-0000-4000-8000-b7e5a3b1e000"
SAMPLE_APP_ID = "5a3b1e00-0000-4000-8000-b7e5a3b1e001"
SAMPLE_APP_NAME = "butler-tw sample app"
SAMPLE_TASK_NAME = "Reload of butler-tw sample app"

_MESSAGE = {
    EventKind.FAILED: "Max retries reached",
    EventKind.ABORTED: "Execution State Change to Aborting",
}
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class TargetError(ValueError):
    """A HOST:PORT that cannot be used (the message says why)."""


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` into (host, port)."""
    if text.startswith("["):
        bracketed = re.fullmatch(r"\[([^\]]+)\]:(.*)", text)
        if not bracketed:
            raise TargetError(f"expected [IPv6]:PORT, e.g. [::1]:9998, got {text!r}")
        host, port = bracketed.group(1), bracketed.group(2)
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise TargetError(f"expected HOST:PORT, e.g. 127.0.0.1:9998, got {text!r}")
        if ":" in host:
            raise TargetError(f"put an IPv6 address in brackets, e.g. [::1]:9998, got {text!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TargetError(f"the port must be a number 1-65535, got {port!r}")
    return host, int(port)


def emit_target(config: Config) -> str:
    """Where ``emit`` sends without HOST:PORT: the config's UDP address (loopback for a wildcard)."""
    return hostport(reachable(config.udpHost), config.udpPort)


def sample_datagram(kind: EventKind, taskId: str, executionId: str, now: float, hostName: str) -> bytes:
    """One sample datagram, as the Qlik scheduler's UDP appender sends it."""
    alert = Alert(
        kind=kind,
        hostName=hostName,
        user="SAMPLE\\reload-account" if kind is EventKind.FAILED else "SAMPLE\\admin",
        taskName=SAMPLE_TASK_NAME,
        taskId=taskId,
        appName=SAMPLE_APP_NAME,
        appId=SAMPLE_APP_ID,
        logTimeStamp=qlik_timestamp(now),
        logLevel="INFO",
        executionId=executionId,
        logMessage=_MESSAGE[kind],
    )
    return format_datagram(alert)


def emit(target: str, kind: EventKind, taskId: str, count: int, out: TextIO, err: TextIO) -> int:
    """Send ``count`` sample datagrams to ``target`` (``HOST:PORT``); the exit status."""
    try:
        host, port = parse_target(target)
    except TargetError as e:
        err.write(f"butler-tw emit: {e}\n")
        return 2
    if count < 1:
        err.write("butler-tw emit: --count must be at least 1\n")
        return 2
    if not _GUID.fullmatch(taskId):
        err.write(
            f"butler-tw emit: warning: --task-id {taskId!r} is not a lowercase GUID: "
            "the daemon will reject these datagrams\n"
        )
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as e:
        err.write(f"butler-tw emit: cannot resolve {host!r}: {e.strerror}\n")
        return 2
    shown = hostport(str(address[0]), int(address[1]))
    sender = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for n in range(1, count + 1):
            data = sample_datagram(kind, taskId, str(uuid.uuid4()), time.time(), host_name())
            try:
                sender.sendto(data, address)
            except OSError as e:
                err.write(f"butler-tw emit: cannot send to {shown}: {e.strerror}\n")
                return 1
            out.write(f"sent {n}/{count} to {shown} ({len(data)} bytes):\n  {data.decode('utf-8')}\n")
    finally:
        sender.close()
    sent = words.count(count, f"{kind.value} datagram", f"{kind.value} datagrams")
    out.write(
        f"{sent} sent for task {taskId}. The daemon delivers at most one alert"
        " per task per rateLimit seconds (300 by default): use --task-id for another task.\n"
    )
    return 0
