"""UDP intake on real sockets: IPv4, IPv6 and dual stack, big datagrams, errors contained."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.intake import RECEIVE_BUFFER, LogAppenderProtocol
from butler_tw.startup import StartupError, resolve_listen_host
from butler_tw.tap import MAX_PACKET_SIZE


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class IntakeTests(TestCase):
    def listen(self, interface: str, onDatagram: Any) -> int:
        port = reactor.listenUDP(
            0, LogAppenderProtocol(onDatagram), interface=interface, maxPacketSize=MAX_PACKET_SIZE
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def receive(self, n: int) -> tuple[list[bytes], Deferred[list[bytes]]]:
        got: list[bytes] = []
        self.sources: list[str] = []
        done: Deferred[list[bytes]] = Deferred()

        def onDatagram(data: bytes, source: str) -> None:
            got.append(data)
            self.sources.append(source)
            if len(got) == n and not done.called:
                done.callback(got)

        done.addTimeout(10, reactor)
        self.onDatagram = onDatagram
        return got, done

    @staticmethod
    def send(family: int, host: str, port: int, data: bytes) -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.sendto(data, (host, port))

    @inlineCallbacks
    def test_ipv4(self) -> Any:
        got, done = self.receive(1)
        port = self.listen("127.0.0.1", self.onDatagram)
        self.send(socket.AF_INET, "127.0.0.1", port, b"hello")
        yield done
        self.assertEqual((got, self.sources), ([b"hello"], ["127.0.0.1"]))

    @inlineCallbacks
    def test_dualStack(self) -> Any:
        """``::`` receives from IPv4 and IPv6 senders alike."""
        if not has_ipv6():
            raise self.skipTest("no IPv6 on this machine")
        got, done = self.receive(2)
        port = self.listen("::", self.onDatagram)
        self.send(socket.AF_INET6, "::1", port, b"six")
        self.send(socket.AF_INET, "127.0.0.1", port, b"four")
        yield done
        self.assertEqual(sorted(got), [b"four", b"six"])
        self.assertEqual(sorted(self.sources), ["::1", "::ffff:127.0.0.1"])

    @inlineCallbacks
    def test_bigDatagramNotTruncated(self) -> Any:
        """listenUDP's default maxPacketSize (8192) would silently cut this."""
        big = b"/scheduler-task-failed/;" + b"x" * 60000
        got, done = self.receive(1)
        port = self.listen("127.0.0.1", self.onDatagram)
        self.send(socket.AF_INET, "127.0.0.1", port, big)
        yield done
        self.assertEqual(len(got[0]), len(big))

    @inlineCallbacks
    def test_errorInHandlerIsContained(self) -> Any:
        """A handler that raises is logged; the next datagram still arrives."""
        got: list[bytes] = []
        done: Deferred[None] = Deferred()

        def onDatagram(data: bytes, source: str) -> None:
            if data == b"boom":
                raise ValueError("boom")
            got.append(data)
            done.callback(None)

        port = self.listen("127.0.0.1", onDatagram)
        self.send(socket.AF_INET, "127.0.0.1", port, b"boom")
        yield deferLater(reactor, 0.05, lambda: None)
        self.send(socket.AF_INET, "127.0.0.1", port, b"after")
        yield done.addTimeout(10, reactor)
        self.assertEqual(got, [b"after"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_receiveBufferRaised(self) -> None:
        """The socket asks for a large receive buffer (bursts wait in the kernel)."""
        port = reactor.listenUDP(0, LogAppenderProtocol(lambda d, s: None), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        size = port.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Without CAP_NET_ADMIN the kernel caps the request at net.core.rmem_max
        # (and reports double what it grants, for its bookkeeping).
        with open("/proc/sys/net/core/rmem_max") as f:
            cap = int(f.read())
        self.assertGreaterEqual(size, 2 * min(RECEIVE_BUFFER, cap))

    def test_smallGrantWarns(self) -> None:
        """When the kernel grants less than asked, the log names the sysctl that fixes it."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        huge = 2**30  # more than any rmem_max grants
        port = reactor.listenUDP(
            0, LogAppenderProtocol(lambda d, s: None, receiveBuffer=huge), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"sysctl -w net.core.rmem_max={huge}", warnings[0])


class ResolveTests(SynchronousTestCase):
    def test_literalsUnchanged(self) -> None:
        for host in ("0.0.0.0", "::", "127.0.0.1", "::1"):
            self.assertEqual(resolve_listen_host(host), host)

    def test_nameResolved(self) -> None:
        self.assertIn(resolve_listen_host("localhost"), ("127.0.0.1", "::1"))

    def test_unresolvable(self) -> None:
        e = self.assertRaises(StartupError, resolve_listen_host, "no-such-host.invalid")
        self.assertIn("Butler.udpServerConfig.serverHost: cannot resolve 'no-such-host.invalid'", str(e))
