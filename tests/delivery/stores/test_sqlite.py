"""SqliteOutbox: what only the SQLite store does, on a real file, written on its own thread.

Remembered de-duplication keys and rate-limit windows, write errors, a
corrupt or unwritable file, the upgrade from schema version 1, and the query
of ``butler-tw deliveries``. (What every store does is in test_contract.py.)
"""

from __future__ import annotations

import os
import sqlite3
import uuid

import attrs
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.core.alert import _ID_NAMESPACE, EventKind
from butler_tw.core.delivery import State
from butler_tw.delivery.stores import groupcommit
from butler_tw.delivery.stores.sqlite import (
    DB_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    SqliteOutbox,
    StoreError,
    alert_to_json,
    connect,
    list_deliveries,
)
from tests.support.alerts import ALERT
from tests.support.stores import all_pending


def alert(i: int):  # type: ignore[no-untyped-def]
    return attrs.evolve(ALERT, executionId=f"{i:08x}-0000-4000-8000-000000000000")


class SqliteOutboxTests(TestCase):
    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        self.outbox = self.open()

    def open(self) -> SqliteOutbox:
        outbox = SqliteOutbox(self.stateDir, reactor, deadLetterRetention=3600)
        outbox.open()
        self.addCleanup(outbox.close)
        return outbox

    @inlineCallbacks
    def test_oneDatagramOneTransaction(self):  # type: ignore[no-untyped-def]
        """A rate-limit window and its alert are committed together, never the window alone."""
        self.outbox.remember("windows", EventKind.FAILED, (ALERT.taskId,), 2000.0)
        yield self.outbox.add(ALERT, ["a"], 1000.0)
        self.assertEqual(self.outbox.commits, 1)

    @inlineCallbacks
    def test_rememberAndPrune(self):  # type: ignore[no-untyped-def]
        now = reactor.seconds()
        self.outbox.remember("dedup", EventKind.FAILED, ("task", "x"), now + 60)
        self.outbox.remember("dedup", EventKind.FAILED, ("other", "x"), now + 50)
        self.outbox.remember("dedup", EventKind.FAILED, ("task", "old"), now - 1)
        self.outbox.remember("windows", EventKind.ABORTED, ("task",), now + 30)
        yield self.outbox.flushed()
        dedup = self.outbox.remembered("dedup", now)
        windows = self.outbox.remembered("windows", now)
        self.assertEqual(
            sorted(dedup),
            [(EventKind.FAILED, ("other", "x"), now + 50), (EventKind.FAILED, ("task", "x"), now + 60)],
        )
        self.assertEqual(windows, [(EventKind.ABORTED, ("task",), now + 30)])
        (d,) = yield self.outbox.add(ALERT, ["a"], now)
        self.outbox.record(attrs.evolve(d, state=State.DELIVERED))
        self.outbox.prune()
        yield self.outbox.flushed()
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("dedup_keys", "alerts")]
        conn.close()
        self.assertEqual(counts, [2, 0])

    @inlineCallbacks
    def test_upgradeFromVersion1(self):  # type: ignore[no-untyped-def]
        """A version-1 file: the old dedup table goes, and an alert without an executionId,
        stored under its old id, is re-keyed so that its delivery's updates land."""
        yield self.outbox.close()
        os.remove(os.path.join(self.stateDir, DB_NAME))
        bare = attrs.evolve(ALERT, executionId="")
        oldId = "msg_" + uuid.uuid5(_ID_NAMESPACE, f"{bare.kind.value}\x00{bare.taskId}\x00").hex
        self.assertNotEqual(oldId, bare.alertId)
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        conn.executescript(SCHEMA)
        conn.executescript(
            "CREATE TABLE dedup (kind TEXT NOT NULL, execution_id TEXT NOT NULL, expires_at REAL NOT NULL,"
            " PRIMARY KEY (kind, execution_id));"
            "INSERT INTO meta VALUES ('schema', '1');"
        )
        for a, alertId in ((bare, oldId), (ALERT, ALERT.alertId)):
            conn.execute(
                "INSERT INTO alerts VALUES (?, ?, ?, 1000)", (alertId, a.kind.value, alert_to_json(a))
            )
            conn.execute(
                "INSERT INTO deliveries VALUES (?, ?, 'a', 1000, 0, 1000, 'pending', '', 1000, 0)",
                (f"{alertId}/a", alertId),
            )
        conn.commit()
        conn.close()

        outbox = self.open()
        pending = yield all_pending(outbox)
        self.assertEqual(sorted(d.id for d in pending), sorted([f"{bare.alertId}/a", f"{ALERT.alertId}/a"]))
        for d in pending:
            outbox.record(attrs.evolve(d, state=State.DELIVERED))
        yield outbox.flushed()
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        left = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        conn.close()
        self.assertEqual((left, version), (0, str(SCHEMA_VERSION)))
        self.assertNotIn("dedup", tables)
        self.assertIn("dedup_keys", tables)

    @inlineCallbacks
    def test_writeErrorKeepsDeliveringAndRetries(self):  # type: ignore[no-untyped-def]
        """A failed commit is logged and counted; add() still hands out the deliveries,
        and the writes are retried until they land."""
        self.outbox._conn.execute("DROP TABLE deliveries")  # writes fail until it is back
        deliveries = yield self.outbox.add(ALERT, ["a"], 1000.0)
        self.assertEqual(len(deliveries), 1)
        self.assertFalse(self.outbox.healthy)
        self.assertEqual(self.outbox.writeErrors, 1)
        self.assertEqual(self.outbox.unsavedAlerts, 1, "counted by the time add() fires")
        failedRead = self.outbox.due("a", 10)  # a read during the outage fails rather than lie
        yield self.assertFailure(failedRead, sqlite3.OperationalError)
        # The disk is back (the table returns): the retried write lands.
        self.outbox._conn.executescript(SCHEMA)
        yield self.outbox.flushed()
        self.assertTrue(self.outbox.healthy)
        pending = yield all_pending(self.outbox)
        self.assertEqual(pending, deliveries)

    @inlineCallbacks
    def test_unsavedCountsEveryQueuedAlertPastOneBatch(self):  # type: ignore[no-untyped-def]
        """With more queued than one transaction takes, every alert whose caller went on counts
        against maxBufferedAlerts, and the count falls to 0 only once all of them are stored."""
        self.patch(groupcommit, "MAX_BATCH", 3)
        self.outbox._conn.execute("DROP TABLE deliveries")
        added = [self.outbox.add(alert(i), ["a"], 1000.0) for i in range(7)]
        yield gatherResults(added)  # every one handed out, none stored
        self.assertFalse(self.outbox.healthy)
        self.assertEqual(self.outbox.unsavedAlerts, 7)
        self.outbox.add(alert(7), ["a"], 1000.0)  # while failing: out at once, counted
        self.assertEqual(self.outbox.unsavedAlerts, 8)
        self.outbox._conn.executescript(SCHEMA)
        yield self.outbox.flushed()
        self.assertTrue(self.outbox.healthy)
        self.assertEqual(self.outbox.unsavedAlerts, 0)
        self.assertEqual(len((yield all_pending(self.outbox))), 8)


class ConnectTests(SynchronousTestCase):
    def test_corruptDatabase(self) -> None:
        stateDir = self.mktemp()
        os.makedirs(stateDir)
        with open(os.path.join(stateDir, DB_NAME), "wb") as f:
            f.write(b"this is not a database" * 100)
        e = self.assertRaises(StoreError, connect, stateDir)
        self.assertIn(os.path.join(stateDir, DB_NAME), str(e))
        self.assertIn("move the file", str(e))

    def test_unwritableDirectory(self) -> None:
        if os.getuid() == 0:
            # root writes anywhere: make the state "directory" a file instead.
            stateDir = self.mktemp()
            open(stateDir, "w").close()
            e = self.assertRaises(StoreError, connect, stateDir)
            self.assertIn("cannot create the state directory", str(e))
            return
        stateDir = self.mktemp()
        os.makedirs(stateDir, mode=0o500)
        e = self.assertRaises(StoreError, connect, stateDir)
        self.assertIn("cannot be used", str(e))

    def test_missingWithoutCreate(self) -> None:
        e = self.assertRaises(StoreError, connect, self.mktemp(), create=False)
        self.assertIn("no outbox database", str(e))


class ListDeliveriesTests(TestCase):
    """:func:`list_deliveries`, the query of ``butler-tw deliveries``, on a file the outbox wrote."""

    @inlineCallbacks
    def setUp(self):  # type: ignore[no-untyped-def]
        self.stateDir = self.mktemp()
        outbox = SqliteOutbox(self.stateDir, reactor)
        outbox.open()
        added = yield outbox.add(alert(1), ["a", "b", "c"], 1000.0)
        self.dead, self.late, self.early = added
        outbox.record(attrs.evolve(self.dead, state=State.DEAD, attempts=6, lastOutcome="HTTP 503"))
        outbox.record(attrs.evolve(self.late, dueAt=3000.0))
        outbox.record(attrs.evolve(self.early, dueAt=2000.0))
        yield outbox.close()
        self.conn = connect(self.stateDir, create=False)
        self.addCleanup(self.conn.close)

    def test_byStateThenDue(self) -> None:
        rows = list_deliveries(self.conn, None, 10)
        self.assertEqual([d.webhookKey for d in rows], ["a", "c", "b"])  # "dead" < "pending"
        self.assertEqual(rows[0].state, State.DEAD)
        self.assertEqual(rows[0].lastOutcome, "HTTP 503")
        self.assertEqual(rows[1].alert, alert(1))

    def test_stateAndLimit(self) -> None:
        self.assertEqual([d.webhookKey for d in list_deliveries(self.conn, State.DEAD, 10)], ["a"])
        self.assertEqual([d.webhookKey for d in list_deliveries(self.conn, State.PENDING, 1)], ["c"])
        self.assertEqual([d.webhookKey for d in list_deliveries(self.conn, None, 2)], ["a", "c"])


class AlertRowsTests(TestCase):
    """An alert's row goes with its last delivery, or with the last of its dead letters pruned: by index."""

    def setUp(self) -> None:
        self.stateDir = self.mktemp()
        self.outbox = SqliteOutbox(self.stateDir, reactor, deadLetterRetention=3600)
        self.outbox.open()
        self.addCleanup(self.outbox.close)

    def alertIds(self) -> set[str]:
        conn = sqlite3.connect(os.path.join(self.stateDir, DB_NAME))
        try:
            return {a for (a,) in conn.execute("SELECT alert_id FROM alerts")}
        finally:
            conn.close()

    @inlineCallbacks
    def test_goesWithItsLastDelivery(self):  # type: ignore[no-untyped-def]
        a, b = yield self.outbox.add(ALERT, ["a", "b"], 1000.0)
        self.outbox.record(attrs.evolve(a, state=State.DELIVERED))
        yield self.outbox.flushed()
        self.assertEqual(self.alertIds(), {ALERT.alertId}, "b still refers to it")
        self.outbox.record(attrs.evolve(b, state=State.DELIVERED))
        yield self.outbox.flushed()
        self.assertEqual(self.alertIds(), set())

    @inlineCallbacks
    def test_goesWithItsLastPrunedDeadLetter(self):  # type: ignore[no-untyped-def]
        a, b = yield self.outbox.add(ALERT, ["a", "b"], 1000.0)
        other = alert(7)
        (c,) = yield self.outbox.add(other, ["a"], 1000.0)
        self.outbox.record(attrs.evolve(a, state=State.DEAD))
        self.outbox.record(attrs.evolve(c, state=State.DEAD))
        yield self.outbox.flushed()
        self.outbox.deadLetterRetention = -1.0  # every dead letter is old enough
        self.outbox.prune()
        yield self.outbox.flushed()
        # ALERT stays (b is pending); the other alert went with its only, pruned, dead letter.
        self.assertEqual(self.alertIds(), {ALERT.alertId})
        self.assertEqual([d.id for d in (yield all_pending(self.outbox))], [b.id])
