"""The notifier service: owns the dispatchers, clients, limiter and outbox."""

from __future__ import annotations

from typing import Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from butler_tw.dispatch import Dispatcher
from butler_tw.http import WebhookClient
from butler_tw.outbox import IOutbox
from butler_tw.ratelimit import RateLimiter
from butler_tw.stats import Stats

log = Logger(namespace="butler_tw.service")


class NotifierService(Service):
    """Starts by resuming pending deliveries; stops within a bounded grace period.

    ``MultiService`` waits forever for a child's stop, so every wait here is
    bounded: in-flight attempts get ``grace`` seconds, then are cancelled.
    """

    def __init__(
        self,
        clock: IReactorTime,
        outbox: IOutbox,
        dispatchers: Mapping[str, Dispatcher],
        clients: Mapping[str, WebhookClient],
        limiter: RateLimiter,
        stats: Stats,
        grace: float,
    ) -> None:
        self._clock = clock
        self._outbox = outbox
        self._dispatchers = dispatchers
        self._clients = clients
        self._limiter = limiter
        self._stats = stats
        self._grace = grace

    def startService(self) -> None:
        super().startService()
        self._outbox.pending().addCallback(self._resume).addErrback(
            lambda f: log.failure("Could not resume pending deliveries", f)
        )

    def _resume(self, deliveries: list) -> None:  # type: ignore[type-arg]
        resumed = 0
        for delivery in deliveries:
            dispatcher = self._dispatchers.get(delivery.webhookKey)
            if dispatcher is not None:
                dispatcher.submit(delivery)
                resumed += 1
        if resumed:
            log.info("Resumed {n} pending deliveries", n=resumed)

    @inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        self._limiter.stop()
        stops = [d.stop() for d in self._dispatchers.values()]
        inFlight = sum(d.inFlight for d in self._dispatchers.values())
        if inFlight:
            log.info("Stopping: waiting up to {grace:g} s for {n} attempts in flight", grace=self._grace, n=inFlight)
        # Time out a Deferred of our own, not the DeferredList: cancelling a
        # DeferredList cancels its members and then *succeeds* with their
        # CancelledErrors, so the timeout would never be seen (no abort) and
        # each member's CancelledError would be logged as unhandled.
        waiting: Deferred = Deferred()  # type: ignore[type-arg]
        DeferredList(stops, consumeErrors=True).addBoth(  # type: ignore[arg-type]
            lambda _: None if waiting.called else waiting.callback(None)
        )
        waiting.addTimeout(self._grace, self._clock)
        try:
            yield waiting
        except (TimeoutError, Exception):
            log.warn("Stopping: grace period of {grace:g} s over, cancelling attempts in flight", grace=self._grace)
            for dispatcher in self._dispatchers.values():
                dispatcher.abort()
        left = sum(d.unattempted() for d in self._dispatchers.values())
        if left:
            log.warn("Stopping: {n} deliveries not attempted are left pending in the outbox", n=left)
        yield DeferredList([c.close() for c in self._clients.values()])
        yield self._outbox.close()
        log.info("Stopped. Counters: {counters}", counters=self._stats.snapshot())
