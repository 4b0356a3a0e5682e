"""UDP intake on real sockets: IPv4, IPv6 and dual stack, big datagrams, errors contained."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.config import DEFAULT_RECEIVE_BUFFER
from butler_tw.daemon.startup import StartupError, resolve_listen_host
from butler_tw.daemon.tap import MAX_PACKET_SIZE
from butler_tw.intake.udp import (
    RECEIVE_BUFFER,
    SO_RCVBUFFORCE,
    SYSCTL_FILE,
    LogAppenderProtocol,
    describe_receive_buffer,
    set_receive_buffer,
)
from tests.support import REPO


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def has_net_admin() -> bool:
    """Whether this process has CAP_NET_ADMIN (bit 12 of CapEff), which SO_RCVBUFFORCE needs."""
    with open("/proc/self/status") as f:
        capEff = next(line.split()[1] for line in f if line.startswith("CapEff:"))
    return bool(int(capEff, 16) >> 12 & 1)


def rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


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
        """The socket gets the receive buffer asked for: past net.core.rmem_max with
        CAP_NET_ADMIN (as root), capped at it without."""
        events = self.capture()
        port = reactor.listenUDP(0, LogAppenderProtocol(lambda d, s: None), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        size = port.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # The kernel reports double what it grants, for its bookkeeping.
        expected = RECEIVE_BUFFER if has_net_admin() else min(RECEIVE_BUFFER, rmem_max())
        self.assertEqual(size, 2 * expected)
        (line,) = [e for e in events if "UDP receive buffer" in formatEvent(e)]
        self.assertEqual((line["granted"], line["forced"]), (expected, has_net_admin()))

    def test_smallGrantWarns(self) -> None:
        """When the kernel grants less than asked, the log says so (and, without force, names the sysctl)."""
        events = self.capture()
        huge = 2**30  # more than rmem_max, and than the kernel's ceiling even with force
        port = reactor.listenUDP(
            0, LogAppenderProtocol(lambda d, s: None, receiveBuffer=huge), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn(f"of the {huge} bytes asked for", warnings[0])
        if has_net_admin():
            self.assertIn("even with SO_RCVBUFFORCE", warnings[0])
        else:
            self.assertIn(f"sysctl -w net.core.rmem_max={huge}", warnings[0])

    def test_withoutCapabilitiesFallsBack(self) -> None:
        """As an unprivileged user, with no capabilities (the systemd unit's case), on a real
        socket: SO_RCVBUFFORCE is refused and SO_RCVBUF gets at most net.core.rmem_max."""
        if not has_net_admin() or shutil.which("setpriv") is None:
            raise self.skipTest("needs root (CAP_NET_ADMIN to drop) and setpriv")
        script = (
            "import socket; from butler_tw.intake.udp import set_receive_buffer\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"print(*set_receive_buffer(s, {RECEIVE_BUFFER}))\n"
        )
        nobody = pwd.getpwnam("nobody")
        for path in (Path(sys.executable), Path(__file__).resolve()):
            for folder in path.parents:
                if not folder.stat().st_mode & stat.S_IXOTH:
                    raise self.skipTest(f"{folder} is closed to other users: 'nobody' cannot run this tree")
        out = subprocess.run(
            [
                "setpriv",
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                sys.executable,
                "-c",
                script,
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        self.assertEqual(out, [str(min(RECEIVE_BUFFER, rmem_max())), "False"])

    def capture(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events


class FakeSocket:
    """setsockopt/getsockopt as Linux does them for the receive buffer."""

    def __init__(self, rmem_max: int, mayForce: bool) -> None:
        self.rmem_max = rmem_max
        self.mayForce = mayForce
        self.rcvbuf = 212992 * 2

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert level == socket.SOL_SOCKET
        if option == SO_RCVBUFFORCE:
            if not self.mayForce:
                raise PermissionError(errno.EPERM, "Operation not permitted")
            self.rcvbuf = 2 * min(value, 2**31 // 2 - 1)
        elif option == socket.SO_RCVBUF:
            self.rcvbuf = 2 * min(value, self.rmem_max)
        else:
            raise AssertionError(option)

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
        return self.rcvbuf


class ReceiveBufferTests(SynchronousTestCase):
    """set_receive_buffer against a fake kernel; describe_receive_buffer, the line an operator reads."""

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise self.skipTest("SO_RCVBUFFORCE is Linux's")

    def test_forced(self) -> None:
        sock = FakeSocket(rmem_max=212992, mayForce=True)
        self.assertEqual(set_receive_buffer(sock, RECEIVE_BUFFER), (RECEIVE_BUFFER, True))

    def test_notPermittedFallsBack(self) -> None:
        sock = FakeSocket(rmem_max=212992, mayForce=False)
        self.assertEqual(set_receive_buffer(sock, RECEIVE_BUFFER), (212992, False))
        sock = FakeSocket(rmem_max=RECEIVE_BUFFER, mayForce=False)
        self.assertEqual(set_receive_buffer(sock, RECEIVE_BUFFER), (RECEIVE_BUFFER, False))

    def test_asAsked(self) -> None:
        for forced in (True, False):
            level, text, fields = describe_receive_buffer(RECEIVE_BUFFER, RECEIVE_BUFFER, forced)
            line = formatEvent({"log_format": text, **fields})
            self.assertEqual(level, LogLevel.info)
            self.assertEqual(
                line,
                f"UDP receive buffer: 8388608 bytes, as asked ({'SO_RCVBUFFORCE' if forced else 'SO_RCVBUF'})",
            )
            self.assertNotIn("sysctl", fields)

    def test_cappedByRmemMax(self) -> None:
        level, text, fields = describe_receive_buffer(RECEIVE_BUFFER, 212992, forced=False)
        line = formatEvent({"log_format": text, **fields})
        self.assertEqual(level, LogLevel.warn)
        self.assertIn("the kernel granted 212992 of the 8388608 bytes asked for", line)
        self.assertIn("`sysctl -w net.core.rmem_max=8388608`", line)
        self.assertIn("see contrib/sysctl.d/60-butler-tw.conf", line)
        self.assertEqual(
            (fields["granted"], fields["requested"], fields["forced"]), (212992, RECEIVE_BUFFER, False)
        )
        self.assertEqual(fields["sysctl"], "sysctl -w net.core.rmem_max=8388608")

    def test_shippedSysctlFileIsEnough(self) -> None:
        """The file named in the warning sets rmem_max to at least the default request."""
        root = str(REPO)
        with open(os.path.join(root, SYSCTL_FILE)) as f:
            settings = dict(
                (k.strip(), v.strip())
                for k, _, v in (line.partition("=") for line in f)
                if k.strip() and not k.strip().startswith("#")
            )
        self.assertGreaterEqual(int(settings["net.core.rmem_max"]), DEFAULT_RECEIVE_BUFFER)

    def test_shortEvenForced(self) -> None:
        level, text, fields = describe_receive_buffer(2**30, 2**30 - 1, forced=True)
        line = formatEvent({"log_format": text, **fields})
        self.assertEqual(level, LogLevel.warn)
        self.assertIn("even with SO_RCVBUFFORCE", line)
        self.assertNotIn("sysctl", line)


class ResolveTests(SynchronousTestCase):
    def test_literalsUnchanged(self) -> None:
        for host in ("0.0.0.0", "::", "127.0.0.1", "::1"):
            self.assertEqual(resolve_listen_host(host), host)

    def test_nameResolved(self) -> None:
        self.assertIn(resolve_listen_host("localhost"), ("127.0.0.1", "::1"))

    def test_unresolvable(self) -> None:
        e = self.assertRaises(StartupError, resolve_listen_host, "no-such-host.invalid")
        self.assertIn("Butler.udpServerConfig.serverHost: cannot resolve 'no-such-host.invalid'", str(e))
