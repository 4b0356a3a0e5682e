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
    """Hands every datagram to ``onDatagram``; never lets an error escape.

    An exception escaping ``datagramReceived`` would be logged by Twisted
    without context and the next datagram would still come; catching it here
    lets us say what happened.
    """

    noisy = False  # our own start-up line says more than Twisted's

    def __init__(self, onDatagram: Callable[[bytes], None], receiveBuffer: int = RECEIVE_BUFFER) -> None:
        self._onDatagram = onDatagram
        self._receiveBuffer = receiveBuffer

    def startProtocol(self) -> None:
        sock = self.transport.getHandle()  # type: ignore[union-attr]
        for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, self._receiveBuffer)
                break
            except OSError:
                continue  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by rmem_max
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        host = self.transport.getHost()  # type: ignore[union-attr]
        log.info(
            "Listening for Qlik Sense log-appender datagrams on UDP {host}:{port} (receive buffer {kib} KiB)",
            host=host.host,
            port=host.port,
            kib=got // 1024,
        )

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        try:
            self._onDatagram(datagram)
        except Exception:
            log.failure("Error handling a datagram of {size} bytes", size=len(datagram))
