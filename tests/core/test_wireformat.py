"""Tests for :mod:`butler_tw.wireformat`: the log-appender datagram parser."""

from __future__ import annotations

import json
import re
import time
import unicodedata

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.alert import FIELD_ORDER, Alert, EventKind
from butler_tw.core.wireformat import (
    MAX_FIELD_CHARS,
    TOKEN,
    Ignored,
    Parsed,
    Rejected,
    classify,
    clean,
    decode,
    format_datagram,
    parse,
    qlik_timestamp,
)
from tests.support import DATA, REPO
from tests.support.receivers import make_alert

#: A verbatim copy of ``shared/samples/datagrams.txt``, so CI needs no checkout of ``shared``.
SAMPLES = DATA / "datagrams.txt"
SHARED_SAMPLES = REPO.parent / "shared" / "samples" / "datagrams.txt"

#: The seed document's JSON example, byte for byte.
SEED_JSON = (
    '{"event":"Qlik Sense reload failed","hostName":"pro2-win1","user":"LAB\\\\goran",'
    '"taskName":"Manually triggered reload of Test failing reloads 2",'
    '"taskId":"dec2a02a-1680-44ef-8dc2-e2bfb180af87","appName":"Test failing reloads 2",'
    '"appId":"e7af59a0-c243-480d-9571-08727551a66f","logTimeStamp":"2021-02-16 09:24:59,099",'
    '"logLevel":"INFO","executionId":"14a81bf5-f81c-4047-b1a1-193b0920de28",'
    '"logMessage":"Max retries reached"}'
)

TASK_ID = "dec2a02a-1680-44ef-8dc2-e2bfb180af87"
APP_ID = "e7af59a0-c243-480d-9571-08727551a66f"
EXEC_ID = "14a81bf5-f81c-4047-b1a1-193b0920de28"
STAMP = "2021-02-16 09:24:59,099"


def samples() -> list[bytes]:
    """The sample datagrams, one per line, without the line ends."""
    return [line for line in SAMPLES.read_bytes().split(b"\n") if line]


def datagram(
    token: str = "/scheduler-task-failed/",
    host: str = "pro2-win1",
    task: str = "Reload Sales",
    app: str = "Sales",
    user: str = "LAB\\goran",
    taskId: str = TASK_ID,
    appId: str = APP_ID,
    stamp: str = STAMP,
    level: str = "INFO",
    execId: str = EXEC_ID,
    message: str = "Max retries reached",
    encoding: str = "utf-8",
) -> bytes:
    fields = [token, host, task, app, user, taskId, appId, stamp, level, execId, message]
    return ";".join(fields).encode(encoding)


def alert_of(result: object) -> Alert:
    assert isinstance(result, Parsed), result
    return result.alert


def is_control(c: str) -> bool:
    return unicodedata.category(c) == "Cc"


class SampleTests(SynchronousTestCase):
    """Every datagram in the samples file."""

    def test_copyIsVerbatim(self) -> None:
        """tests/data/datagrams.txt is the shared samples file, byte for byte."""
        if not SHARED_SAMPLES.exists():
            raise self.skipTest("no shared/ checkout next to the repository")
        self.assertEqual(SAMPLES.read_bytes(), SHARED_SAMPLES.read_bytes())

    def test_tenSamples(self) -> None:
        self.assertEqual(len(samples()), 10)

    def test_firstIsSeedExample(self) -> None:
        """The first sample's alert has exactly the seed's JSON fields."""
        result = parse(samples()[0])
        self.assertIsInstance(result, Parsed)
        self.assertIsNone(result.note)
        alert = result.alert
        self.assertIs(alert.kind, EventKind.FAILED)
        fields = dict(alert.fields())
        self.assertEqual(fields, json.loads(SEED_JSON))
        self.assertEqual(list(fields), list(json.loads(SEED_JSON)))
        self.assertEqual(list(fields), list(FIELD_ORDER))

    def test_all(self) -> None:
        """What each of the ten samples parses to."""
        results = [parse(d) for d in samples()]
        expected: list[object] = [
            (
                EventKind.FAILED,
                "pro2-win1",
                "LAB\\goran",
                "Manually triggered reload of Test failing reloads 2",
                "dec2a02a-1680-44ef-8dc2-e2bfb180af87",
                "Test failing reloads 2",
                "e7af59a0-c243-480d-9571-08727551a66f",
                "2021-02-16 09:24:59,099",
                "INFO",
                "14a81bf5-f81c-4047-b1a1-193b0920de28",
                "Max retries reached",
            ),
            (
                EventKind.FAILED,
                "qlik-sched-02",
                "INTERNAL\\sa_scheduler",
                "Reload Sales dashboard (nightly)",
                "3c9d1f4e-7b2a-4e51-9f0d-5a6b8c7d2e10",
                "Sales dashboard",
                "8e2f6a14-0b3c-4d7e-a9f1-2c4b6d8e0f13",
                "2025-11-03 02:15:07,412",
                "INFO",
                "b71c4e9a-2d3f-4a8b-9c6e-1f0a3b5d7e92",
                "Max retries reached",
            ),
            (
                EventKind.ABORTED,
                "pro2-win1",
                "LAB\\anna",
                "Reload Finance KPIs",
                "5f0e8a2b-9c1d-4e3f-b7a6-0d2c4e6f8a1b",
                "Finance KPIs",
                "a4c6e8f0-1b3d-4f5a-8c7e-9d0b2f4a6c81",
                "2025-11-03 10:42:31,870",
                "INFO",
                "d2e4f6a8-0b1c-4d3e-9f5a-7b8c0d2e4f6a",
                "Execution State Change to Aborting",
            ),
            (
                EventKind.FAILED,
                "qlik-sched-02",
                "INTERNAL\\sa_scheduler",
                "Run nightly QVD cleanup script",
                "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                "",
                "",
                "2025-11-03 03:00:12,005",
                "INFO",
                "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
                "Max retries reached",
            ),
            (
                EventKind.FAILED,
                "qlik-rim-01",
                "INTERNAL\\sa_scheduler",
                "Preload Sales dashboard",
                "6d7e8f90-a1b2-4c3d-9e4f-5a6b7c8d9e01",
                "Sales dashboard",
                "8e2f6a14-0b3c-4d7e-a9f1-2c4b6d8e0f13",
                "2025-11-03 06:30:00,517",
                "WARN",
                "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
                "Could not reserve an executor for task",
            ),
            Ignored.SUCCESS,
            Ignored.SUCCESS,
            Ignored.DISTRIBUTE,
            (
                EventKind.FAILED,
                "pro2-win1",
                "LAB\\goran",
                "Reload Sales EMEA",
                "9b0c1d2e-3f4a-4b5c-8d6e-7f8a9b0c1d2e",
                "Sales EMEA",
                "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
                "2025-11-05 07:01:33,240",
                "ERROR",
                "4b5c6d7e-8f9a-4b0c-9d1e-2f3a4b5c6d7e",
                "Max retries reached; script error: Field 'Amount;Net' not found",
            ),
            (
                EventKind.FAILED,
                "qlik-se-01",
                "INTERNAL\\sa_scheduler",
                "Omladdning F\u00f6rs\u00e4ljning Malm\u00f6",
                "5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f",
                "F\u00f6rs\u00e4ljning Malm\u00f6",
                "d2e3f4a5-b6c7-4d8e-9f0a-1b2c3d4e5f6a",
                "2025-11-05 23:59:59,999",
                "INFO",
                "6d7e8f9a-0b1c-4d2e-8f3a-4b5c6d7e8f9a",
                "Max retries reached",
            ),
        ]
        self.assertEqual(len(results), len(expected))
        for n, (result, want) in enumerate(zip(results, expected)):
            if isinstance(want, Ignored):
                self.assertIs(result, want, f"sample {n}")
                continue
            self.assertIsInstance(result, Parsed, f"sample {n}")
            self.assertIsNone(result.note, f"sample {n}")
            self.assertEqual(result.alert, Alert(*want), f"sample {n}")


class TokenTests(SynchronousTestCase):
    """Type tokens: case-insensitive, repeated slashes count as one."""

    def test_failedTokens(self) -> None:
        for token in (
            "/scheduler-task-failed/",
            "/scheduler-reload-failed/",
            "/scheduler-reloadtask-failed/",
        ):
            self.assertIs(classify(token), EventKind.FAILED, token)
            self.assertIs(alert_of(parse(datagram(token=token))).kind, EventKind.FAILED, token)

    def test_abortedTokens(self) -> None:
        for token in ("/scheduler-task-aborted/", "/scheduler-reload-aborted/"):
            self.assertIs(classify(token), EventKind.ABORTED, token)
            self.assertIs(alert_of(parse(datagram(token=token))).kind, EventKind.ABORTED, token)

    def test_successTokens(self) -> None:
        for token in (
            "/scheduler-task-success/",
            "/scheduler-task-success//",
            "/scheduler-reloadtask-success/",
            "/scheduler-reload-success/",
        ):
            self.assertIs(classify(token), Ignored.SUCCESS, token)
            self.assertIs(parse(datagram(token=token)), Ignored.SUCCESS, token)

    def test_distributeToken(self) -> None:
        self.assertIs(classify("/scheduler-distribute/"), Ignored.DISTRIBUTE)
        self.assertIs(parse(datagram(token="/scheduler-distribute/")), Ignored.DISTRIBUTE)

    def test_ignoredNeedsNoFields(self) -> None:
        """Success and distribute messages are counted whatever follows the token."""
        self.assertIs(parse(b"/scheduler-task-success//"), Ignored.SUCCESS)
        self.assertIs(parse(b"/scheduler-distribute/;x"), Ignored.DISTRIBUTE)

    def test_caseInsensitive(self) -> None:
        self.assertIs(classify("/Scheduler-Task-FAILED/"), EventKind.FAILED)
        self.assertIs(classify("/SCHEDULER-RELOAD-ABORTED/"), EventKind.ABORTED)
        self.assertIs(classify("/Scheduler-Task-Success//"), Ignored.SUCCESS)
        self.assertIs(alert_of(parse(datagram(token="/SCHEDULER-TASK-ABORTED/"))).kind, EventKind.ABORTED)

    def test_repeatedSlashes(self) -> None:
        self.assertIs(classify("//scheduler-task-failed//"), EventKind.FAILED)
        self.assertIs(classify("///scheduler-task-aborted/"), EventKind.ABORTED)
        self.assertIs(classify("/scheduler-task-success///"), Ignored.SUCCESS)
        self.assertIs(alert_of(parse(datagram(token="//scheduler-task-failed//"))).kind, EventKind.FAILED)

    def test_slashesInsideTokenAreNotDashes(self) -> None:
        """Collapsing slashes does not turn '//scheduler//task-failed/' into a known token."""
        self.assertIsNone(classify("//scheduler//task-failed/"))
        self.assertEqual(
            parse(datagram(token="//scheduler//task-failed/")),
            Rejected("unknown type token '//scheduler//task-failed/'"),
        )

    def test_surroundingWhitespace(self) -> None:
        self.assertIs(classify("  /scheduler-task-failed/ "), EventKind.FAILED)

    def test_unknown(self) -> None:
        for token in ("", "/scheduler-task-started/", "scheduler-task-failed", "/scheduler-task-fail/"):
            self.assertIsNone(classify(token), token)


class FieldTests(SynchronousTestCase):
    """Free text in fields: ';', empty names, encodings, control characters, length."""

    def test_semicolonInMessage(self) -> None:
        result = parse(datagram(message="Max retries reached; a;b;;c;"))
        self.assertIsNone(result.note)
        alert = alert_of(result)
        self.assertEqual(alert.logMessage, "Max retries reached; a;b;;c;")
        self.assertEqual(alert.executionId, EXEC_ID)
        self.assertEqual(alert.taskName, "Reload Sales")

    def test_semicolonInTaskNameContainingAppName(self) -> None:
        """The split where the app name is part of the task name wins, with a note."""
        result = parse(datagram(task="Reload; Sales dashboard", app="Sales dashboard"))
        self.assertIsInstance(result, Parsed)
        self.assertEqual(result.alert.taskName, "Reload; Sales dashboard")
        self.assertEqual(result.alert.appName, "Sales dashboard")
        self.assertEqual(result.alert.user, "LAB\\goran")
        self.assertEqual(result.alert.taskId, TASK_ID)
        self.assertEqual(
            result.note, "';' in task or app name: split where the app name is part of the task name"
        )

    def test_semicolonInAppName(self) -> None:
        result = parse(datagram(task="Reload Sales;EMEA", app="Sales;EMEA"))
        self.assertIsInstance(result, Parsed)
        self.assertEqual(result.alert.taskName, "Reload Sales;EMEA")
        self.assertEqual(result.alert.appName, "Sales;EMEA")
        self.assertEqual(
            result.note, "';' in task or app name: split where the app name is part of the task name"
        )

    def test_semicolonInAppNameNotInTaskName(self) -> None:
        """Nothing to go by: the task name takes the extra ';' (a known, noted misparse)."""
        result = parse(datagram(task="Nightly", app="Sales;EMEA"))
        self.assertIsInstance(result, Parsed)
        self.assertEqual(result.alert.taskName, "Nightly;Sales")
        self.assertEqual(result.alert.appName, "EMEA")
        self.assertEqual(
            result.note, "';' in task or app name: split ambiguous, task name took the extra ';'"
        )

    def test_semicolonAmbiguous(self) -> None:
        """No split stands out: the task name takes the extra ';', and the note says so."""
        result = parse(datagram(task="Nightly;job", app="Finance"))
        self.assertIsInstance(result, Parsed)
        self.assertEqual(result.alert.taskName, "Nightly;job")
        self.assertEqual(result.alert.appName, "Finance")
        self.assertEqual(result.alert.logMessage, "Max retries reached")
        self.assertEqual(
            result.note, "';' in task or app name: split ambiguous, task name took the extra ';'"
        )

    def test_semicolonInTaskNameWithoutApp(self) -> None:
        """A task without an app: everything before the empty appName is the task name."""
        result = parse(datagram(task="Cleanup;QVDs;old", app="", appId=""))
        self.assertIsInstance(result, Parsed)
        self.assertEqual(result.alert.taskName, "Cleanup;QVDs;old")
        self.assertEqual(result.alert.appName, "")
        self.assertEqual(result.alert.appId, "")
        self.assertIsNone(result.note)

    def test_semicolonEverywhere(self) -> None:
        result = parse(datagram(task="A;Sales", app="Sales", message="x;y"))
        alert = alert_of(result)
        self.assertEqual((alert.taskName, alert.appName, alert.logMessage), ("A;Sales", "Sales", "x;y"))
        self.assertIsNotNone(result.note)

    def test_emptyAppNameAndAppId(self) -> None:
        result = parse(datagram(task="User sync", app="", appId=""))
        self.assertIsNone(result.note)
        alert = alert_of(result)
        self.assertEqual(alert.taskName, "User sync")
        self.assertEqual(alert.appName, "")
        self.assertEqual(alert.appId, "")
        self.assertEqual(alert.logTimeStamp, STAMP)

    def test_uppercaseGuids(self) -> None:
        alert = alert_of(parse(datagram(taskId=TASK_ID.upper())))
        self.assertEqual(alert.taskId, TASK_ID.upper())

    def test_utf8(self) -> None:
        alert = alert_of(
            parse(datagram(task="Omladdning F\u00f6rs\u00e4ljning \U0001f680", app="\u65e5\u672c"))
        )
        self.assertEqual(alert.taskName, "Omladdning F\u00f6rs\u00e4ljning \U0001f680")
        self.assertEqual(alert.appName, "\u65e5\u672c")

    def test_invalidUtf8FallsBackToCp1252(self) -> None:
        self.assertEqual(decode(b"Malm\xf6"), "Malm\u00f6")
        self.assertEqual(decode(b"\x80 \x93quoted\x94"), "\u20ac \u201cquoted\u201d")
        alert = alert_of(parse(datagram(task="Reload Malm\u00f6", app="Malm\u00f6", encoding="cp1252")))
        self.assertEqual(alert.taskName, "Reload Malm\u00f6")
        self.assertEqual(alert.appName, "Malm\u00f6")
        self.assertEqual(alert.taskId, TASK_ID)

    def test_undefinedCp1252BytesDoNotRaise(self) -> None:
        """0x81 is undefined in cp1252 as well: replaced, not raised."""
        self.assertEqual(decode(b"a\x81b"), "a\ufffdb")

    def test_byteOrderMarkDropped(self) -> None:
        self.assertEqual(decode(b"\xef\xbb\xbfabc"), "abc")
        alert = alert_of(parse(b"\xef\xbb\xbf" + datagram()))
        self.assertIs(alert.kind, EventKind.FAILED)

    def test_controlCharactersBecomeSpaces(self) -> None:
        self.assertEqual(clean("a\rb\nc\td\x00e\x1bf\x7fg\x85h"), "a b c d e f g h")
        alert = alert_of(
            parse(
                datagram(
                    host="pro2\x00win1",
                    task="Reload\tSales",
                    app="Sa\x1b[31mles",
                    user="LAB\\\ngoran",
                    message="Max\r\nretries\x07reached",
                )
            )
        )
        self.assertEqual(alert.hostName, "pro2 win1")
        self.assertEqual(alert.taskName, "Reload Sales")
        self.assertEqual(alert.appName, "Sa [31mles")
        self.assertEqual(alert.user, "LAB\\ goran")
        self.assertEqual(alert.logMessage, "Max  retries reached")

    def test_trailingLineEndStripped(self) -> None:
        alert = alert_of(parse(datagram() + b"\r\n"))
        self.assertEqual(alert.logMessage, "Max retries reached")
        alert = alert_of(parse(datagram() + b"\x00"))
        self.assertEqual(alert.logMessage, "Max retries reached")

    def test_truncation(self) -> None:
        alert = alert_of(parse(datagram(task="t" * 600, app="a" * 501, message="m" * 10000)))
        self.assertEqual(alert.taskName, "t" * MAX_FIELD_CHARS)
        self.assertEqual(alert.appName, "a" * MAX_FIELD_CHARS)
        self.assertEqual(alert.logMessage, "m" * MAX_FIELD_CHARS)
        self.assertEqual(MAX_FIELD_CHARS, 500)

    def test_exactly500Kept(self) -> None:
        alert = alert_of(parse(datagram(message="m" * 500)))
        self.assertEqual(alert.logMessage, "m" * 500)

    def test_truncationKeepsWholeEmoji(self) -> None:
        """500 code points, not 500 UTF-16 units or bytes: an emoji is never split."""
        rocket = "\U0001f680"
        alert = alert_of(parse(datagram(task="x" + rocket * 600, message=rocket * 501)))
        self.assertEqual(alert.taskName, "x" + rocket * 499)
        self.assertEqual(alert.logMessage, rocket * 500)
        # Encodes cleanly: no lone surrogate, no partial UTF-8 sequence.
        self.assertEqual(alert.logMessage.encode("utf-8"), rocket.encode("utf-8") * 500)
        self.assertEqual(alert.logMessage.encode("utf-16-le").decode("utf-16-le"), rocket * 500)

    def test_truncationAfterJoin(self) -> None:
        """A message with ';' is bounded as a whole, after joining."""
        alert = alert_of(parse(datagram(message=";".join(["abcd"] * 200))))
        self.assertEqual(len(alert.logMessage), 500)
        self.assertEqual(alert.logMessage, ";".join(["abcd"] * 200)[:500])

    def test_customTimestampFormatWithExactFieldCount(self) -> None:
        """Shapes off (custom date format) but exactly 11 fields: still an alert."""
        alert = alert_of(parse(datagram(stamp="16/02/2021 09:24")))
        self.assertEqual(alert.logTimeStamp, "16/02/2021 09:24")
        self.assertEqual(alert.taskId, TASK_ID)

    def test_fallbackFieldsAreCleaned(self) -> None:
        """When the fixed-shape anchor fails, appId and executionId are still cleaned and bounded."""
        alert = alert_of(parse(datagram(appId="\x01x" + "y" * 600, execId="\x1bexec")))
        self.assertEqual(alert.appId, " x" + "y" * 498)
        self.assertEqual(alert.executionId, " exec")

    def test_isoTimestamp(self) -> None:
        alert = alert_of(parse(datagram(stamp="2021-02-16T09:24:59.099", message="a;b")))
        self.assertEqual(alert.logTimeStamp, "2021-02-16T09:24:59.099")
        self.assertEqual(alert.logMessage, "a;b")


class RejectionTests(SynchronousTestCase):
    """What cannot be an alert is rejected, with a reason safe to log."""

    def test_empty(self) -> None:
        self.assertEqual(parse(b""), Rejected("empty datagram"))
        self.assertEqual(parse(b"   \r\n"), Rejected("empty datagram"))
        self.assertEqual(parse(b"\x00"), Rejected("empty datagram"))

    def test_tooFewFields(self) -> None:
        self.assertEqual(
            parse(b"/scheduler-task-failed/;pro2-win1;Reload"), Rejected("too few fields (3, expected 11)")
        )
        ten = b";".join(datagram().split(b";")[:10])
        self.assertEqual(parse(ten), Rejected("too few fields (10, expected 11)"))
        self.assertEqual(parse(b"/scheduler-task-aborted/"), Rejected("too few fields (1, expected 11)"))

    def test_taskIdNotGuid(self) -> None:
        self.assertEqual(parse(datagram(taskId="not-a-guid")), Rejected("taskId is not a GUID"))
        self.assertEqual(parse(datagram(taskId=TASK_ID + "0")), Rejected("taskId is not a GUID"))
        self.assertEqual(parse(datagram(taskId="")), Rejected("taskId is not a GUID"))

    def test_cannotAnchor(self) -> None:
        """More than 11 fields and no fixed-shape anchor: no guess."""
        self.assertEqual(
            parse(datagram(stamp="yesterday", message="a;b")),
            Rejected("cannot find taskId, appId, timestamp, level and executionId"),
        )

    def test_unknownToken(self) -> None:
        self.assertEqual(
            parse(datagram(token="/scheduler-task-started/")),
            Rejected("unknown type token '/scheduler-task-started/'"),
        )

    def test_unknownTokenReasonIsCleanAndShort(self) -> None:
        result = parse(b"GET /\r\nHost: x" + b"A" * 200)
        self.assertIsInstance(result, Rejected)
        self.assertEqual(result.reason, "unknown type token " + repr(("GET /  Host: x" + "A" * 200)[:60]))
        self.assertFalse(any(is_control(c) for c in result.reason))


# ---------------------------------------------------------------------------
# Properties

_GUIDS = st.uuids().map(str)
_NO_CONTROL = st.characters(exclude_categories=("Cc", "Cs"))
_NAME = st.text(_NO_CONTROL.filter(lambda c: c != ";"), max_size=60)
_MESSAGE = st.text(_NO_CONTROL, max_size=120)
_LEVEL = st.sampled_from(["INFO", "WARN", "ERROR", "DEBUG", "FATAL"])
_STAMP = st.builds(
    "{:04d}-{:02d}-{:02d} {:02d}:{:02d}:{:02d},{:03d}".format,
    st.integers(1970, 2100),
    st.integers(1, 12),
    st.integers(1, 28),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
_TOKEN = st.sampled_from(
    [
        ("/scheduler-task-failed/", EventKind.FAILED),
        ("/scheduler-reload-failed/", EventKind.FAILED),
        ("/scheduler-reloadtask-failed/", EventKind.FAILED),
        ("/Scheduler-Task-Aborted//", EventKind.ABORTED),
        ("/scheduler-reload-aborted/", EventKind.ABORTED),
    ]
)


@st.composite
def _alerts(draw: st.DrawFn) -> Alert:
    token, kind = draw(_TOKEN)
    noApp = draw(st.booleans())
    return Alert(
        kind=kind,
        hostName=draw(_NAME),
        user=draw(_NAME),
        taskName=draw(_NAME),
        taskId=draw(_GUIDS),
        appName="" if noApp else draw(_NAME),
        appId="" if noApp else draw(_GUIDS),
        logTimeStamp=draw(_STAMP),
        logLevel=draw(_LEVEL),
        executionId=draw(_GUIDS),
        logMessage=draw(_MESSAGE),
    )


class PropertyTests(SynchronousTestCase):
    """Hypothesis: synchronous tests only."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_neverRaises(self, data: bytes) -> None:
        result = parse(data)
        self.assertIsInstance(result, (Parsed, Ignored, Rejected))

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from(
                    ["/scheduler-task-failed/", "", TASK_ID, APP_ID, STAMP, "INFO", "\x00", "\r\n"]
                ),
                st.text(max_size=20),
            ),
            max_size=16,
        )
    )
    def test_neverRaisesNearlyWellFormed(self, parts: list[str]) -> None:
        """Datagrams made of field-shaped pieces reach deeper into the parser."""
        result = parse(";".join(parts).encode("utf-8", "surrogatepass"))
        self.assertIsInstance(result, (Parsed, Ignored, Rejected))
        self._checkFields(result)

    @settings(max_examples=300, deadline=None)
    @given(_alerts())
    def test_roundTrip(self, alert: Alert) -> None:
        result = parse(format_datagram(alert))
        self.assertIsInstance(result, Parsed)
        self.assertIsNone(result.note)
        self.assertEqual(result.alert, alert)

    @settings(max_examples=100, deadline=None)
    @given(_TOKEN, _alerts())
    def test_roundTripAnyToken(self, token: tuple[str, EventKind], alert: Alert) -> None:
        result = parse(format_datagram(alert, token[0]))
        self.assertEqual(alert_of(result).kind, token[1])
        self.assertEqual(alert_of(result).fields()[1:], alert.fields()[1:])

    @settings(max_examples=300, deadline=None)
    @given(_alerts(), st.lists(st.integers(0, 60), min_size=1, max_size=3), st.booleans())
    def test_semicolonInNamesStillAlerts(self, alert: Alert, cuts: list[int], inApp: bool) -> None:
        """A ';' inside the task or app name: still an alert, every other field intact, no text lost."""
        name = alert.appName if inApp and alert.appName else alert.taskName
        for cut in sorted(set(cuts), reverse=True):
            name = name[:cut] + ";" + name[cut:]
        if inApp and alert.appName:
            sent = attrs.evolve(alert, appName=name)
        else:
            sent = attrs.evolve(alert, taskName=name)
        result = parse(format_datagram(sent))
        self.assertIsInstance(result, Parsed)
        got = result.alert
        self.assertEqual(f"{got.taskName};{got.appName}", f"{sent.taskName};{sent.appName}")
        self.assertEqual(
            attrs.evolve(got, taskName="", appName=""), attrs.evolve(sent, taskName="", appName="")
        )
        if (got.taskName, got.appName) != (sent.taskName, sent.appName):
            self.assertIsNotNone(result.note)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.binary(max_size=2000), st.binary(max_size=300))
    def test_fieldsAreCleanAndBounded(self, task: bytes, message: bytes, app: bytes) -> None:
        data = b";".join(
            [
                b"/scheduler-task-failed/",
                b"h\x1b",
                task,
                app,
                b"LAB\\u",
                TASK_ID.encode(),
                APP_ID.encode(),
                STAMP.encode(),
                b"INFO",
                EXEC_ID.encode(),
                message,
            ]
        )
        self._checkFields(parse(data))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.text(max_size=700), min_size=10, max_size=10))
    def test_elevenArbitraryFieldsCleanAndBounded(self, texts: list[str]) -> None:
        """Exactly 11 fields and a GUID taskId, anything else anywhere: clean and bounded."""
        parts = ["/scheduler-task-failed/", *texts[:4], TASK_ID, *texts[5:]]
        self.assertEqual(len(parts), 11)
        data = ";".join(p.replace(";", ",") for p in parts).encode("utf-8")
        result = parse(data)
        self.assertIsInstance(result, Parsed)
        self._checkFields(result)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_arbitraryFieldsCleanAndBounded(self, data: bytes) -> None:
        self._checkFields(parse(data))

    def _checkFields(self, result: object) -> None:
        if isinstance(result, Rejected):
            self.assertFalse(any(is_control(c) for c in result.reason), result.reason)
        if not isinstance(result, Parsed):
            return
        for name, value in result.alert.fields():
            self.assertLessEqual(len(value), MAX_FIELD_CHARS, name)
            self.assertIsNone(re.search(r"[\x00-\x1f\x7f-\x9f]", value), (name, value))
            self.assertFalse(any(is_control(c) for c in value), (name, value))


class WriterTests(SynchronousTestCase):
    """:func:`format_datagram` writes what :func:`parse` reads: the format both ways."""

    def test_roundTrip(self) -> None:
        """Each kind, with its token; a ``;`` in the message, non-ASCII text: parse gives back every field.

        (:class:`PropertyTests` round-trips generated alerts and every token.)
        """
        for kind in EventKind:
            alert = make_alert(kind, logTimeStamp=qlik_timestamp(1700000000.25), logLevel="INFO")
            data = format_datagram(alert)
            self.assertTrue(data.startswith(TOKEN[kind].encode() + b";"), data)
            self.assertEqual(classify(TOKEN[kind]), kind)
            self.assertEqual(parse(data), Parsed(alert), kind)

    def test_qlikTimestamp(self) -> None:
        """log4net's ``yyyy-MM-dd HH:mm:ss,fff``, local time, that the parser's timestamp shape takes."""
        stamp = qlik_timestamp(1700000000.25)
        self.assertRegex(stamp, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,250$")
        self.assertTrue(stamp.startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1700000000))))
