"""PostgresOutbox: what only a shared store does, against a real throwaway PostgreSQL.

Two outboxes on one database stand for two daemons. Also the schema's
migrations, one daemon's instanceName, and what it does not remember locally.
(What every store does is in test_contract.py.)
"""

from __future__ import annotations

import os
import socket
import threading

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.core.alert import EventKind
from butler_tw.core.delivery import State
from butler_tw.delivery.outbox import AlreadyTaken
from tests.support.alerts import ALERT
from tests.support.postgres import fresh_database, missing_reason, require_postgres
from tests.support.stores import all_pending


def alert(i: int):  # type: ignore[no-untyped-def]
    return attrs.evolve(ALERT, executionId=f"{i:08x}-0000-4000-8000-000000000000")


def pause(seconds: float):  # type: ignore[no-untyped-def]
    return task.deferLater(reactor, seconds, lambda: None)


class TwoDaemonsTests(TestCase):
    skip = missing_reason()

    def setUp(self) -> None:
        self.server = require_postgres()
        self.dsn = fresh_database(self)

    def open(self, name: str, lease: float = 30.0):  # type: ignore[no-untyped-def]
        from butler_tw.delivery.stores.postgres import PostgresOutbox

        outbox = PostgresOutbox(self.dsn, "test db", name, reactor, leaseSeconds=lease)
        outbox.open()
        self.addCleanup(outbox.close)
        return outbox

    @inlineCallbacks
    def test_sameAlertCreatedOnce(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        yield a.rebind({"k0": "f0"})
        created = yield a.add(ALERT, ["k0"], 1000.0)
        self.assertEqual([d.webhookKey for d in created], ["k0"])
        failure = yield self.assertFailure(b.add(ALERT, ["k0"], 1000.5), AlreadyTaken)
        self.assertEqual((failure.reason, failure.by), ("duplicate", "a"))

    @inlineCallbacks
    def test_rateLimitWindowIsTheClusters(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        yield a.add(alert(1), ["k0"], 1000.0, window=300)
        failure = yield self.assertFailure(b.add(alert(2), ["k0"], 1010.0, window=300), AlreadyTaken)
        self.assertEqual((failure.reason, failure.by), ("rate_limited", "a"))
        # Over: the next alert of the task goes out, from whichever daemon.
        created = yield b.add(alert(3), ["k0"], 1301.0, window=300)
        self.assertEqual(len(created), 1)

    @inlineCallbacks
    def test_releasedWindowIsReleasedForAll(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        yield a.add(alert(1), ["k0"], 1000.0, window=300)
        a.remember("windows", ALERT.kind, (ALERT.taskId.lower(),), 1005.0)
        yield a.flushed()
        created = yield b.add(alert(2), ["k0"], 1010.0, window=300)
        self.assertEqual(len(created), 1)

    @inlineCallbacks
    def test_expiredLeaseIsTakenOver(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a", lease=1.0), self.open("b", lease=1.0)
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        yield a.add(ALERT, ["k0"], 1000.0)
        taken = yield b.requeued()
        self.assertEqual(taken, [], "a's lease is live")
        yield pause(1.3)  # a never renews: as if it died
        (delivery,) = yield b.requeued()
        self.assertEqual(delivery.alert, ALERT)
        self.assertEqual(b.takenOver, 1)
        # a's late record of the delivery no longer overwrites b's.
        a.record(attrs.evolve(delivery, state=State.DELIVERED))
        yield a.flushed()
        (still,) = yield b.recent(State.PENDING, 10)
        self.assertEqual(still.id, delivery.id)

    @inlineCallbacks
    def test_renewedLeaseIsKept(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a", lease=1.0), self.open("b", lease=1.0)
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        (delivery,) = yield a.add(ALERT, ["k0"], 1000.0)
        for _ in range(4):
            yield pause(0.4)
            a.renew(lambda: [delivery.id])
            yield a.flushed()
        self.assertEqual((yield b.requeued()), [])
        # The lease itself moved (not only a's heartbeat, which alone would also keep it).
        self.assertGreater(self.leaseLeft(delivery.id), 0.3)

    @inlineCallbacks
    def test_aBusyOwnerKeepsAnExpiredLease(self):  # type: ignore[no-untyped-def]
        """A lease that ran out stays with an owner still committing; once it stops, it is taken."""
        a, b = self.open("a", lease=1.0), self.open("b", lease=1.0)
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        (delivery,) = yield a.add(ALERT, ["k0"], 1000.0)
        for _ in range(4):  # no renewal, but other writes: a is alive
            yield pause(0.4)
            a.prune()
            yield a.flushed()
        self.assertLess(self.leaseLeft(delivery.id), 0)
        self.assertEqual((yield b.requeued()), [])
        yield pause(1.2)  # now a commits nothing for a whole lease
        (taken,) = yield b.requeued()
        self.assertEqual(taken.id, delivery.id)

    def leaseLeft(self, deliveryId: str) -> float:
        conn = psycopg_connect(self.dsn)
        try:
            row = conn.execute(
                "SELECT lease_until - extract(epoch from now()) FROM butler_tw.deliveries WHERE id = %s",
                (deliveryId,),
            ).fetchone()
        finally:
            conn.close()
        assert row is not None
        return float(row[0])

    @inlineCallbacks
    def test_dueTakesItsOwnAndTheUnheldNotALivePeers(self):  # type: ignore[no-untyped-def]
        """due(): what waits in the outbox only stays this daemon's, even with its lease run out, while
        it is alive; a live peer's is never read; what nobody holds is claimed by the reader."""
        a, b = self.open("a", lease=1.0), self.open("b", lease=1.0)
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        (mine,) = yield a.add(alert(1), ["k0"], 1000.0)
        (peers,) = yield b.add(alert(2), ["k0"], 1001.0)
        (handed,) = yield b.add(alert(3), ["k0"], 1002.0)
        yield pause(1.2)  # every lease runs out; both daemons keep committing
        a.prune()
        b.prune()
        yield gatherResults([a.flushed(), b.flushed()])
        with psycopg_connect(self.dsn) as conn:  # b hands one back
            conn.execute("UPDATE butler_tw.deliveries SET owner = NULL WHERE id = %s", (handed.id,))
        page = yield a.due("k0", 10, count=True)
        self.assertEqual([d.id for d in page.deliveries], [mine.id, handed.id])
        self.assertEqual(page.pending, 2, "its own and the unowned; not b's")
        self.assertEqual((yield b.due("k0", 10)).deliveries, [peers], "the handed-back one is a's now")
        self.assertGreater(self.leaseLeft(handed.id), 0.5, "claimed: a fresh lease")

    @inlineCallbacks
    def test_cleanStopHandsBack(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        yield a.add(ALERT, ["k0"], 1000.0)
        yield a.close()
        (delivery,) = yield b.requeued()
        self.assertEqual(delivery.alert, ALERT)

    @inlineCallbacks
    def test_restartTakesItsOwnBackAtOnce(self):  # type: ignore[no-untyped-def]
        a = self.open("a")
        yield a.rebind({"k0": "f0"})
        yield a.add(ALERT, ["k0"], 1000.0)
        yield a.flushed()
        a._closed = True  # kill -9: no hand-back, the lease still runs
        a._pool.stop()
        a._conn.close()
        again = self.open("a")
        yield again.rebind({"k0": "f0"})
        (delivery,) = yield all_pending(again)
        self.assertEqual(delivery.alert, ALERT)

    @inlineCallbacks
    def test_clusterView(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        (d,) = yield a.add(ALERT, ["k0"], 1000.0)
        a.renew(lambda: [d.id])
        yield a.flushed()
        view = a.cluster
        self.assertEqual(view.pending, 1)
        self.assertEqual({m.name: m.holds for m in view.members}, {"a": 1, "b": 0})

    @inlineCallbacks
    def test_databaseRestartLosesNothing(self):  # type: ignore[no-untyped-def]
        a = self.open("a")
        yield a.rebind({"k0": "f0"})
        yield a.add(alert(1), ["k0"], 1000.0)
        self.server.stop()
        try:
            yield a.add(alert(2), ["k0"], 1001.0)  # fires: delivered from memory meanwhile
            yield pause(0.3)
            self.assertFalse(a.healthy)
            self.assertEqual(a.unsavedAlerts, 1)
            # While it fails, a new alert goes out from memory at once, not at the next retry.
            third = a.add(alert(3), ["k0"], 1002.0)
            self.assertEqual([d.alert for d in self.successResultOf(third)], [alert(3)])
            self.assertEqual(a.unsavedAlerts, 2)
        finally:
            self.server.start()
        for _ in range(50):
            if a.healthy:
                break
            yield pause(0.2)
        self.assertTrue(a.healthy)
        pending = yield a.recent(State.PENDING, 10)
        self.assertEqual(
            sorted(d.alert.executionId for d in pending),
            sorted(alert(i).executionId for i in (1, 2, 3)),
        )


def psycopg_connect(dsn: str):  # type: ignore[no-untyped-def]
    from butler_tw.delivery.stores.postgres import open_connection

    return open_connection(dsn, "test")


class SchemaTests(SynchronousTestCase):
    """migrate(): versioned, safe when daemons start at once, refusing a schema it does not know."""

    skip = missing_reason()

    def setUp(self) -> None:
        require_postgres()
        self.dsn = fresh_database(self)

    def connect(self):  # type: ignore[no-untyped-def]
        conn = psycopg_connect(self.dsn)
        self.addCleanup(conn.close)
        return conn

    def versions(self) -> list[int]:
        from butler_tw.delivery.stores.postgres import SCHEMA

        return [
            v for (v,) in self.connect().execute(f"SELECT version FROM {SCHEMA}.migrations ORDER BY version")
        ]

    def test_migrateOnceThenNothing(self) -> None:
        from butler_tw.delivery.stores.postgres import MIGRATIONS, SCHEMA_VERSION, migrate

        conn = self.connect()
        self.assertEqual(migrate(conn, "a"), (0, SCHEMA_VERSION))
        self.assertEqual(migrate(conn, "b"), (SCHEMA_VERSION, SCHEMA_VERSION))
        self.assertEqual(self.versions(), [v for v, _, _ in MIGRATIONS])

    def test_twoAtOnce(self) -> None:
        """Two daemons starting together, from two threads: one migrates, the other finds it done,
        even on sessions that had looked for the schema before it existed (a reused session)."""
        from butler_tw.delivery.stores.postgres import SCHEMA, SCHEMA_VERSION, migrate

        for attempt in range(10):
            conns = [self.connect(), self.connect()]
            conns[0].execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            for conn in conns:
                conn.execute("SELECT to_regnamespace(%s)", (SCHEMA,))
            start = threading.Barrier(2)
            results: dict[str, tuple[int, int]] = {}
            errors: list[BaseException] = []

            def run(conn, name):  # type: ignore[no-untyped-def]
                start.wait()
                try:
                    results[name] = migrate(conn, name)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=run, args=(c, n)) for c, n in zip(conns, "ab")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            self.assertEqual(errors, [], f"attempt {attempt}")
            self.assertEqual(
                sorted(results.values()), [(0, SCHEMA_VERSION), (SCHEMA_VERSION, SCHEMA_VERSION)]
            )
            self.assertEqual(self.versions(), list(range(1, SCHEMA_VERSION + 1)))

    def test_newerSchemaRefused(self) -> None:
        """A database a newer butler-tw migrated: refused, naming both versions, before anything is written."""
        from butler_tw.delivery.stores.postgres import SCHEMA, SCHEMA_VERSION, StoreError, check, migrate

        conn = self.connect()
        migrate(conn, "a")
        newer = SCHEMA_VERSION + 1
        conn.execute(
            f"INSERT INTO {SCHEMA}.migrations (version, description, applied_by) VALUES (%s, 'later', 'z')",
            (newer,),
        )
        e = self.assertRaises(StoreError, migrate, conn, "a")
        self.assertIn(f"version {newer}, newer than", str(e))
        self.assertIn(f"knows ({SCHEMA_VERSION})", str(e))
        self.assertIn("upgrade butler-tw", str(e))
        e = self.assertRaises(StoreError, check, self.dsn, "test db", "a")
        self.assertIn(f"version {newer}", str(e))


class OneStoreTests(TestCase):
    """One daemon's view of the shared store: its name, its (lack of) local memory, a newer schema."""

    skip = missing_reason()

    def setUp(self) -> None:
        require_postgres()
        self.dsn = fresh_database(self)

    def open(self, name: str = "a"):  # type: ignore[no-untyped-def]
        from butler_tw.delivery.stores.postgres import PostgresOutbox

        outbox = PostgresOutbox(self.dsn, "test db", name, reactor)
        outbox.open()
        self.addCleanup(outbox.close)
        return outbox

    @inlineCallbacks
    def failing(self, outbox):  # type: ignore[no-untyped-def]
        """Wait for ``outbox``'s first failed batch (its writer is then idle until the retry)."""
        for _ in range(100):
            if outbox.writeErrors:
                return
            yield pause(0.05)
        self.fail("no write failed")

    @inlineCallbacks
    def test_sameInstanceNameRefused(self):  # type: ignore[no-untyped-def]
        """A second daemon under a running one's instanceName: its writes fail, saying who has the
        name; it writes once the first one stops. check() refuses it at start-up too."""
        from butler_tw.delivery.stores.postgres import StoreError, check

        first = self.open("a")
        yield first.rebind({"k0": "f0"})
        e = self.assertRaises(StoreError, check, self.dsn, "test db", "a")
        self.assertIn("another butler-tw is running as butlerWebhook.instanceName 'a'", str(e))
        second = self.open("a")
        (delivery,) = yield second.add(ALERT, ["k0"], 1000.0)  # delivered from memory meanwhile
        yield self.failing(second)
        self.assertFalse(second.healthy)
        self.assertIn("another butler-tw is running as instanceName 'a'", second.lastError)
        self.assertIn(f"host {socket.gethostname()}, pid {os.getpid()}", second.lastError)
        self.assertIn("does not write until it stops", second.lastError)
        self.assertEqual((yield first.recent(None, 10)), [])
        yield first.close()
        for _ in range(100):
            if second.healthy:
                break
            yield pause(0.1)
        self.assertTrue(second.healthy)
        self.assertEqual((yield second.recent(None, 10)), [delivery])

    @inlineCallbacks
    def test_newerSchemaStopsWrites(self):  # type: ignore[no-untyped-def]
        from butler_tw.delivery.stores.postgres import SCHEMA, SCHEMA_VERSION, migrate

        conn = psycopg_connect(self.dsn)
        self.addCleanup(conn.close)
        migrate(conn, "z")
        conn.execute(
            f"INSERT INTO {SCHEMA}.migrations (version, description, applied_by) VALUES (%s, 'later', 'z')",
            (SCHEMA_VERSION + 1,),
        )
        outbox = self.open()
        yield outbox.add(ALERT, ["k0"], 1000.0)
        yield self.failing(outbox)
        self.assertIn(f"version {SCHEMA_VERSION + 1}, newer than", outbox.lastError)
        self.assertEqual(outbox.unsavedAlerts, 1)
        yield outbox.close(timeout=0.1)
        (count,) = conn.execute(f"SELECT count(*) FROM {SCHEMA}.alerts").fetchone()
        self.assertEqual(count, 0)

    @inlineCallbacks
    def test_remembersNothingLocally(self):  # type: ignore[no-untyped-def]
        """De-duplication and rate limiting are the cluster's, decided in add(): nothing to re-arm."""
        outbox = self.open()
        outbox.remember("dedup", EventKind.FAILED, (ALERT.taskId, ALERT.executionId), 5e9)
        outbox.remember("windows", EventKind.FAILED, (ALERT.taskId.lower(),), 5e9)
        yield outbox.flushed()
        self.assertTrue(outbox.healthy)
        self.assertEqual(outbox.remembered("dedup", 1000.0), [])
        self.assertEqual(outbox.remembered("windows", 1000.0), [])
        # A window remember()ed but never taken in add() holds nothing back.
        created = yield outbox.add(ALERT, ["k0"], 1000.0, window=300)
        self.assertEqual(len(created), 1)


class DescribeErrorTests(SynchronousTestCase):
    """Needs psycopg only (a dependency), not a server."""

    def test_oneLineAndNoPassword(self) -> None:
        from butler_tw.delivery.stores.postgres import describe_error

        dsn = "host=/nonexistent dbname=x user=u password=s3cret"
        error = Exception('connection failed: password "s3cret" refused\nIs the server running?')
        text = describe_error(error, dsn)
        self.assertEqual(text, 'password "***" refused. Is the server running?')
