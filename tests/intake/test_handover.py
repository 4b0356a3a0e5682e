"""The intake process: frames, the readers, and the child on real sockets with the real reactor."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import deque
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.daemon.tap import MAX_PACKET_SIZE
from butler_tw.intake import handover
from butler_tw.intake.handover import Frames
from butler_tw.intake.reader import SOCKET_FD, BatchReader, LoopReader, dropped_frame, frame
from butler_tw.intake.udp import LogAppenderProtocol
from tests.intake.test_udp import has_ipv6
from tests.support import REPO
from tests.support.processes import subprocess_env

DATAGRAMS = [b"/scheduler-task-failed/;a;b", b"x" * 65507, b"", "é;ü".encode()]


class FramesTests(SynchronousTestCase):
    def test_anySplitGivesTheSameDatagrams(self) -> None:
        stream = b"".join(
            frame(d, src) for d, src in zip(DATAGRAMS, ["10.0.0.1", "::1", "1.2.3.4", "fe80::1"])
        )
        stream += dropped_frame(7)
        for cut in (1, 2, 3, 5, 100, 4096, len(stream)):
            got: list[tuple[bytes, str]] = []
            dropped: list[int] = []
            frames = Frames(lambda d, s: got.append((d, s)), dropped.append)
            for i in range(0, len(stream), cut):
                frames.feed(stream[i : i + cut])
            self.assertEqual(got, list(zip(DATAGRAMS, ["10.0.0.1", "::1", "1.2.3.4", "fe80::1"])), cut)
            self.assertEqual(dropped, [7])

    def test_anErrorIsContained(self) -> None:
        got: list[bytes] = []

        def onDatagram(data: bytes, source: str) -> None:
            if data == b"bad":
                raise ValueError("boom")
            got.append(data)

        # The child's datagrams go through the protocol's guard, as those read in-process do.
        guarded = LogAppenderProtocol(onDatagram)._handle
        Frames(guarded, lambda n: None).feed(frame(b"bad", "1.1.1.1") + frame(b"good", "1.1.1.1"))
        self.assertEqual(got, [b"good"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ReaderTests(SynchronousTestCase):
    """Both readers take every datagram waiting, with the source address recvfrom would give."""

    def check(self, family: int, host: str, make: Any) -> None:
        with (
            socket.socket(family, socket.SOCK_DGRAM) as server,
            socket.socket(family, socket.SOCK_DGRAM) as client,
        ):
            server.bind((host, 0))
            server.setblocking(False)
            sent = [b"%d" % i * (i % 7 + 1) for i in range(150)] + [b"y" * 65507]
            for data in sent:
                client.sendto(data, server.getsockname()[:2])
            reader = make(server)
            got: deque[tuple[bytes, Any]] = deque()
            reader.read(got)
            self.assertEqual([d for d, _ in got], sent)
            self.assertEqual({reader.source(key) for _, key in got}, {host})

    def test_batchIPv4(self) -> None:
        self.check(socket.AF_INET, "127.0.0.1", BatchReader)

    def test_loopIPv4(self) -> None:
        self.check(socket.AF_INET, "127.0.0.1", LoopReader)

    def test_batchIPv6(self) -> None:
        if not has_ipv6():
            raise self.skipTest("no IPv6 loopback")
        self.check(socket.AF_INET6, "::1", BatchReader)


class ReaderProcessTests(SynchronousTestCase):
    def test_handsOverWhatItHoldsWhenStdinCloses(self) -> None:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            server.bind(("127.0.0.1", 0))
            # Sent before the child runs: they wait in the kernel (the default buffer takes about 300).
            for i in range(200):
                client.sendto(b"datagram %d" % i, server.getsockname())
            child = subprocess.Popen(
                [sys.executable, "-m", "butler_tw.intake.reader"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=subprocess_env(),
                cwd=REPO,
                **_socket_as_fd3(server),
            )
            got: list[bytes] = []
            frames = Frames(lambda d, s: got.append(d), lambda n: None)
            # Wait for the first ones, then stop it: what it holds still comes out.
            assert child.stdout is not None
            frames.feed(os.read(child.stdout.fileno(), 65536))
            assert child.stdin is not None
            child.stdin.close()
            frames.feed(child.stdout.read())
            self.assertEqual(child.wait(10), 0)
            self.assertEqual(got, [b"datagram %d" % i for i in range(200)])


def _socket_as_fd3(sock: socket.socket) -> dict[str, Any]:
    """Popen arguments that give the child ``sock`` as file descriptor 3."""
    fd = sock.fileno()

    def move() -> None:
        os.dup2(fd, SOCKET_FD)  # dup2 leaves the copy inheritable; every other fd is close-on-exec

    return {"preexec_fn": move, "close_fds": False}


class IntakeProcessTests(TestCase):
    def setUp(self) -> None:
        self.got: list[tuple[bytes, str]] = []
        self.waiting: list[tuple[int, Deferred[None]]] = []
        self.protocol = LogAppenderProtocol(self.received, reactor=reactor, intakeProcess=True)
        self.port = reactor.listenUDP(0, self.protocol, interface="127.0.0.1", maxPacketSize=MAX_PACKET_SIZE)
        self.addCleanup(self.stop)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.client.close)

    @inlineCallbacks
    def stop(self):  # type: ignore[no-untyped-def]
        intake = self.protocol.intake
        yield self.port.stopListening()
        if intake is not None and intake.pid is not None:
            yield intake.stop()

    def received(self, data: bytes, source: str) -> None:
        self.got.append((data, source))
        for n, d in list(self.waiting):
            if len(self.got) >= n:
                self.waiting.remove((n, d))
                d.callback(None)

    def until(self, n: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.got) >= n:
            d.callback(None)
        else:
            self.waiting.append((n, d))
        return d.addTimeout(10, reactor)

    @inlineCallbacks
    def childRunning(self):  # type: ignore[no-untyped-def]
        for _ in range(100):
            intake = self.protocol.intake
            if intake is not None and intake.pid is not None:
                return intake.pid
            yield deferLater(reactor, 0.05, lambda: None)
        self.fail("the intake process did not start")

    def send(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            self.client.sendto(b"datagram %d" % i, ("127.0.0.1", self.port.getHost().port))

    @inlineCallbacks
    def test_theChildReadsAndHandsOver(self):  # type: ignore[no-untyped-def]
        yield self.childRunning()
        # The reactor no longer reads the socket: every datagram came through the child.
        self.assertNotIn(self.port, reactor.getReaders())
        self.send(200)
        yield self.until(200)
        self.assertEqual(self.got, [(b"datagram %d" % i, "127.0.0.1") for i in range(200)])

    @inlineCallbacks
    def test_aDeadChildIsReplacedAndNothingWaits(self):  # type: ignore[no-untyped-def]
        self.patch(handover, "RESTART_AFTER", 1.0)
        self.protocol.intake._restartAfter = 1.0  # type: ignore[union-attr]
        pid = yield self.childRunning()
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if self.protocol.intake.pid is None:  # type: ignore[union-attr]
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertIn(self.port, reactor.getReaders())  # at once, not at the restart
        self.send(50)
        yield self.until(50)
        self.assertIsNone(self.protocol.intake.pid, "read in-process, before the new child")  # type: ignore[union-attr]
        again = yield self.childRunning()
        self.assertNotEqual(again, pid)
        self.assertEqual(self.protocol.intake.restarts, 1)  # type: ignore[union-attr]
        self.send(50, start=50)
        yield self.until(100)
        self.assertEqual([d for d, _ in self.got], [b"datagram %d" % i for i in range(100)])
