"""``butler-tw emit``: sample datagrams, sent to a real UDP socket and read back by the daemon's parser."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from butler_tw.cli import emit
from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.wireformat import Parsed, parse, qlik_timestamp
from tests.support.cli import run_main


class EmitTests(SynchronousTestCase):
    def listen(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind((host, 0))
        s.settimeout(5)
        return s

    def receive(self, s: socket.socket, count: int) -> list[bytes]:
        datagrams = [s.recv(65535) for _ in range(count)]
        s.settimeout(0.2)
        self.assertRaises(socket.timeout, s.recv, 65535)  # no more than count
        return datagrams

    def test_failed(self) -> None:
        """Sample failure datagrams that the daemon's parser takes as alerts, each a new execution."""
        s = self.listen()
        port = s.getsockname()[1]
        status, out, err = run_main("emit", f"127.0.0.1:{port}", "--count", "3")
        self.assertEqual((status, err), (0, ""))
        datagrams = self.receive(s, 3)
        executions = set()
        for data in datagrams:
            result = parse(data)
            assert isinstance(result, Parsed), result
            self.assertIsNone(result.note)
            alert = result.alert
            self.assertEqual(alert.kind, EventKind.FAILED)
            self.assertEqual(alert.taskId, emit.SAMPLE_TASK_ID)
            self.assertEqual(alert.taskName, "Reload of butler-tw sample app")
            self.assertEqual(alert.logMessage, "Max retries reached")
            self.assertEqual(alert.logLevel, "INFO")
            self.assertRegex(alert.logTimeStamp, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$")
            self.assertTrue(data.startswith(b"/scheduler-task-failed/;"))
            self.assertEqual(data.count(b";"), 10)
            self.assertIn(data.decode(), out)
            executions.add(alert.executionId)
        self.assertEqual(len(executions), 3)
        self.assertIn(f"sent 3/3 to 127.0.0.1:{port}", out)

    def test_abortedWithTaskId(self) -> None:
        s = self.listen()
        task = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        status, _, _ = run_main(
            "emit", f"127.0.0.1:{s.getsockname()[1]}", "--event", "aborted", "--task-id", task
        )
        self.assertEqual(status, 0)
        (data,) = self.receive(s, 1)
        self.assertTrue(data.startswith(b"/scheduler-task-aborted/;"))
        result = parse(data)
        assert isinstance(result, Parsed), result
        self.assertEqual(result.alert.kind, EventKind.ABORTED)
        self.assertEqual(result.alert.taskId, task)
        self.assertEqual(result.alert.logMessage, "Execution State Change to Aborting")

    def test_ipv6(self) -> None:
        try:
            s = self.listen(socket.AF_INET6, "::1")
        except OSError:
            raise self.skipTest("no IPv6 loopback here") from None
        port = s.getsockname()[1]
        status, out, _ = run_main("emit", f"[::1]:{port}")
        self.assertEqual(status, 0)
        (data,) = self.receive(s, 1)
        self.assertIsInstance(parse(data), Parsed)
        self.assertIn(f"sent 1/1 to [::1]:{port}", out)

    def test_badTargets(self) -> None:
        for target, message in [
            ("::1:9998", "put an IPv6 address in brackets"),
            ("127.0.0.1", "expected HOST:PORT"),
            (":9998", "expected HOST:PORT"),
            ("127.0.0.1:0", "the port must be a number 1-65535"),
            ("127.0.0.1:70000", "the port must be a number 1-65535"),
            ("[::1]:x", "the port must be a number 1-65535, got 'x'"),
            ("[::1]", "expected [IPv6]:PORT"),
            ("[]:9998", "expected [IPv6]:PORT"),
        ]:
            status, out, err = run_main("emit", target)
            self.assertEqual((status, out), (2, ""), target)
            self.assertIn(message, err, target)

    def test_badCount(self) -> None:
        status, out, err = run_main("emit", "127.0.0.1:9998", "--count", "0")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--count must be at least 1", err)

    def test_nonGuidTaskIdWarned(self) -> None:
        """Sent anyway (to try the daemon's rejection), with a warning."""
        s = self.listen()
        status, _, err = run_main("emit", f"127.0.0.1:{s.getsockname()[1]}", "--task-id", "not-a-guid")
        self.assertEqual(status, 0)
        self.assertIn("is not a lowercase GUID: the daemon will reject these datagrams", err)
        (data,) = self.receive(s, 1)
        self.assertNotIsInstance(parse(data), Parsed)


class SampleDatagramTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """A sample datagram, read by the daemon's parser, gives back the sample's fields."""
        for kind, user, message in (
            (EventKind.FAILED, "SAMPLE\\reload-account", "Max retries reached"),
            (EventKind.ABORTED, "SAMPLE\\admin", "Execution State Change to Aborting"),
        ):
            data = emit.sample_datagram(
                kind, emit.SAMPLE_TASK_ID, "e9d8c7b6-0000-4000-8000-000000000003", 1700000000.5, "sched-01"
            )
            result = parse(data)
            assert isinstance(result, Parsed), result
            self.assertIsNone(result.note)
            self.assertEqual(
                result.alert,
                Alert(
                    kind=kind,
                    hostName="sched-01",
                    user=user,
                    taskName=emit.SAMPLE_TASK_NAME,
                    taskId=emit.SAMPLE_TASK_ID,
                    appName=emit.SAMPLE_APP_NAME,
                    appId=emit.SAMPLE_APP_ID,
                    logTimeStamp=qlik_timestamp(1700000000.5),
                    logLevel="INFO",
                    executionId="e9d8c7b6-0000-4000-8000-000000000003",
                    logMessage=message,
                ),
            )
