"""UDP intake: the log-appender datagrams arrive here. Moves bytes, nothing else."""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any, Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel

from butler_tw.intake.handover import IntakeProcess

log = Logger(namespace="butler_tw.intake")

#: Receive buffer asked of the kernel: a burst of thousands of datagrams
#: must wait in the kernel, not be dropped there, while the reactor is busy.
RECEIVE_BUFFER = 8 * 1024 * 1024

#: Linux's SO_RCVBUFFORCE (asm-generic/socket.h), which CPython's socket
#: module does not define: SO_RCVBUF past net.core.rmem_max, for a process
#: with CAP_NET_ADMIN.
SO_RCVBUFFORCE = 33

#: The file that raises net.core.rmem_max at boot, as shipped in this repository.
SYSCTL_FILE = "contrib/sysctl.d/60-butler-tw.conf"


def set_receive_buffer(sock: Any, requested: int) -> tuple[int, bool]:
    """Ask the kernel for a receive buffer of ``requested`` bytes on ``sock``.

    SO_RCVBUFFORCE first (Linux only: it needs CAP_NET_ADMIN, which root has
    and the systemd unit has not), then SO_RCVBUF, which Linux silently caps
    at net.core.rmem_max.

    :return: (bytes granted, whether SO_RCVBUFFORCE was allowed). Linux
        reports twice what it grants (the other half is its bookkeeping), so
        the granted size is half of what SO_RCVBUF reads back.
    """
    forced = False
    if sys.platform.startswith("linux"):
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, requested)
            forced = True
        except OSError as e:
            if e.errno != errno.EPERM:
                log.warn("SO_RCVBUFFORCE failed ({error}); trying SO_RCVBUF", error=e.strerror)
    if not forced:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, requested)
        except OSError as e:
            log.warn("SO_RCVBUF failed ({error}); the kernel's default buffer stays", error=e.strerror)
    granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)) // 2
    return granted, forced


def describe_receive_buffer(
    requested: int, granted: int, forced: bool
) -> tuple[LogLevel, str, dict[str, Any]]:
    """The start-up line about the receive buffer: (level, format string, fields).

    Pure, so that what an operator reads is tested for every case. Short of
    the request without force, the cap is net.core.rmem_max, and the line
    names the sysctl that lifts it (rmem_max = the size asked for suffices:
    the kernel doubles after capping). With force, only the kernel's own
    ceiling (just under 1 GiB) can be short of it; no sysctl helps then.
    """
    fields: dict[str, Any] = {
        "granted": granted,
        "requested": requested,
        "forced": forced,
        "how": "SO_RCVBUFFORCE" if forced else "SO_RCVBUF",
    }
    if granted >= requested:
        return LogLevel.info, "UDP receive buffer: {granted} bytes, as asked ({how})", fields
    if forced:
        return (
            LogLevel.warn,
            "UDP receive buffer: the kernel granted {granted} of the {requested} bytes asked for, "
            "even with {how}: that is its ceiling; lower Butler.udpServerConfig.receiveBufferBytes",
            fields,
        )
    fields["sysctl"] = f"sysctl -w net.core.rmem_max={requested}"
    fields["sysctlFile"] = SYSCTL_FILE
    return (
        LogLevel.warn,
        "UDP receive buffer: the kernel granted {granted} of the {requested} bytes asked for "
        "(net.core.rmem_max caps it without CAP_NET_ADMIN): a burst of alerts may be dropped "
        "before butler-tw sees it. Raise the limit with `{sysctl}`, and keep it across reboots "
        "in /etc/sysctl.d/ (see {sysctlFile})",
        fields,
    )


class LogAppenderProtocol(DatagramProtocol):
    """Hands every datagram, with its source address, to ``onDatagram``; never lets an error escape.

    An exception escaping ``datagramReceived`` would be logged by Twisted
    without context and the next datagram would still come; catching it here
    lets us say what happened.
    """

    noisy = False  # our own start-up line says more than Twisted's

    def __init__(
        self,
        onDatagram: Callable[[bytes, str], None],
        receiveBuffer: int = RECEIVE_BUFFER,
        reactor: Any = None,
        intakeProcess: bool = False,
        onDropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._onDatagram = onDatagram
        self._receiveBuffer = receiveBuffer
        self._reactor = reactor
        self._intakeProcess = intakeProcess
        self._onDropped = onDropped
        #: The intake process (butlerWebhook.intakeProcess), once the socket is bound.
        self.intake: IntakeProcess | None = None
        #: "host:port" while the socket is open, for /health; None otherwise.
        self.listeningOn: str | None = None

    def startProtocol(self) -> None:
        # Drain the socket on every readiness event: Twisted reads at most
        # 256 KiB per event by default, and while the reactor serves HTTP in
        # between, a burst overflows the kernel buffer.
        self.transport.maxThroughput = 2**31  # type: ignore[union-attr]
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        granted, forced = set_receive_buffer(sock, self._receiveBuffer)
        host = self.transport.getHost()  # type: ignore[union-attr]
        self.listeningOn = f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
        log.info(
            "Listening for Qlik Sense log-appender datagrams on UDP {host}:{port}",
            host=host.host,
            port=host.port,
        )
        level, text, fields = describe_receive_buffer(self._receiveBuffer, granted, forced)
        log.emit(level, text, **fields)
        if self._intakeProcess:
            # Once the port is fully started (it starts reading after this method).
            # The same guarded handler as datagrams read here: one error never stops the rest.
            self.intake = IntakeProcess(self._reactor, self.transport, self._handle, self._onDropped)
            self._reactor.callLater(0, self.intake.start)

    def stopProtocol(self) -> None:
        self.listeningOn = None
        if self.intake is not None:
            self.intake.stop()

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self._handle(datagram, addr[0])

    def _handle(self, datagram: bytes, source: str) -> None:
        try:
            self._onDatagram(datagram, source)
        except Exception:
            log.failure("Error handling a datagram of {size} bytes", size=len(datagram))
