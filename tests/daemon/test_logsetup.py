"""``butlerWebhook.log``: JSON lines and the level filter; unit tests, then the real daemon."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.daemon import logsetup
from butler_tw.daemon.logsetup import LIFECYCLE, configure, filtered, json_lines_observer
from tests.support.daemon import Daemon, make_config, sample_datagrams, webhook
from tests.support.receivers import closed_port


class Unprintable:
    def __repr__(self) -> str:
        return "https://user:SECRET@example.com/hook?token=SECRET"


class JsonLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.log = Logger(namespace="butler_tw.test", observer=json_lines_observer(self.out))

    def records(self) -> list[dict[str, Any]]:
        text = self.out.getvalue()
        self.assertNotIn("\x1e", text)  # no record separator: shippers split on new lines
        self.assertTrue(text.endswith("\n"))
        return [json.loads(line) for line in text.splitlines()]

    def test_oneObjectPerLine(self) -> None:
        self.log.warn("Delivery to {webhook} failed: {outcome}", webhook="Teams", outcome="HTTP 500", ms=12)
        self.log.info("second\nline")
        first, second = self.records()
        self.assertEqual(first["level"], "warn")
        self.assertEqual(first["namespace"], "butler_tw.test")
        self.assertEqual(first["message"], "Delivery to Teams failed: HTTP 500")
        self.assertEqual((first["webhook"], first["outcome"], first["ms"]), ("Teams", "HTTP 500", 12))
        self.assertRegex(first["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertEqual(second["message"], "second\nline")  # escaped: still one line

    def test_onlyPlainFields(self) -> None:
        """An object's text could carry a URL: only strings, numbers, booleans and null are written."""
        self.log.info(
            "x",
            thing=Unprintable(),
            things=[Unprintable()],
            items=(1, "a"),
            counts={"a": 1},
            n=None,
            ok=True,
            ratio=float("nan"),
        )
        (record,) = self.records()
        self.assertNotIn("thing", record)
        self.assertNotIn("things", record)
        self.assertEqual((record["items"], record["counts"]), ([1, "a"], {"a": 1}))
        self.assertEqual((record["n"], record["ok"], record["ratio"]), (None, True, "nan"))
        self.assertNotIn("SECRET", self.out.getvalue())

    def test_failure(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("Could not {what}", Failure(), what="divide")
        (record,) = self.records()
        self.assertEqual(record["level"], "critical")
        self.assertEqual(record["error"], "ZeroDivisionError")
        self.assertIn("Traceback", record["traceback"])
        self.assertEqual(record["message"], "Could not divide")

    def test_nonAscii(self) -> None:
        self.log.info("Task {name!r}", name="Rapport försäljning ✓")
        (record,) = self.records()
        self.assertEqual(record["message"], "Task 'Rapport försäljning ✓'")


class Point:
    x = 3

    def name(self) -> str:
        return "called"


class TextLinesTests(SynchronousTestCase):
    """Our text observer writes exactly the line Twisted's ``textFileLogObserver`` would, faster."""

    def events(self) -> list[dict[str, Any]]:
        base = {"log_time": 1764786325.75, "log_namespace": "butler_tw.x", "log_level": LogLevel.info}
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        return [
            {
                **base,
                "log_format": "{event}: task {taskName!r} in {ms} ms",
                "event": "Failed",
                "taskName": "A 'b'",
                "ms": 3,
            },
            {**base, "log_format": "{p.x} and {p.name()}", "p": Point()},  # a call: Twisted's formatter
            {**base, "log_format": "{missing} field"},  # Twisted's "Unable to format event"
            {**base, "log_format": "two\nlines {n:>4}", "n": 7},
            {**base, "log_format": "with system", "log_system": "intake"},
            {"log_format": "no level, namespace or time"},
            {**base, "log_format": ""},
            {**base, "log_format": b"bytes {n}", "n": 1},
            {**base, "log_format": "{}", "": "empty key"},
            {**base, "log_format": "it broke: {why}", "why": "x", "log_failure": failure},
            {**base, "log_format": None, "log_text": "legacy"},
            {**base, "log_level": LogLevel.error, "log_format": "{u}", "u": Unprintable()},
        ]

    def test_sameAsTwisted(self) -> None:
        from twisted.logger import formatEventAsClassicLogText

        for event in self.events():
            out = io.StringIO()
            logsetup.text_observer(out)(dict(event))
            self.assertEqual(out.getvalue(), formatEventAsClassicLogText(dict(event)) or "", event)

    def test_stampPerSecond(self) -> None:
        from twisted.logger import formatTime

        stamp = logsetup._Stamp()
        for when in [100.2, 100.9, 101.0, 99.5, -0.5, 1764786325.999]:
            self.assertEqual(stamp(when), formatTime(when), when)
        self.assertEqual(stamp(None), "-")


class LevelFilterTests(SynchronousTestCase):
    def test_levelAndLifecycle(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="n", observer=filtered(json_lines_observer(out), "warn"))
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log.info("butler-tw is running", **{LIFECYCLE: True})
        messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
        self.assertEqual(messages, ["w", "e", "butler-tw is running"])

    def test_debugPassesAll(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="n", observer=filtered(json_lines_observer(out), "debug"))
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn):
            log.emit(level, "x")
        self.assertEqual(len(out.getvalue().splitlines()), 3)


class ConfigureTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = vars(logsetup._settings).copy()
        self.addCleanup(lambda: [setattr(logsetup._settings, k, v) for k, v in saved.items()])

    def test_textAtDebugLeavesTwistdAlone(self) -> None:
        options: dict[str, Any] = {"logger": None, "syslog": False}
        configure(options, "text", "debug")
        self.assertIsNone(options["logger"])

    def test_textAtInfoFiltersDebug(self) -> None:
        # twistd's own observer logs every level: at info, debug lines must not get through.
        options: dict[str, Any] = {"logger": None, "syslog": False, "logfile": None, "nodaemon": True}
        configure(options, "text", "info")
        self.assertEqual(options["logger"], "butler_tw.daemon.logsetup.observer")
        self.assertEqual((logsetup._settings.format, logsetup._settings.level), ("text", "info"))

    def test_jsonSetsLogger(self) -> None:
        options: dict[str, Any] = {"logger": None, "syslog": False, "logfile": None, "nodaemon": True}
        configure(options, "json", "error")
        self.assertEqual(options["logger"], "butler_tw.daemon.logsetup.observer")
        self.assertEqual((logsetup._settings.format, logsetup._settings.level), ("json", "error"))

    def test_commandLineWins(self) -> None:
        for given in ({"logger": "my.observer", "syslog": False}, {"logger": None, "syslog": True}):
            options = dict(given)
            configure(options, "json", "warn")
            self.assertEqual(options["logger"], given["logger"])


class DaemonLogTests(TestCase):
    @inlineCallbacks
    def test_jsonAtWarn(self) -> Any:
        """Every line of the real daemon's output is a JSON object; info lines are gone, warnings kept."""
        config = make_config(
            failure=[webhook(f"http://127.0.0.1:{closed_port()}/hook", "POST", retrySchedule=[0])],
            butlerWebhook={"shutdownGracePeriod": 5, "log": {"format": "json", "level": "warn"}},
        )
        daemon = Daemon(self, config)
        yield daemon.start()
        daemon.send(sample_datagrams()[0], b"garbage")
        yield daemon.waitForOutput("giving up")
        exit = yield daemon.stopCleanly()
        records = [json.loads(line) for line in exit.output.splitlines() if line.strip()]
        levels = {r["level"] for r in records}
        self.assertLessEqual(levels, {"info", "warn", "error", "critical"})
        infos = [r["message"] for r in records if r["level"] == "info"]
        self.assertEqual(len(infos), 2, infos)  # only the lifecycle lines: running, stopped
        self.assertTrue(infos[0].startswith("butler-tw is running"))
        self.assertTrue(infos[1].startswith("Stopped. Counters"))
        gate = [r for r in records if r["namespace"] == "butler_tw.gate"]
        self.assertEqual(gate[0]["source"], "127.0.0.1")
        (dead,) = [r for r in records if r["namespace"] == "butler_tw.delivery"]
        self.assertEqual((dead["level"], dead["outcome"]), ("error", "connection refused"))

    @inlineCallbacks
    def test_textByDefault(self) -> Any:
        daemon = Daemon(self, make_config())
        yield daemon.start()
        exit = yield daemon.stopCleanly()
        self.assertRegex(exit.output.splitlines()[0], r"^\d{4}-\d\d-\d\dT\S+ \[butler_tw#info\] butler-tw ")
