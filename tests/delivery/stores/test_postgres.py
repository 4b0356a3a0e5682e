"""PostgresOutbox: what only a shared store does, against a real throwaway PostgreSQL.

Two outboxes on one database stand for two daemons. (What every store does
is in test_contract.py.)
"""

from __future__ import annotations

import attrs
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.core.delivery import State
from butler_tw.delivery.outbox import AlreadyTaken
from tests.support.alerts import ALERT
from tests.support.postgres import fresh_database, missing_reason, require_postgres


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
            a.renew([delivery.id])
            yield a.flushed()
        self.assertEqual((yield b.requeued()), [])

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
        (delivery,) = yield again.pending()
        self.assertEqual(delivery.alert, ALERT)

    @inlineCallbacks
    def test_clusterView(self):  # type: ignore[no-untyped-def]
        a, b = self.open("a"), self.open("b")
        for outbox in (a, b):
            yield outbox.rebind({"k0": "f0"})
        (d,) = yield a.add(ALERT, ["k0"], 1000.0)
        a.renew([d.id])
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
        finally:
            self.server.start()
        for _ in range(50):
            if a.healthy:
                break
            yield pause(0.2)
        self.assertTrue(a.healthy)
        pending = yield a.recent(State.PENDING, 10)
        self.assertEqual(sorted(d.alert.executionId for d in pending), [alert(1).executionId, alert(2).executionId])
