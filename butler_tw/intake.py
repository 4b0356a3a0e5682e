"""UDP intake: the log-appender datagrams arrive here. Moves bytes, nothing else."""

from __future__ import annotations

import socket
from typing import Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

log = Logger(namespace="butler_tw.intake")

#: Receive buffer asked of the kernel: a burst of thousands of datagrams
#: must wait in the kernel, not be dropped there, while the reactor is busy.
RECEIVE_BUFFER = 8 * 1024 * 1024


class LogAppenderProtocol(DatagramProtocol):
    """Hands every datagram, with its source address, to ``onDatagram``; never lets an error escape.

    An exception escaping ``datagramReceived`` would be logged by Twisted
    without context and the next datagram would still come; catching it here
    lets us say what happened.
    """

    noisy = False  # our own start-up line says more than Twisted's

    def __init__(self, onDatagram: Callable[[bytes, str], None], receiveBuffer: int = RECEIVE_BUFFER) -> None:
        self._onDatagram = onDatagram
        self._receiveBuffer = receiveBuffer
        #: "host:port" while the socket is open, for /health; None otherwise.
        self.listeningOn: str | None = None

    def startProtocol(self) -> None:
        # Drain the socket on every readiness event: Twisted reads at most
        # 256 KiB per event by default, and while the reactor serves HTTP in
        # between, a burst overflows the kernel buffer.
        self.transport.maxThroughput = 2**31  # type: ignore[union-attr]
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self._receiveBuffer)
                break
            except OSError:
                continue  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max
        # Linux reports twice what it grants (the other half is its bookkeeping).
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        host = self.transport.getHost()  # type: ignore[union-attr]
        self.listeningOn = f"[{host.host}]:{host.port}" if ":" in host.host else f"{host.host}:{host.port}"
        log.info(
            "Listening for Qlik Sense log-appender datagrams on UDP {host}:{port} (receive buffer {kib} KiB)",
            host=host.host,
            port=host.port,
            kib=granted // 1024,
        )
        if granted < self._receiveBuffer:
            log.warn(
                "The kernel granted a receive buffer of {kib} KiB of the {want} KiB asked for: a burst of "
                "alerts may be dropped before butler-tw sees it. Raise the limit with "
                "`sysctl -w net.core.rmem_max={bytes}` (and in /etc/sysctl.d/ to keep it; "
                "see contrib/sysctl.d/60-butler-tw.conf)",
                kib=granted // 1024,
                want=self._receiveBuffer // 1024,
                bytes=self._receiveBuffer,
            )

    def stopProtocol(self) -> None:
        self.listeningOn = None

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            self._onDatagram(datagram, addr[0])
        except Exception:
            log.failure("Error handling a datagram of {size} bytes", size=len(datagram))
