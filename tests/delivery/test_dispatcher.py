"""``Dispatcher``: fast unit tests on a ``task.Clock``, plus one on the real network."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from butler_tw.channels.butler import Request
from butler_tw.core.alert import Alert
from butler_tw.core.delivery import REMOVED, Delivery, State, removed_key
from butler_tw.core.retry import Outcome, RetryPolicy
from butler_tw.core.stats import Stats
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.outbox import IOutbox
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.support.receivers import (
    RecordingOutbox,
    Reply,
    listen_http,
    make_alert,
    make_webhook,
    start_client,
)

OK = Outcome(status=200)
ERROR = Outcome(status=500)


class FakeSender:
    """A sender whose attempts the test finishes by hand.

    Like ``WebhookClient``, its Deferreds never errback: cancelling one
    fires it with an Outcome.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.pending: list[Deferred[Outcome]] = []

    def send(self, request: Request) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred(lambda d: d.callback(Outcome(error="cancelled")))
        self.requests.append(request)
        self.pending.append(d)
        return d

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def finish(self, outcome: Outcome, index: int = 0) -> None:
        """Fire the ``index``-th attempt still in flight with ``outcome``."""
        self.pending.pop(index).callback(outcome)


def alert(n: int = 0) -> Alert:
    return make_alert(taskId=f"task-{n}", executionId=f"exec-{n}")


class DispatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)  # acceptance times are not 0
        self.sender = FakeSender()
        self.outbox = MemoryOutbox()
        self.stats = Stats()

    def dispatcher(
        self,
        schedule: tuple[float, ...] = (0.0, 10.0, 60.0),
        concurrency: int = 4,
        maxAge: float = 3600.0,
        sender: Any = None,
        key: str = "reloadTaskFailure.webhooks[0]",
    ) -> Dispatcher:
        webhook = make_webhook(
            "http://127.0.0.1:9/hook?token=T",
            concurrency=concurrency,
            retry=RetryPolicy(schedule=schedule, maxAge=maxAge),
            key=key,
        )
        return Dispatcher(
            webhook, sender or self.sender, self.outbox, self.clock, self.stats, rand=lambda: 0.75
        )

    def submit(self, dispatcher: Dispatcher, n: int = 0) -> Delivery:
        now = self.clock.seconds()
        delivery = Delivery(alert(n), dispatcher.webhook.key, acceptedAt=now, dueAt=now)
        self.outbox.live[delivery.id] = delivery
        dispatcher.submit(delivery)
        return delivery

    def only(self, delivery: Delivery) -> Delivery:
        """The outbox's current record of ``delivery``."""
        if delivery.id in self.outbox.live:
            return self.outbox.live[delivery.id]
        (dead,) = [d for d in self.outbox.dead if d.id == delivery.id]
        return dead

    def test_outboxProvidesInterface(self) -> None:
        self.assertTrue(verifyObject(IOutbox, MemoryOutbox()))
        self.assertTrue(verifyObject(IOutbox, RecordingOutbox()))

    def test_sameDeliveryTwiceTakenOnce(self) -> None:
        """An alert received again (de-duplication off) while its delivery is held is not sent twice."""
        dispatcher = self.dispatcher(concurrency=1)
        first = self.submit(dispatcher, 0)
        queued = self.submit(dispatcher, 1)
        dispatcher.submit(first)  # in flight
        dispatcher.submit(queued)  # waiting for a slot
        self.assertEqual((self.sender.attempts, dispatcher.queued), (1, 1))
        self.sender.finish(ERROR)  # retry timer for the first
        dispatcher.submit(self.only(first))  # waiting for its retry
        self.sender.finish(OK)
        self.clock.advance(60)
        self.sender.finish(OK)
        self.assertEqual(self.sender.attempts, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_staleDeliveryExpiresUnsent(self) -> None:
        """A delivery resumed after more than maxAge is a dead letter, not a late alert."""
        dispatcher = self.dispatcher(maxAge=600)
        finals: list[Delivery] = []
        dispatcher.onFinal = finals.append
        stale = Delivery(alert(0), dispatcher.webhook.key, acceptedAt=self.clock.seconds() - 601, dueAt=0)
        dispatcher.submit(stale)
        self.assertEqual(self.sender.attempts, 0)
        (dead,) = self.outbox.dead
        self.assertEqual((dead.state, dead.lastOutcome[:8]), (State.DEAD, "expired:"))
        self.assertEqual(finals, [dead])

    def test_concurrencyLimit(self) -> None:
        """5 submitted at concurrency 2: 2 in flight, the others start as slots free."""
        dispatcher = self.dispatcher(concurrency=2)
        for n in range(5):
            self.submit(dispatcher, n)
        self.assertEqual((self.sender.attempts, dispatcher.inFlight, dispatcher.queued), (2, 2, 3))
        self.sender.finish(OK)
        self.assertEqual((self.sender.attempts, dispatcher.inFlight, dispatcher.queued), (3, 2, 2))
        while self.sender.pending:
            self.sender.finish(OK)
        self.assertEqual((self.sender.attempts, dispatcher.inFlight, dispatcher.queued), (5, 0, 0))
        self.assertEqual(self.outbox.live, {})
        self.assertEqual(self.stats.get("deliveries_delivered", dispatcher.webhook.key), 5)
        ids = [r.headers for r in self.sender.requests]
        self.assertEqual(len({dict(h)["webhook-id"] for h in ids}), 5)

    def test_retryOn500AtScheduledTime(self) -> None:
        """A 500 is retried at acceptance + schedule[1] + jitter (rand 0.75: +10 %)."""
        dispatcher = self.dispatcher(schedule=(0.0, 10.0, 60.0))
        delivery = self.submit(dispatcher)
        self.sender.finish(ERROR)
        pending = self.only(delivery)
        self.assertEqual((pending.state, pending.attempts), (State.PENDING, 1))
        self.assertEqual(pending.dueAt, delivery.acceptedAt + 11.0)
        self.assertEqual(pending.lastOutcome, "HTTP 500")
        self.clock.advance(10.99)
        self.assertEqual(self.sender.attempts, 1)
        self.clock.advance(0.01)
        self.assertEqual(self.sender.attempts, 2)
        first, second = self.sender.requests
        self.assertEqual(dict(first.headers)["webhook-id"], dict(second.headers)["webhook-id"])
        self.sender.finish(OK)
        self.assertEqual(self.outbox.live, {})
        self.assertEqual(list(self.outbox.dead), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connectionErrorRetried(self) -> None:
        dispatcher = self.dispatcher(schedule=(0.0, 10.0))
        self.submit(dispatcher)
        self.sender.finish(Outcome(error="connection refused"))
        self.clock.advance(11)
        self.assertEqual(self.sender.attempts, 2)

    def test_permanentFailureOneAttempt(self) -> None:
        """A 400 is not retried: one attempt, and the delivery is dead."""
        dispatcher = self.dispatcher()
        delivery = self.submit(dispatcher)
        self.sender.finish(Outcome(status=400))
        self.clock.advance(4000)
        self.assertEqual(self.sender.attempts, 1)
        self.assertEqual(self.outbox.live, {})
        (dead,) = self.outbox.dead
        self.assertEqual((dead.id, dead.state, dead.attempts), (delivery.id, State.DEAD, 1))
        self.assertEqual(dead.lastOutcome, "HTTP 400")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_redirectIsPermanent(self) -> None:
        dispatcher = self.dispatcher()
        self.submit(dispatcher)
        self.sender.finish(Outcome(status=302))
        self.assertEqual(self.outbox.dead[0].state, State.DEAD)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_givesUpAfterSchedule(self) -> None:
        """As many attempts as the schedule has entries, then dead."""
        dispatcher = self.dispatcher(schedule=(0.0, 1.0, 2.0))
        delivery = self.submit(dispatcher)
        for expected in (1, 2, 3):
            self.assertEqual(self.sender.attempts, expected)
            self.sender.finish(ERROR)
            self.clock.advance(5)
        self.assertEqual(self.sender.attempts, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        dead = self.only(delivery)
        self.assertEqual((dead.state, dead.attempts, dead.lastOutcome), (State.DEAD, 3, "HTTP 500"))
        self.assertEqual(self.stats.get("deliveries_dead", dispatcher.webhook.key), 1)

    def test_givesUpAtMaxAge(self) -> None:
        dispatcher = self.dispatcher(schedule=(0.0, 10.0, 600.0), maxAge=100.0)
        delivery = self.submit(dispatcher)
        self.sender.finish(ERROR)
        self.clock.advance(20)
        self.sender.finish(ERROR)
        self.assertEqual(self.only(delivery).state, State.DEAD)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retryAfterHonoured(self) -> None:
        """A 429 asking for 30 s waits 30 s, though the schedule says 10 s (+1 s jitter)."""
        dispatcher = self.dispatcher(schedule=(0.0, 10.0, 60.0))
        delivery = self.submit(dispatcher)
        self.sender.finish(Outcome(status=429, retryAfter=30.0))
        self.assertEqual(self.only(delivery).dueAt, delivery.acceptedAt + 30.0)
        self.clock.advance(29.9)
        self.assertEqual(self.sender.attempts, 1)
        self.clock.advance(0.1)
        self.assertEqual(self.sender.attempts, 2)

    def test_retryAfterBeyondMaxAgeGivesUp(self) -> None:
        dispatcher = self.dispatcher(schedule=(0.0, 10.0), maxAge=60.0)
        delivery = self.submit(dispatcher)
        self.sender.finish(Outcome(status=503, retryAfter=3600.0))
        self.assertEqual(self.only(delivery).state, State.DEAD)

    def test_dueLaterWaits(self) -> None:
        """A delivery due in the future (resumed at start-up) waits for its time."""
        dispatcher = self.dispatcher()
        now = self.clock.seconds()
        dispatcher.submit(Delivery(alert(), dispatcher.webhook.key, acceptedAt=now - 5, dueAt=now + 7))
        self.assertEqual((self.sender.attempts, dispatcher.queued), (0, 1))
        self.clock.advance(7)
        self.assertEqual(self.sender.attempts, 1)

    def test_stopWaitsForInFlightAndCancelsTimers(self) -> None:
        dispatcher = self.dispatcher(schedule=(0.0, 10.0), concurrency=1)
        first = self.submit(dispatcher, 1)
        self.sender.finish(ERROR)  # first now waits for its retry timer
        self.submit(dispatcher, 2)  # second is in flight
        waiting = self.submit(dispatcher, 3)  # third is queued behind it
        self.assertEqual((dispatcher.inFlight, len(self.clock.getDelayedCalls())), (1, 1))
        stopped = dispatcher.stop()
        self.assertNoResult(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.sender.finish(ERROR)
        self.successResultOf(stopped)
        self.clock.advance(100)
        self.assertEqual(self.sender.attempts, 2)  # nothing started after stop
        self.assertEqual(dispatcher.unattempted(), 1)
        # what was not finished stays pending, not dead
        self.assertEqual(self.only(first).state, State.PENDING)
        self.assertEqual(self.outbox.live[waiting.id].state, State.PENDING)
        self.assertEqual(list(self.outbox.dead), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWhenIdle(self) -> None:
        dispatcher = self.dispatcher()
        self.successResultOf(dispatcher.stop())
        self.submit(dispatcher)
        self.assertEqual(self.sender.attempts, 0)

    def test_abortCancelsInFlight(self) -> None:
        dispatcher = self.dispatcher(concurrency=2)
        a = self.submit(dispatcher, 1)
        b = self.submit(dispatcher, 2)
        stopped = dispatcher.stop()
        self.assertNoResult(stopped)
        dispatcher.abort()
        self.successResultOf(stopped)
        self.assertEqual(self.sender.pending[0].called, True)
        self.assertEqual(dispatcher.inFlight, 0)
        for delivery in (a, b):
            left = self.only(delivery)
            self.assertEqual((left.state, left.attempts, left.lastOutcome), (State.PENDING, 1, "cancelled"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stuckWebhookDoesNotDelayAnother(self) -> None:
        """One dispatcher's hung sender leaves another dispatcher's deliveries alone."""
        stuckSender, fineSender = FakeSender(), FakeSender()
        stuck = self.dispatcher(concurrency=1, sender=stuckSender, key="stuck")
        fine = self.dispatcher(concurrency=1, sender=fineSender, key="fine")
        for n in range(3):
            self.submit(stuck, n)
            self.submit(fine, n)
        for _ in range(3):
            fineSender.finish(OK)
        self.assertEqual((stuckSender.attempts, stuck.queued, stuck.inFlight), (1, 2, 1))
        self.assertEqual((fineSender.attempts, fine.queued, fine.inFlight), (3, 0, 0))
        self.assertEqual(self.stats.get("deliveries_delivered", "fine"), 3)
        self.assertEqual(self.stats.get("deliveries_delivered", "stuck"), 0)

    def test_immediateRetryStaysInFlight(self) -> None:
        """A retry due at once (its time passed during a slow attempt) is in flight.

        With the default schedule (0, 5 s, ...) and a 10 s timeout, a timed
        out first attempt is retried at once. That retry must count against
        the concurrency limit and be waited for by stop().
        """
        dispatcher = self.dispatcher(schedule=(0.0, 5.0, 60.0), concurrency=2)
        delivery = self.submit(dispatcher)
        self.clock.advance(10)
        self.sender.finish(Outcome(error="timed out after 10 s"))  # was due at +5.5: retried now
        self.assertEqual((self.sender.attempts, dispatcher.inFlight), (2, 1))
        stopped = dispatcher.stop()
        self.assertNoResult(stopped)
        self.sender.finish(OK)
        self.successResultOf(stopped)
        self.assertEqual(dispatcher.inFlight, 0)
        self.assertNotIn(delivery.id, self.outbox.live)

    def test_immediateRetryCountsAgainstConcurrency(self) -> None:
        dispatcher = self.dispatcher(schedule=(0.0, 0.0, 60.0), concurrency=2)
        for n in range(3):
            self.submit(dispatcher, n)
        self.assertEqual(dispatcher.inFlight, 2)
        self.sender.finish(ERROR)  # retried at once, in the slot it leaves
        self.assertEqual((self.sender.attempts, dispatcher.inFlight, len(self.sender.pending)), (3, 2, 2))


class RetireTests(SynchronousTestCase):
    """``retire``: a reload replaced the webhook; its deliveries go on, none is lost or sent twice."""

    OLD = "reloadTaskFailure.webhooks[0]"

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.outbox = RecordingOutbox()
        self.stats = Stats()
        self.finals: list[Delivery] = []

    def dispatcher(
        self,
        sender: FakeSender,
        key: str = OLD,
        schedule: tuple[float, ...] = (0.0, 10.0, 60.0),
        timeout: float = 5.0,
        url: str = "http://127.0.0.1:9/hook",
    ) -> Dispatcher:
        webhook = make_webhook(url, retry=RetryPolicy(schedule=schedule), key=key, timeout=timeout)
        dispatcher = Dispatcher(webhook, sender, self.outbox, self.clock, self.stats, rand=lambda: 0.5)
        dispatcher.onFinal = self.finals.append
        return dispatcher

    def submit(self, dispatcher: Dispatcher, n: int = 0) -> Delivery:
        now = self.clock.seconds()
        delivery = Delivery(alert(n), dispatcher.webhook.key, acceptedAt=now, dueAt=now)
        dispatcher.submit(delivery)
        return delivery

    def last(self, n: int = 0) -> Delivery:
        """The last state recorded for alert ``n``."""
        return [d for d in self.outbox.history if d.alert == alert(n)][-1]

    def test_waitingRetryGoesToSuccessor(self) -> None:
        """Changed settings: a delivery waiting for its retry is attempted by the new dispatcher."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender)
        self.submit(old)
        oldSender.finish(ERROR)  # retry due at +10 s
        new = self.dispatcher(newSender, timeout=1.0)
        retired = old.retire(new)
        self.successResultOf(retired)  # nothing in flight
        self.assertEqual((old.queued, new.queued), (0, 1))
        self.clock.advance(10)
        self.assertEqual((oldSender.attempts, newSender.attempts), (1, 1))
        newSender.finish(OK)
        self.assertEqual((self.last().state, self.last().attempts), (State.DELIVERED, 2))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([f.state for f in self.finals], [State.DELIVERED])

    def test_newScheduleRetimesWaitingRetry(self) -> None:
        """A retry waiting on the old schedule (60 s) is re-timed on the new one (2 s)."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender, schedule=(0.0, 60.0))
        delivery = self.submit(old)
        oldSender.finish(ERROR)
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 60)
        self.clock.advance(1)
        old.retire(self.dispatcher(newSender, schedule=(0.0, 2.0, 4.0)))
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 2)  # recorded, for a restart
        self.clock.advance(1)
        self.assertEqual(newSender.attempts, 1)
        newSender.finish(ERROR)  # the next retry is on the new schedule too
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 4)

    def test_newScheduleKeepsRetryAfter(self) -> None:
        """503 with Retry-After: 30, then a reload to a 2 s schedule: the retry still waits the 30 s."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender, schedule=(0.0, 5.0, 60.0))
        delivery = self.submit(old)
        oldSender.finish(Outcome(status=503, retryAfter=30.0))
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 30)
        self.clock.advance(1)
        new = self.dispatcher(newSender, schedule=(0.0, 2.0, 4.0))
        old.retire(new)
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 30)
        self.clock.advance(28.9)
        self.assertEqual(newSender.attempts, 0)
        self.clock.advance(0.1)
        self.assertEqual(newSender.attempts, 1)

    def test_retryAfterKeptAcrossTwoReloads(self) -> None:
        """The Retry-After travels with the delivery along the successor chain."""
        senders = [FakeSender(), FakeSender(), FakeSender()]
        first = self.dispatcher(senders[0], schedule=(0.0, 5.0))
        delivery = self.submit(first)
        senders[0].finish(Outcome(status=429, retryAfter=20.0))
        second = self.dispatcher(senders[1], schedule=(0.0, 1.0))
        third = self.dispatcher(senders[2], schedule=(0.0, 3.0))
        self.clock.advance(1)
        first.retire(second)
        self.clock.advance(1)
        second.retire(third)
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 20)
        self.clock.advance(17.9)
        self.assertEqual([s.attempts for s in senders], [1, 0, 0])
        self.clock.advance(0.1)
        self.assertEqual([s.attempts for s in senders], [1, 0, 1])

    def test_pastRetryAfterDoesNotDelay(self) -> None:
        """A Retry-After that has ended by the reload leaves the new schedule alone."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender, schedule=(0.0, 60.0))
        delivery = self.submit(old)
        oldSender.finish(Outcome(status=503, retryAfter=1.0))
        self.clock.advance(5)
        old.retire(self.dispatcher(newSender, schedule=(0.0, 10.0)))
        self.assertEqual(self.last().dueAt, delivery.acceptedAt + 10)

    def test_inFlightAttemptFinishesOnOldClient(self) -> None:
        """An attempt in flight is not cancelled; the retire Deferred waits for it."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender)
        self.submit(old)
        retired = old.retire(self.dispatcher(newSender))
        self.assertNoResult(retired)
        self.assertFalse(oldSender.pending[0].called)
        oldSender.finish(OK)
        self.successResultOf(retired)
        self.assertEqual((self.last().state, newSender.attempts), (State.DELIVERED, 0))

    def test_inFlightFailureRetriedBySuccessor(self) -> None:
        """Moved to another key: the failed attempt is stored under the new key and retried there."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender)
        self.submit(old)
        new = self.dispatcher(newSender, key="reloadTaskFailure.webhooks[1]", schedule=(0.0, 3.0))
        retired = old.retire(new)
        oldSender.finish(ERROR)
        self.successResultOf(retired)
        pending = self.last()
        self.assertEqual(
            (pending.webhookKey, pending.state), ("reloadTaskFailure.webhooks[1]", State.PENDING)
        )
        self.assertEqual(pending.dueAt, pending.acceptedAt + 3)  # the successor's schedule
        self.clock.advance(3)
        self.assertEqual((oldSender.attempts, newSender.attempts), (1, 1))
        self.assertEqual(
            dict(newSender.requests[0].headers)["webhook-id"],
            dict(oldSender.requests[0].headers)["webhook-id"],
        )

    def test_submittedAfterRetirePassedOn(self) -> None:
        """An alert stored just before the reload reaches the successor, with its key."""
        oldSender, newSender = FakeSender(), FakeSender()
        old = self.dispatcher(oldSender)
        new = self.dispatcher(newSender, key="reloadTaskFailure.webhooks[2]")
        old.retire(new)
        delivery = self.submit(old)
        self.assertEqual((oldSender.attempts, newSender.attempts), (0, 1))
        newSender.finish(OK)
        self.assertEqual(self.last().id, f"{delivery.alert.alertId}/reloadTaskFailure.webhooks[2]")

    def test_removedWaitingBecomeDeadLetters(self) -> None:
        """No successor: what waits is a dead letter at once, under the removed key."""
        sender = FakeSender()
        old = self.dispatcher(sender)
        self.submit(old, 0)
        sender.finish(ERROR)  # waiting for its retry
        recorded = len(self.outbox.history)
        self.successResultOf(old.retire(None))
        (dead,) = self.finals
        gone = removed_key(self.OLD, old.webhook.fingerprint)
        self.assertEqual((dead.webhookKey, dead.state, dead.lastOutcome), (gone, State.DEAD, REMOVED))
        # The outbox's rebind (queued before) made it a dead letter: no second write.
        self.assertEqual(len(self.outbox.history), recorded)
        # Counted under the removed key: never under the position another webhook may take.
        self.assertEqual(
            (self.stats.get("deliveries_dead", gone), self.stats.get("deliveries_dead", self.OLD)), (1, 0)
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Submitted later: dead too, never attempted.
        self.submit(old, 1)
        self.assertEqual(
            (self.finals[-1].alert, self.finals[-1].state, sender.attempts), (alert(1), State.DEAD, 1)
        )

    def test_removedInFlight(self) -> None:
        """No successor: an attempt in flight may still deliver; a failed one is not retried."""
        sender = FakeSender()
        old = self.dispatcher(sender)
        self.submit(old, 0)
        self.submit(old, 1)
        retired = old.retire(None)
        sender.finish(OK)
        sender.finish(ERROR)
        self.successResultOf(retired)
        self.assertEqual(self.last(0).state, State.DELIVERED)
        dead = self.last(1)
        self.assertEqual((dead.state, dead.lastOutcome), (State.DEAD, f"HTTP 500; {REMOVED}"))
        self.assertEqual(dead.webhookKey, removed_key(self.OLD, old.webhook.fingerprint))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_twoReloadsInARow(self) -> None:
        """Retired twice while one attempt is in flight: the last successor retries it."""
        a, b, c = FakeSender(), FakeSender(), FakeSender()
        first = self.dispatcher(a)
        self.submit(first)
        second = self.dispatcher(b, key="k1")
        third = self.dispatcher(c, key="k2")
        retired = first.retire(second)
        self.successResultOf(second.retire(third))
        a.finish(ERROR)
        self.successResultOf(retired)
        self.assertEqual(self.last().webhookKey, "k2")
        self.clock.advance(10)
        self.assertEqual((a.attempts, b.attempts, c.attempts), (1, 0, 1))

    def test_stopWhileRetiring(self) -> None:
        """Shutdown during a retirement: the attempt in flight is waited for, its retry left pending."""
        oldSender = FakeSender()
        old = self.dispatcher(oldSender)
        new = self.dispatcher(FakeSender())
        self.submit(old)
        old.retire(new)
        new.stop()
        stopped = old.stop()
        self.assertNoResult(stopped)
        oldSender.finish(ERROR)
        self.successResultOf(stopped)
        self.assertEqual(self.last().state, State.PENDING)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DispatcherNetworkTests(TestCase):
    timeout = 20

    @inlineCallbacks
    def test_deliveredOnSecondAttempt(self) -> Any:
        """Real client, real receiver: 500 then 200, the same webhook-id both times."""
        receiver = listen_http(self, Reply(500, body=b"busy"), Reply(200))
        webhook = make_webhook(receiver.url("/hook"), timeout=5.0, retry=RetryPolicy(schedule=(0.0, 0.2)))
        outbox = RecordingOutbox()
        stats = Stats()
        dispatcher = Dispatcher(webhook, start_client(self, webhook), outbox, reactor, stats)
        self.addCleanup(dispatcher.stop)
        now = reactor.seconds()
        delivery = Delivery(make_alert(), webhook.key, acceptedAt=now, dueAt=now)
        dispatcher.submit(delivery)
        history = yield outbox.waitForRecords(2)
        self.assertEqual(
            [(d.state, d.attempts, d.lastOutcome) for d in history],
            [(State.PENDING, 1, "HTTP 500"), (State.DELIVERED, 2, "HTTP 200")],
        )
        self.assertGreaterEqual(history[0].dueAt - now, 0.15)
        first, second = receiver.requests
        self.assertEqual(first.header("webhook-id"), delivery.alert.alertId)
        self.assertEqual(second.header("webhook-id"), delivery.alert.alertId)
        self.assertEqual(first.body, second.body)
        self.assertEqual(outbox.live, {})
        self.assertEqual(stats.get("attempts_started", webhook.key), 2)


class RenderErrorTests(SynchronousTestCase):
    """A ``body:`` template that fails for one alert at send time dead-letters that delivery only."""

    def test_renderErrorDeadLettersWithoutRetry(self) -> None:
        import attrs

        from butler_tw.channels.templates import compile_body

        clock, sender, outbox, stats = Clock(), FakeSender(), MemoryOutbox(), Stats()
        clock.advance(1000)
        webhook = attrs.evolve(
            make_webhook("http://127.0.0.1:9/hook", retry=RetryPolicy(schedule=(0.0, 10.0), maxAge=3600)),
            body=compile_body(
                {"text": "{% if logMessage == 'boom' %}{{ missing }}{% endif %}{{ taskName }}"}
            ),
        )
        dispatcher = Dispatcher(webhook, sender, outbox, clock, stats)
        finals: list[Delivery] = []
        dispatcher.onFinal = finals.append
        bad = Delivery(make_alert(taskId="t1", logMessage="boom"), webhook.key, acceptedAt=1000, dueAt=1000)
        good = Delivery(make_alert(taskId="t2", logMessage="fine"), webhook.key, acceptedAt=1000, dueAt=1000)
        for delivery in (bad, good):
            outbox.live[delivery.id] = delivery
            dispatcher.submit(delivery)
        # The bad one is dead at once, with its reason; the good one is sent.
        (dead,) = outbox.dead
        self.assertEqual((dead.id, dead.state, dead.attempts), (bad.id, State.DEAD, 0))
        self.assertIn("not sent: the body template failed", dead.lastOutcome)
        self.assertIn("body.text: undefined name 'missing'", dead.lastOutcome)
        self.assertEqual(finals, [dead])
        self.assertEqual(sender.attempts, 1)
        self.assertEqual(
            sender.requests[0].body, b'{"text":"' + b"Reload sales \xc3\xa5\xc3\xa4\xc3\xb6 & co" + b'"}'
        )
        clock.advance(60)  # no retry is ever scheduled for it
        self.assertEqual(sender.attempts, 1)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(stats.get("deliveries_dead", webhook.key), 1)
