"""The start-up checks (:mod:`butler_tw.daemon.startup`): real sockets, real directories, nothing changed."""

from __future__ import annotations

import os
import socket
from typing import Any

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from butler_tw.config import parse_config
from butler_tw.daemon.startup import EX_CONFIG, StartupError, check, preflight
from butler_tw.delivery.stores.sqlite import DB_NAME, StoreError, connect
from tests.support.daemon import free_udp_port, make_config

#: TEST-NET-1 (RFC 5737): never assigned to a host, so never on this one. Only bound, never sent to.
NOT_HERE = "192.0.2.1"


def document(udp: dict[str, Any] | None = None, **ours: Any) -> dict[str, Any]:
    doc = make_config(butlerWebhook=ours or None)
    doc["Butler"]["udpServerConfig"] = {"enable": True, "serverHost": "127.0.0.1", **(udp or {})}
    doc["Butler"]["udpServerConfig"].setdefault("portTaskFailure", free_udp_port())
    return doc


def hold_udp(testCase: SynchronousTestCase, port: int, host: str = "127.0.0.1") -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    testCase.addCleanup(s.close)


def hold_tcp(testCase: SynchronousTestCase) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    testCase.addCleanup(s.close)
    return s.getsockname()[1]  # type: ignore[no-any-return]


class PreflightTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stateDir = os.path.abspath(self.mktemp())

    def problems(self, doc: dict[str, Any], **kwargs: Any) -> tuple[str, ...]:
        e = self.assertRaises(StartupError, preflight, parse_config(doc), **kwargs)
        return e.problems

    def test_valid(self) -> None:
        doc = document(stateDir=self.stateDir)
        checked = preflight(parse_config(doc))
        self.assertEqual(checked.udpAddress, "127.0.0.1")
        self.assertIsNone(checked.sources)
        self.assertFalse(os.path.exists(self.stateDir), "the check created the state directory")

    def test_exitStatus(self) -> None:
        self.assertEqual(EX_CONFIG, 78)

    def test_udpPortHeld(self) -> None:
        """A port another socket holds (a Butler still running) is found: the check sets no SO_REUSEADDR."""
        doc = document(stateDir=self.stateDir)
        port = doc["Butler"]["udpServerConfig"]["portTaskFailure"]
        hold_udp(self, port)
        self.assertEqual(
            self.problems(doc),
            (f"cannot listen on UDP 127.0.0.1:{port}: the port is in use (is Butler still running?)",),
        )

    def test_udpPortHeldOnEveryAddress(self) -> None:
        """0.0.0.0 conflicts with a socket on 127.0.0.1: the same port."""
        doc = document({"serverHost": "0.0.0.0"}, stateDir=self.stateDir)  # noqa: S104
        port = doc["Butler"]["udpServerConfig"]["portTaskFailure"]
        hold_udp(self, port)
        self.assertEqual(
            self.problems(doc),
            (f"cannot listen on UDP 0.0.0.0:{port}: the port is in use (is Butler still running?)",),
        )

    def test_addressNotOnThisHost(self) -> None:
        doc = document({"serverHost": NOT_HERE, "portTaskFailure": 9998}, stateDir=self.stateDir)
        self.assertEqual(
            self.problems(doc), (f"cannot listen on UDP {NOT_HERE}:9998: that address is not on this host",)
        )

    def test_nameShownWithItsAddress(self) -> None:
        doc = document({"serverHost": "localhost"}, stateDir=self.stateDir)
        checked = preflight(parse_config(doc))
        port = doc["Butler"]["udpServerConfig"]["portTaskFailure"]
        hold_udp(self, port, checked.udpAddress)
        (problem,) = self.problems(doc)
        self.assertEqual(
            problem,
            f"cannot listen on UDP {checked.udpAddress}:{port} (serverHost 'localhost'): "
            "the port is in use (is Butler still running?)",
        )

    def test_unresolvableServerHost(self) -> None:
        doc = document({"serverHost": "no-such-host.invalid"}, stateDir=self.stateDir)
        (problem,) = self.problems(doc)
        self.assertTrue(
            problem.startswith("Butler.udpServerConfig.serverHost: cannot resolve 'no-such-host.invalid': "),
            problem,
        )

    def test_httpPortHeld(self) -> None:
        port = hold_tcp(self)
        listen = f"tcp:{port}:interface=127.0.0.1"
        doc = document(stateDir=self.stateDir, http={"listen": listen})
        self.assertEqual(
            self.problems(doc),
            (
                f"cannot listen on HTTP 127.0.0.1:{port} (butlerWebhook.http.listen {listen!r}): the port is in use",
            ),
        )

    def test_httpAddressNotOnThisHost(self) -> None:
        listen = f"tcp:9090:interface={NOT_HERE}"
        doc = document(stateDir=self.stateDir, http={"listen": listen})
        (problem,) = self.problems(doc)
        self.assertEqual(
            problem,
            f"cannot listen on HTTP {NOT_HERE}:9090 (butlerWebhook.http.listen {listen!r}): "
            "that address is not on this host",
        )

    def test_everyProblemAtOnce(self) -> None:
        port = hold_tcp(self)
        open(self.stateDir, "w").close()
        doc = document(
            {"serverHost": NOT_HERE, "portTaskFailure": 9998},
            stateDir=self.stateDir,
            http={"listen": f"tcp:{port}:interface=127.0.0.1"},
        )
        problems = self.problems(doc)
        self.assertEqual(len(problems), 3, problems)
        self.assertIn("cannot listen on UDP", problems[0])
        self.assertIn("cannot listen on HTTP", problems[1])
        self.assertIn("butlerWebhook.stateDir", problems[2])

    def test_notListening(self) -> None:
        """listen=False (a reload's check) leaves the ports alone."""
        doc = document({"serverHost": NOT_HERE}, stateDir=self.stateDir)
        self.assertEqual(preflight(parse_config(doc), listen=False).udpAddress, NOT_HERE)

    def test_stateDirIsAFile(self) -> None:
        open(self.stateDir, "w").close()
        doc = document(stateDir=self.stateDir)
        self.assertEqual(
            self.problems(doc), (f"butlerWebhook.stateDir: {self.stateDir} exists and is not a directory",)
        )
        self.assertEqual(preflight(parse_config(doc), stateDir=False).udpAddress, "127.0.0.1")

    def test_stateDirCannotBeCreated(self) -> None:
        """Below a file, nobody can create it (the daemon's own makedirs would fail)."""
        open(self.stateDir, "w").close()
        below = os.path.join(self.stateDir, "a", "b")
        (problem,) = self.problems(document(stateDir=below))
        self.assertEqual(
            problem,
            f"butlerWebhook.stateDir: cannot create the state directory {below}: "
            f"{self.stateDir} is not a directory",
        )

    def test_stateDirNotWritable(self) -> None:
        if os.geteuid() == 0:
            raise SkipTest("root may write anywhere")
        os.makedirs(self.stateDir, mode=0o500)
        self.addCleanup(os.chmod, self.stateDir, 0o700)
        (problem,) = self.problems(document(stateDir=self.stateDir))
        self.assertIn("is not writable for this user", problem)
        (problem,) = self.problems(document(stateDir=os.path.join(self.stateDir, "sub")))
        self.assertIn("cannot create the state directory", problem)

    def test_corruptOutbox(self) -> None:
        """What the daemon's own open refuses, the check refuses, with the same advice; the file is kept."""
        os.makedirs(self.stateDir)
        path = os.path.join(self.stateDir, DB_NAME)
        with open(path, "wb") as f:
            f.write(b"this is not a database, it only sits where one should" * 100)
        (problem,) = self.problems(document(stateDir=self.stateDir))
        self.assertTrue(
            problem.startswith(f"butlerWebhook.stateDir: the outbox database {path} cannot be used")
        )
        self.assertIn("move the file", problem)
        self.assertEqual(sorted(os.listdir(self.stateDir)), [DB_NAME])

    def test_soundOutboxUntouched(self) -> None:
        """An outbox of an earlier run passes, and no -wal or -shm is left behind (it could be root's)."""
        connect(self.stateDir).close()
        before = sorted(os.listdir(self.stateDir))
        with open(os.path.join(self.stateDir, DB_NAME), "rb") as f:
            content = f.read()
        preflight(parse_config(document(stateDir=self.stateDir)))
        self.assertEqual(sorted(os.listdir(self.stateDir)), before)
        with open(os.path.join(self.stateDir, DB_NAME), "rb") as f:
            self.assertEqual(f.read(), content)

    def test_outboxInUse(self) -> None:
        """A running daemon's outbox (open, with its -wal) passes, and is not touched."""
        conn = connect(self.stateDir)
        self.addCleanup(conn.close)
        conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        self.assertIn(DB_NAME + "-wal", os.listdir(self.stateDir))
        preflight(parse_config(document(stateDir=self.stateDir)))
        self.assertEqual(conn.execute("SELECT value FROM meta WHERE key = 'x'").fetchone(), ("y",))

    def test_damagedPages(self) -> None:
        """A valid header over damaged pages: refused by the check as by the daemon's own open."""
        conn = connect(self.stateDir)
        conn.execute("CREATE TABLE filler (x TEXT)")
        conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,) for _ in range(200)])
        conn.close()
        path = os.path.join(self.stateDir, DB_NAME)
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(b"\xff" * 8192)
        (problem,) = self.problems(document(stateDir=self.stateDir))
        self.assertEqual(sorted(os.listdir(self.stateDir)), [DB_NAME])
        refused = self.assertRaises(StoreError, connect, self.stateDir)
        self.assertEqual(problem, f"butlerWebhook.stateDir: {refused}")


class CheckTests(SynchronousTestCase):
    def write(self, doc: Any) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return path

    def test_configErrorIsOneProblem(self) -> None:
        """A ConfigError's text, as it is: its key paths are in it."""
        doc = document(stateDir=os.path.abspath(self.mktemp()))
        doc["Butler"]["udpServerConfig"]["portTaskFailure"] = "x"
        path = self.write(doc)
        e = self.assertRaises(StartupError, check, path)
        (problem,) = e.problems
        self.assertIn(path, problem)
        self.assertIn("Butler.udpServerConfig.portTaskFailure", problem)

    def test_checked(self) -> None:
        doc = document(stateDir=os.path.abspath(self.mktemp()))
        checked = check(self.write(doc))
        self.assertEqual(checked.config.udpPort, doc["Butler"]["udpServerConfig"]["portTaskFailure"])


class BindFallbackTests(SynchronousTestCase):
    """A port taken between the check and the daemon's own bind: the same line, EX_CONFIG, no traceback."""

    def test_udpTakenSinceTheCheck(self) -> None:
        from twisted.internet.protocol import DatagramProtocol
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher

        from butler_tw.daemon.tap import UDPServer

        port = free_udp_port()
        hold_udp(self, port)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        udp = UDPServer(port, DatagramProtocol(), interface="127.0.0.1")
        e = self.assertRaises(SystemExit, udp.privilegedStartService)
        self.assertEqual(e.code, EX_CONFIG)
        critical = [formatEvent(ev) for ev in events if ev.get("log_level") == LogLevel.critical]
        self.assertEqual(
            critical,
            [
                f"cannot listen on UDP 127.0.0.1:{port}: the port is in use (is Butler still running?). Stopping"
            ],
        )
