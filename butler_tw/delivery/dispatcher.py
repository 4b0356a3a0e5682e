"""Per-webhook dispatch: a queue, a concurrency limit, retries on schedule.

One ``Dispatcher`` per webhook, so a dead or slow receiver only ever holds
its own queue: the other webhooks and the UDP intake carry on at full speed.
A configuration reload that changes, moves or removes a webhook retires its
dispatcher: the deliveries go to the successor, attempts in flight finish.

Memory is bounded (``butlerWebhook.maxPendingInMemory``): a dispatcher holds at
most that many deliveries (due, waiting for a retry, or in flight). Beyond it a
delivery waits in the outbox only, where it is stored already, and the
dispatcher reads the earliest due back (:meth:`IOutbox.due`) once half its room
is free. While some wait there, a delivery that fails waits for its retry there
too, so the outbox, ordered by due time, is the queue: a day-long receiver
outage costs disk, not memory, and changes where deliveries wait, not when
they are tried.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Callable, Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from butler_tw.channels.request import RenderError, Request, build_request
from butler_tw.config import Webhook
from butler_tw.config.model import DEFAULT_MAX_PENDING_IN_MEMORY
from butler_tw.core.delivery import REMOVED, Delivery, Page, State, removed_key
from butler_tw.core.retry import Outcome, Verdict, hint_for_status
from butler_tw.core.stats import Stats
from butler_tw.delivery.attempts import WebhookHealth
from butler_tw.delivery.outbox import IOutbox

log = Logger(namespace="butler_tw.delivery")


class Sender(Protocol):
    def send(self, request: Request) -> Deferred[Outcome]: ...


class Dispatcher:
    """Delivers to one webhook, at most ``webhook.concurrency`` at a time."""

    def __init__(
        self,
        webhook: Webhook,
        sender: Sender,
        outbox: IOutbox,
        clock: IReactorTime,
        stats: Stats,
        rand: Callable[[], float] = random.random,
        maxInMemory: int = DEFAULT_MAX_PENDING_IN_MEMORY,
    ) -> None:
        """:param maxInMemory: the most deliveries held in memory (butlerWebhook.maxPendingInMemory)."""
        self.webhook = webhook
        self._sender = sender
        self._outbox = outbox
        self._clock = clock
        self._stats = stats
        self._rand = rand
        self._ready: deque[Delivery] = deque()
        self._readyIds: set[str] = set()
        self._timers: dict[str, tuple[IDelayedCall, Delivery]] = {}
        self._inFlight: dict[str, Deferred[Outcome]] = {}
        self._idle: list[Deferred[None]] = []
        self._stopping = False
        self._retired = False
        self._successor: Dispatcher | None = None
        self._target = webhook.loggableUrl
        #: The most deliveries held in memory (butlerWebhook.maxPendingInMemory; a reload may change it).
        self.maxInMemory = maxInMemory
        # The outbox may hold pending deliveries of this webhook that are not in
        # memory: true at first (whatever a restart left is there), after a spill,
        # and until a read finds none beyond what is held.
        self._spilled = True
        self._spills = 0  # spills so far: a read asked before the last one cannot clear _spilled
        # While a read of the outbox is out: the ids that came into memory since it was asked.
        self._entered: set[str] | None = None
        self._readFailing = False
        self._counted = False  # the first read counts what waits in the outbox; then spills and reads do
        # Dispatchers a reload retired for this one: their attempts in flight are not to be read back.
        self._predecessors: list[Dispatcher] = []
        #: About how many of its deliveries wait in the outbox only (as of the last read, plus spills).
        self.waitingInOutbox = 0
        #: Called with each delivery that reached its end (delivered or dead).
        self.onFinal: Callable[[Delivery], None] | None = None
        #: The last attempts' outcomes, for /health (handed on at a reload).
        self.health = WebhookHealth()

    @property
    def queued(self) -> int:
        """Deliveries waiting: due now, or waiting for a retry (in memory, or in the outbox only)."""
        return len(self._ready) + len(self._timers) + self.waitingInOutbox

    @property
    def inMemory(self) -> int:
        """Deliveries held in memory: due, waiting for a retry, or in flight."""
        return len(self._ready) + len(self._timers) + len(self._inFlight)

    @property
    def inFlight(self) -> int:
        return len(self._inFlight)

    def oldestPendingAt(self) -> float | None:
        """When the oldest alert still waiting here (not in flight) was accepted."""
        waiting = [d.acceptedAt for d in self._ready] + [d.acceptedAt for _, d in self._timers.values()]
        return min(waiting) if waiting else None

    def submit(self, delivery: Delivery) -> None:
        """Take a pending delivery; it is attempted when due and a slot is free.

        A delivery this dispatcher already holds (the same alert received
        again with de-duplication off) is not taken twice. A retired
        dispatcher passes it on (see :meth:`retire`).
        """
        if self._retired:
            self._handOver(delivery)
            return
        if delivery.id in self._timers or delivery.id in self._inFlight or delivery.id in self._readyIds:
            log.info("Delivery {id} is already queued or in flight", id=delivery.id)
            return
        if self._full():
            self._spill()
            return
        self._schedule(delivery)

    def _full(self) -> bool:
        """Whether a new delivery would wait in the outbox only, which holds it already.

        Never while the outbox fails to write: then memory is where the delivery
        is (bounded by butlerWebhook.maxBufferedAlerts instead).
        """
        return self.inMemory >= self.maxInMemory and bool(self._outbox.healthy)

    def _spill(self) -> None:
        self._spilled = True
        self._spills += 1
        self.waitingInOutbox += 1
        self._stats.incr("deliveries_spilled", self.webhook.key)

    def refill(self) -> Deferred[int] | None:
        """Read back the earliest due of those waiting in the outbox only, once half the room is free.

        Called as attempts end and every few seconds (the service's poll). The
        read asks for as many as there is room for plus those held (it cannot
        tell them apart); those held when it was asked, or that came in while
        it was out, are left out of what it returns.

        :return: the read, firing with how many came into memory (None: no read now).
        """
        if not self._spilled or self._entered is not None or self._stopping or self._retired:
            return None
        half = (self.maxInMemory + 1) // 2
        if self.maxInMemory - self.inMemory < half:
            return None  # the common case under load, decided by counts: no set of ids built
        self._predecessors = [p for p in self._predecessors if p._inFlight]
        held = set(self.held()).union(*(p._inFlight for p in self._predecessors))
        room = self.maxInMemory - len(held)
        if room < half:
            return None
        self._entered = set()
        asked, spills = room + len(held), self._spills
        read = self._outbox.due(self.webhook.key, asked, count=not self._counted)
        return read.addCallbacks(self._pagedIn, self._pageFailed, callbackArgs=(held, asked, spills))

    def _pagedIn(self, page: Page, held: set[str], asked: int, spills: int) -> int:
        entered, self._entered = self._entered or set(), None
        if self._readFailing:
            self._readFailing = False
            log.info(
                "Reading the deliveries waiting in the outbox for {webhook} works again",
                webhook=self.webhook.name,
            )
        if self._stopping or self._retired:
            return 0
        taken = left = 0
        for delivery in page.deliveries:
            if delivery.id in held or delivery.id in entered:
                continue
            if self._full():
                left += 1
                continue
            self._schedule(delivery)
            taken += 1
        if taken:
            self._stats.incr("deliveries_paged_in", self.webhook.key, taken)
        # Every pending delivery was among those read, and none spilled since it was asked: none wait there.
        if len(page.deliveries) < asked and not left and spills == self._spills:
            self._spilled = False
            self.waitingInOutbox = 0
        elif page.pending is not None:  # counted (the first read): the rows not in memory, and spills since
            self._counted = True
            self._spilled = True
            self.waitingInOutbox = (
                max(0, page.pending - len(held) - len(entered) - taken) + self._spills - spills
            )
        else:
            self._spilled = True
            self.waitingInOutbox = max(0, self.waitingInOutbox - taken)
        return taken

    def _pageFailed(self, failure: Failure) -> int:
        self._entered = None
        if not self._readFailing:
            self._readFailing = True
            log.error(
                "Could not read the deliveries waiting in the outbox for {webhook}: {error} "
                "(tried again every few seconds; said again only once it works)",
                webhook=self.webhook.name,
                error=str(failure.value).strip() or repr(failure.value),
            )
        return 0

    def _schedule(self, delivery: Delivery) -> None:
        if self._stopping:
            return
        if self._entered is not None:
            self._entered.add(delivery.id)
        delay = delivery.dueAt - self._clock.seconds()
        if delay > 0:
            call = self._clock.callLater(delay, self._due, delivery.id)
            self._timers[delivery.id] = (call, delivery)
        else:
            self._ready.append(delivery)
            self._readyIds.add(delivery.id)
            self._pump()

    def _due(self, deliveryId: str) -> None:
        _, delivery = self._timers.pop(deliveryId)
        self._ready.append(delivery)
        self._readyIds.add(delivery.id)
        self._pump()

    def _pump(self) -> None:
        while self._ready and len(self._inFlight) < self.webhook.concurrency and not self._stopping:
            delivery = self._ready.popleft()
            self._readyIds.discard(delivery.id)
            try:
                self._attempt(delivery)
            except Exception:
                # One bad delivery must not stall the queue behind it.
                log.failure("Could not attempt delivery {id}", id=delivery.id)

    def _attempt(self, delivery: Delivery) -> None:
        started = self._clock.seconds()
        if started - delivery.acceptedAt > self.webhook.retry.maxAge:
            # Resumed after a long downtime: the alert is stale, do not send it now.
            self._expire(delivery)
            return
        try:
            request = build_request(delivery.alert, self.webhook, timestamp=int(started))
        except RenderError as e:
            # The same template fails the same way on every attempt: no retry.
            self._unrenderable(delivery, str(e))
            return
        self._stats.incr("attempts_started", self.webhook.key)
        d = self._sender.send(request)
        self._inFlight[delivery.id] = d
        d.addCallback(self._finished, delivery, started)
        d.addErrback(lambda f: log.failure("Unexpected error delivering {id}", f, id=delivery.id))
        d.addBoth(self._settle, delivery.id, d)

    def _finished(self, outcome: Outcome, delivery: Delivery, started: float) -> None:
        now = self._clock.seconds()
        attempts = delivery.attempts + 1
        verdict = outcome.verdict
        # Retired by a reload while this attempt was in flight: the webhook that
        # took over decides about a retry, and the delivery is stored under its key.
        heir = self._heir()
        nextAt: float | None = None
        lastOutcome = outcome.describe()
        if verdict is Verdict.DELIVERED:
            state = State.DELIVERED
        elif verdict is Verdict.RETRY and heir is not None and not self._stopping:
            nextAt = heir.webhook.retry.next_attempt_at(
                delivery.acceptedAt, attempts, now, outcome.retryAfter, self._rand
            )
            state = State.PENDING if nextAt is not None else State.DEAD
        elif verdict is Verdict.RETRY and heir is not None:
            state = State.PENDING  # shutting down: left pending, not given up
        elif verdict is Verdict.RETRY:
            state = State.DEAD  # no retry: the webhook was removed from the config
            lastOutcome = f"{lastOutcome}; {REMOVED}"
        else:
            state = State.DEAD
        updated = attrs.evolve(
            delivery,
            webhookKey=self._keyNow(),
            attempts=attempts,
            dueAt=nextAt if nextAt is not None else delivery.dueAt,
            state=state,
            lastOutcome=lastOutcome,
            notBefore=now + outcome.retryAfter if outcome.retryAfter is not None else 0.0,
        )
        self._log_attempt(updated, outcome, (now - started) * 1000, nextAt)
        statsKey = self._keyNow()  # after a reload: where this webhook is now
        self._stats.incr(f"attempts_{verdict.value}", statsKey)
        self._stats.incr(f"attempt_outcome_{outcome.kind}", statsKey)
        if verdict is Verdict.DELIVERED:
            self.health.success(now)
        else:
            self.health.failure(now, outcome.describe())
        if state is State.DELIVERED:
            self._stats.incr("deliveries_delivered", statsKey)
            self._stats.observe("delivery_latency", now - delivery.acceptedAt, statsKey)
        elif state is State.DEAD:
            self._stats.incr("deliveries_dead", statsKey)
            self.health.lastDead = now
        self._outbox.record(updated)
        if state is not State.PENDING and self.onFinal is not None:
            self.onFinal(updated)
        if nextAt is not None and heir is not None:
            if heir is not self:
                heir.submit(updated)
            elif self._spilled and nextAt > now and self._outbox.healthy:
                # Others wait in the outbox, some perhaps due before this one: it waits
                # there too (just recorded with its new due time) and is read back in turn.
                self._spill()
            else:
                self._schedule(updated)

    def _expire(self, delivery: Delivery) -> None:
        self._giveUp(
            delivery,
            "expired: older than maxAge before it could be sent",
            "not sent, the alert is older than maxAge ({maxAge:g} s); kept as a dead letter",
            maxAge=self.webhook.retry.maxAge,
        )

    def _unrenderable(self, delivery: Delivery, reason: str) -> None:
        self._giveUp(
            delivery,
            f"not sent: the body template failed: {reason}",
            "not sent, the body template failed ({reason}); kept as a dead letter, not retried",
            health="body template failed",
            reason=reason,
        )

    def _giveUp(self, delivery: Delivery, outcome: str, why: str, health: str = "", **fields: object) -> None:
        """Make ``delivery`` a dead letter without an attempt: say ``why`` (a format string) once."""
        dead = attrs.evolve(delivery, webhookKey=self._keyNow(), state=State.DEAD, lastOutcome=outcome)
        a = delivery.alert
        log.error(
            "{event}: task {taskName!r} ({taskId}) to {webhook}: " + why,
            event=a.event,
            taskName=a.taskName,
            taskId=a.taskId,
            webhook=self.webhook.name,
            **fields,
        )
        now = self._clock.seconds()
        self._stats.incr("deliveries_dead", dead.webhookKey)
        self.health.lastDead = now
        if health:
            self.health.failure(now, health)
        self._outbox.record(dead)
        if self.onFinal is not None:
            self.onFinal(dead)

    def _log_attempt(self, d: Delivery, outcome: Outcome, ms: float, nextAt: float | None) -> None:
        a = d.alert
        fields = dict(
            event=a.event,
            taskName=a.taskName,
            taskId=a.taskId,
            webhook=self.webhook.name,
            method=self.webhook.method,
            url=self._target,
            outcome=outcome.describe(),
            ms=round(ms),
            attempt=d.attempts,
            alertId=a.alertId,
        )
        line = (
            "{event}: task {taskName!r} ({taskId}) to {webhook} ({method} {url}): "
            "{outcome} in {ms} ms, attempt {attempt}"
        )
        if d.state is State.DELIVERED:
            log.info(line, **fields)
            return
        hint = hint_for_status(outcome.status) if outcome.status is not None else ""
        if outcome.tlsFailure:
            hint = "check the server certificate and this webhook's cert settings"
        if nextAt is not None:
            wait = max(0.0, round(nextAt - self._clock.seconds(), 1))
            log.warn(
                line + "; retrying in {wait} s" + ("; {hint}" if hint else ""), wait=wait, hint=hint, **fields
            )
        elif d.state is State.DEAD:
            if outcome.verdict is Verdict.PERMANENT:
                why = "permanent failure"
            elif self._heir() is None:
                why = "the webhook was removed from the config"
            else:
                why = "retries exhausted"
            log.error(
                line + "; giving up ({why})" + ("; {hint}" if hint else ""), why=why, hint=hint, **fields
            )
        else:
            log.warn(line + "; left pending (shutting down)", **fields)

    def _settle(self, _: object, deliveryId: str, attempt: Deferred[Outcome]) -> None:
        # A retry due at once is started from _finished, before this runs,
        # and is in flight under the same id: leave its entry alone.
        if self._inFlight.get(deliveryId) is attempt:
            del self._inFlight[deliveryId]
        self._pump()
        self.refill()
        if not self._inFlight:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def stop(self) -> Deferred[None]:
        """Stop taking work; fires when no attempt is in flight.

        Timers are cancelled; what has not been attempted stays pending in
        the outbox. The caller bounds the wait and may :meth:`abort`.
        """
        self._stopping = True
        for call, _ in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        return self._whenIdle()

    def retire(self, successor: Dispatcher | None) -> Deferred[None]:
        """Hand this webhook over to ``successor`` (a configuration reload replaced it).

        ``successor`` sends to the same receiver (the same method and URL),
        at this key or another, with the new settings; ``None`` means the
        webhook was removed from the config or now sends elsewhere.

        What waits (due now, or for a retry) goes to the successor at once,
        re-timed on its retry schedule when that changed, but never before
        the end of a ``Retry-After`` the receiver sent. Attempts in flight
        are not cancelled: they finish here, on this dispatcher's client, and
        a retry they need is the successor's. Anything submitted here later
        (an alert stored just before the reload) is passed on the same way.
        Without a successor, each delivery ends as a dead letter
        (:data:`~butler_tw.core.delivery.REMOVED`), unless an attempt in flight
        delivers it. The outbox is rebound before this is called, so every
        record uses the key the delivery has now.

        :return: fires once no attempt is in flight: then close the client.
        """
        self._retired = True
        self._successor = successor
        if successor is not None:
            successor.health = self.health  # the same receiver: its record carries on
            successor._predecessors.append(self)
            if self._spilled:
                successor._spilled = True  # what waits in the outbox moved to its key
                successor.waitingInOutbox += self.waitingInOutbox
        waiting = list(self._ready) + [delivery for _, delivery in self._timers.values()]
        for call, _ in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        self._ready.clear()
        self._readyIds.clear()
        for delivery in waiting:
            self._handOver(delivery)
        return self._whenIdle()

    def _handOver(self, delivery: Delivery) -> None:
        successor = self._successor
        if successor is None:
            # Pending in the outbox under the old key until the rebind, which
            # was queued first and has made it this dead letter: only count it.
            dead = attrs.evolve(delivery, webhookKey=self._keyNow(), state=State.DEAD, lastOutcome=REMOVED)
            self._stats.incr("deliveries_dead", self._keyNow())
            if self.onFinal is not None:
                self.onFinal(dead)
            return
        moved = attrs.evolve(delivery, webhookKey=successor.webhook.key)
        policy = successor.webhook.retry
        if moved.attempts and policy != self.webhook.retry:
            # A retry waits as long as the new schedule says, and at least
            # until the end of the Retry-After the receiver sent.
            now = self._clock.seconds()
            retryAfter = max(0.0, moved.notBefore - now) if moved.notBefore else None
            dueAt = policy.next_attempt_at(moved.acceptedAt, moved.attempts, now, retryAfter, self._rand)
            if dueAt is not None and dueAt != moved.dueAt:
                moved = attrs.evolve(moved, dueAt=dueAt)
                self._outbox.record(moved)
        successor.submit(moved)

    def _heir(self) -> Dispatcher | None:
        """Who makes this webhook's next attempts: this dispatcher, its live successor, or nobody."""
        last = self._last()
        return None if last._retired else last

    def _keyNow(self) -> str:
        """The key this webhook's deliveries are stored under now (reloads move and remove)."""
        last = self._last()
        return removed_key(last.webhook.key, last.webhook.fingerprint) if last._retired else last.webhook.key

    def _last(self) -> Dispatcher:
        last = self
        while last._retired and last._successor is not None:
            last = last._successor
        return last

    def _whenIdle(self) -> Deferred[None]:
        if not self._inFlight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def abort(self) -> None:
        """Cancel the attempts still in flight (the grace period is over)."""
        for d in list(self._inFlight.values()):
            d.cancel()

    def unattempted(self) -> int:
        """Deliveries still waiting in the queue (after :meth:`stop`)."""
        return len(self._ready)

    def held(self) -> list[str]:
        """The ids of every delivery held here: due, waiting for a retry, or in flight."""
        return [*self._readyIds, *self._timers, *self._inFlight]
