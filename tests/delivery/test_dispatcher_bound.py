"""``Dispatcher`` under butlerWebhook.maxPendingInMemory: what waits beyond the bound waits in the outbox only."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.channels.butler import Request
from butler_tw.core.delivery import Delivery, Page
from butler_tw.core.retry import RetryPolicy
from butler_tw.core.stats import Stats
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.delivery.test_dispatcher import ERROR, OK, FakeSender, alert
from tests.support.receivers import make_webhook

KEY = "reloadTaskFailure.webhooks[0]"


def sent_id(request: Request) -> str:
    """Which alert a request carries (its executionId, in the Butler JSON body)."""
    assert request.body is not None
    return str(json.loads(request.body)["executionId"])


class HeldReads(MemoryOutbox):
    """A memory outbox whose due() reads at once but answers only when the test says: as the database's
    writer thread runs a read in order with the writes, and its answer reaches the reactor later."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[Deferred[Page], Page]] = []
        self.holding = False

    def due(self, webhookKey: str, limit: int, count: bool = False) -> Deferred[Page]:
        read = super().due(webhookKey, limit, count)
        if not self.holding:
            return read
        d: Deferred[Page] = Deferred()
        read.addCallback(lambda page: self.reads.append((d, page)))
        return d

    def answer(self) -> None:
        d, page = self.reads.pop(0)
        d.callback(page)


class BoundTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.sender = FakeSender()
        self.outbox = HeldReads()
        self.stats = Stats()
        webhook = make_webhook(
            "http://127.0.0.1:9/hook",
            concurrency=2,
            retry=RetryPolicy(schedule=tuple(60.0 * i for i in range(60)), maxAge=86400.0),
            key=KEY,
        )
        self.dispatcher = Dispatcher(
            webhook, self.sender, self.outbox, self.clock, self.stats, rand=lambda: 0.75, maxInMemory=10
        )
        self.dispatcher.refill()  # as at start-up: the outbox is empty
        self.sent: list[str] = []
        self.alerts = 0

    def add(self, n: int) -> list[Delivery]:
        """Store ``n`` new alerts' deliveries and hand them to the dispatcher, as the admission does."""
        now = self.clock.seconds()
        added = []
        for _ in range(n):
            self.alerts += 1
            delivery = Delivery(alert(self.alerts), KEY, acceptedAt=now, dueAt=now)
            self.outbox.live[delivery.id] = delivery
            self.dispatcher.submit(delivery)
            added.append(delivery)
        return added

    def finishAll(self, outcome: Any) -> int:
        """Answer every attempt in flight (and those started meanwhile) with ``outcome``."""
        n = 0
        while self.sender.pending:
            self.sent.append(sent_id(self.sender.requests[len(self.sent)]))
            self.sender.finish(outcome)
            self.assertLessEqual(self.dispatcher.inMemory, 10)
            n += 1
        return n

    def test_beyondTheBoundTheyWaitInTheOutboxAndComeBackInTurn(self) -> None:
        self.add(25)
        self.assertEqual((self.dispatcher.inMemory, self.dispatcher.waitingInOutbox), (10, 15))
        self.assertEqual(self.dispatcher.queued, 23, "2 in flight, 8 due in memory, 15 in the outbox")
        self.assertEqual(self.stats.get("deliveries_spilled", KEY), 15)
        self.assertEqual(self.finishAll(OK), 25)
        self.assertEqual(len(set(self.sent)), 25, "each sent once")
        self.assertEqual(self.outbox.live, {})
        self.assertEqual((self.dispatcher.queued, self.dispatcher.waitingInOutbox), (0, 0))
        self.assertEqual(self.stats.get("deliveries_paged_in", KEY), 15)

    def test_aLongOutageCostsNoMemoryAndLosesNothing(self) -> None:
        """A failing receiver: retries wait in the outbox too; memory stays at the bound; all go once it is back."""
        self.add(40)
        for _ in range(5):  # attempts fail, and fail again at each retry
            self.finishAll(ERROR)
            self.clock.advance(61)
            self.assertLessEqual(self.dispatcher.inMemory, 10)
        self.assertEqual(len(self.outbox.live), 40, "every one still pending in the outbox")
        self.assertGreater(self.dispatcher.waitingInOutbox, 0)
        failed = len(self.sent)
        self.assertGreater(failed, 5 * 10, "tried at each retry, not only those in memory")
        for _ in range(10):
            self.finishAll(OK)
            self.clock.advance(61)
        self.assertEqual(self.outbox.live, {})
        answered = self.sent[failed:]
        self.assertEqual((len(answered), len(set(answered))), (40, 40), "each once, once it answered")

    def test_noneFinishedWhileAReadWasOutIsSentAgain(self) -> None:
        """A read cannot tell held deliveries from those waiting in the outbox only, and its answer comes
        late: what was held when it was asked, or came in since, is not taken from it (or sent twice)."""
        self.add(20)  # 10 in memory (2 in flight), 10 in the outbox only
        self.outbox.holding = True
        now = self.clock.seconds()
        late = Delivery(alert(999), KEY, acceptedAt=now, dueAt=now)
        self.outbox.live[late.id] = late  # stored before the read runs, handed over after it is asked
        while not self.outbox.reads:
            self.sent.append(sent_id(self.sender.requests[len(self.sent)]))
            self.sender.finish(OK)
        self.assertEqual(self.dispatcher.inMemory, 5, "asked once half the room is free")
        self.dispatcher.submit(late)
        self.finishAll(OK)  # all held ones go, late too, while the read is out: their rows are gone now
        self.assertEqual(len(self.outbox.reads), 1, "one read at a time")
        self.outbox.holding = False
        self.outbox.answer()  # ... but the read ran before: its page still has them
        self.finishAll(OK)
        self.assertEqual(len(self.sent), 21)
        self.assertEqual(len(set(self.sent)), 21, "none sent twice")
        self.assertEqual(self.outbox.live, {})

    def test_whileTheOutboxFailsNothingIsLeftToIt(self) -> None:
        """A delivery whose write waits for a retry is in memory only: the bound gives way."""
        self.outbox.healthy = False
        self.add(15)
        self.assertEqual((self.dispatcher.inMemory, self.dispatcher.waitingInOutbox), (15, 0))

    def test_aReloadsSuccessorDoesNotReadBackWhatItsPredecessorSends(self) -> None:
        """Attempts in flight on a retired dispatcher finish there: the successor's reads leave them out."""
        self.add(20)
        inFlight = [sent_id(r) for r in self.sender.requests]  # type: ignore[attr-defined]
        successor = Dispatcher(
            self.dispatcher.webhook, self.sender, self.outbox, self.clock, self.stats, maxInMemory=10
        )
        self.dispatcher.retire(successor)  # the 8 waiting in memory go over; 10 still in the outbox only
        self.assertEqual(successor.waitingInOutbox, 10)
        successor.refill()  # 8 held: no read yet
        for _ in range(6):
            self.sender.finish(OK, index=len(self.sender.pending) - 1)  # the successor's attempts end
        self.assertEqual(len(self.sender.pending), 2 + 2, "the predecessor's 2 and the successor's 2")
        # Its reads have run (room was free): the predecessor's two were not taken.
        sent = [sent_id(r) for r in self.sender.requests]  # type: ignore[attr-defined]
        for alertId in inFlight:
            self.assertEqual(sent.count(alertId), 1)
        while self.sender.pending:
            self.sender.finish(OK)
        sent = [sent_id(r) for r in self.sender.requests]  # type: ignore[attr-defined]
        self.assertEqual((len(sent), len(set(sent))), (20, 20))
        self.assertEqual(self.outbox.live, {})
