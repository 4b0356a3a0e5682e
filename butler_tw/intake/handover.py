"""The daemon's side of the intake process (:mod:`butler_tw.intake.reader`).

The daemon binds the UDP socket (as before: twistd may bind a privileged port
and then drop privileges) and hands the socket to a child process that only
reads it. The child sends the datagrams back over a pipe in batches; they go
to the same ``onDatagram`` as datagrams read in-process. The reactor stops
reading the socket while the child runs and reads it again at once if the
child dies, so no datagram waits for a restart; the child is then started
again after a short pause.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from butler_tw.core.words import count
from butler_tw.intake.reader import DROPPED, HEADER, MAX_PENDING, SOCKET_FD

log = Logger(namespace="butler_tw.intake")

#: Seconds before a child that died is started again (doubling, up to a minute).
RESTART_AFTER = 1.0


class Frames:
    """Splits the child's byte stream into (payload, source) frames; keeps a partial frame for later."""

    def __init__(self, onDatagram: Callable[[bytes, str], None], onDropped: Callable[[int], None]) -> None:
        self._onDatagram = onDatagram
        self._onDropped = onDropped
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        offset, end = 0, len(buffer)
        size = HEADER.size
        while end - offset >= size:
            length, addressLength = HEADER.unpack_from(buffer, offset)
            start = offset + size + addressLength
            stop = start + length
            if stop > end:
                break
            if addressLength == 0:
                (n,) = DROPPED.unpack_from(buffer, start)
                self._onDropped(n)
            else:
                self._onDatagram(buffer[start:stop], buffer[offset + size : start].decode("ascii", "replace"))
            offset = stop
        self._buffer = buffer[offset:]


class IntakeProcess(ProcessProtocol):
    """Runs the intake child for one bound UDP port; falls back to reading in-process while it is down.

    :param port: the listening ``IListeningPort`` (a Twisted UDP port: it has
        ``fileno``, ``startReading`` and ``stopReading``).
    """

    def __init__(
        self,
        reactor: Any,
        port: Any,
        onDatagram: Callable[[bytes, str], None],
        onDropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._reactor: IReactorProcess = reactor
        self._clock: IReactorTime = reactor
        self._port = port
        self._frames = Frames(onDatagram, self._dropped)
        self._onDropped = onDropped
        self._stopping = False
        self._restartAfter = RESTART_AFTER
        self._restartCall: Any = None
        self._ended: list[Deferred[None]] = []
        #: The child's pid while it runs.
        self.pid: int | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the child; the reactor stops reading the socket once it runs."""
        self._restartCall = None
        if self._stopping:
            return
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG", "LC_ALL")}
        self._reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-m", "butler_tw.intake.reader"],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: self._port.fileno()},
        )

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.pid = self.transport.pid
        self._port.stopReading()
        log.info("Intake process {pid} reads the UDP socket", pid=self.pid)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self._restartAfter = RESTART_AFTER
            self._frames.feed(data)
        elif childFD == 2:
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.warn("Intake process: {line}", line=line)

    def _dropped(self, n: int) -> None:
        # Counted (datagrams_rejected{reason="intake_overflow"}); the child sends at most one
        # such frame per burst of drops, so this line cannot flood the log.
        self._onDropped(n)
        log.error(
            "The intake process dropped {datagrams}: the daemon fell more than {mib} MiB of datagrams behind",
            datagrams=count(n, "datagram", "datagrams"),
            n=n,
            mib=MAX_PENDING // 2**20,
        )

    def processEnded(self, reason: Failure) -> None:
        self.pid = None
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)
        if self._stopping:
            return
        # Read in-process at once: the kernel buffer is small; the child comes back shortly.
        self._port.startReading()
        self.restarts += 1
        log.error(
            "The intake process ended ({why}); reading the UDP socket in the daemon meanwhile, "
            "starting it again in {after:g} s",
            why=str(reason.value),
            after=self._restartAfter,
        )
        self._restartCall = self._clock.callLater(self._restartAfter, self.start)
        self._restartAfter = min(self._restartAfter * 2, 60.0)

    def stop(self) -> Deferred[None]:
        """End the child (its stdin closes; it hands over what it holds first); fires once it ended."""
        self._stopping = True
        if self._restartCall is not None and self._restartCall.active():
            self._restartCall.cancel()
        if self.pid is None or self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        self.transport.closeStdin()  # the child writes what it holds, then ends
        return d
