"""A paced UDP player: every datagram to every port, as Qlik sends each alert to every daemon of a site.

Loopback UDP drops nothing as long as the receiving socket's buffer does not
fill; a daemon busy for a moment (a commit, a burst of deliveries) must not
find thousands of datagrams waiting for it. So the player sends at a fixed
rate, catching up after a late tick rather than falling behind::

    player = Player(self, [a.udpPort, b.udpPort], datagrams, perSecond=300)
    done = player.play()
    yield player.reached(len(datagrams) // 3)  # a third of them sent to both ports
    ...
    yield done

A port nobody listens on (a daemon that died) just drops what is sent to it.
The player stops on the test's cleanup, if it has not finished by then.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

HOST = "127.0.0.1"
#: Seconds between two sends.
TICK = 0.01


class Player:
    """Sends ``datagrams``, in order, each to every one of ``ports`` on loopback, ``perSecond`` a second.

    :ivar sent: how many datagrams have been sent (to every port) so far.
    :ivar sentAt: when each was sent (the reactor's clock), in order.
    :ivar errors: sends the kernel refused (per port), which should stay 0.
    """

    def __init__(
        self,
        testCase: TestCase,
        ports: Sequence[int],
        datagrams: Sequence[bytes],
        perSecond: float,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self._reactor = reactor
        self.ports = list(ports)
        self.datagrams = list(datagrams)
        self.perSecond = perSecond
        self.sent = 0
        self.sentAt: list[float] = []
        self.errors = {port: 0 for port in self.ports}
        self._socket: socket.socket | None = None
        self._loop: LoopingCall | None = None
        self._startedAt = 0.0
        self._waiting: list[tuple[int, Deferred[None]]] = []
        testCase.addCleanup(self.stop)

    def play(self) -> Deferred[None]:
        """Start sending; fires once every datagram has been sent (at once if there are none)."""
        assert self._loop is None, "already playing"
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._startedAt = time.monotonic()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        done: Deferred[Any] = self._loop.start(TICK, now=True)
        return done.addBoth(self._stopped)

    def reached(self, n: int) -> Deferred[None]:
        """Fires once ``n`` datagrams have been sent (to every port)."""
        if self.sent >= n:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((n, d))
        return d

    def stop(self) -> None:
        """Stop sending (``play``'s Deferred then fires); safe to call when done."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _tick(self) -> None:
        assert self._socket is not None
        due = min(len(self.datagrams), int((time.monotonic() - self._startedAt) * self.perSecond) + 1)
        while self.sent < due:
            data = self.datagrams[self.sent]
            for port in self.ports:
                try:
                    self._socket.sendto(data, (HOST, port))
                except OSError:
                    self.errors[port] += 1
            self.sent += 1
            self.sentAt.append(self._reactor.seconds())
        still = []
        for n, d in self._waiting:
            if self.sent >= n:
                d.callback(None)
            else:
                still.append((n, d))
        self._waiting = still
        if self.sent >= len(self.datagrams):
            self.stop()

    def _stopped(self, result: Any) -> Failure | None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        return result if isinstance(result, Failure) else None
