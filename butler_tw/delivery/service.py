"""The delivery service: owns the dispatchers, clients, limiter and outbox.

At a configuration reload it swaps in the new webhooks' dispatchers and
clients (:meth:`DeliveryService.replaceWebhooks`) and retires the old ones.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, MutableMapping

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from butler_tw.core.dedup import Deduplicator
from butler_tw.core.delivery import Rebinding, State, describe_key
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.stats import Stats
from butler_tw.core.words import DEFAULT_CONFIG, admin_command, count
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.outbox import IOutbox
from butler_tw.transport.client import WebhookClient

log = Logger(namespace="butler_tw.service")


class DeliveryService(Service):
    """Starts by resuming pending deliveries; stops within a bounded grace period.

    ``MultiService`` waits forever for a child's stop, so every wait here is
    bounded: in-flight attempts get ``grace`` seconds, then are cancelled.

    :param dispatchers: webhook key -> its dispatcher, and ``clients`` its
        client: mappings shared with the ``Admission`` (and whatever reports
        on them), which :meth:`replaceWebhooks` updates in place.
    """

    def __init__(
        self,
        clock: IReactorTime,
        outbox: IOutbox,
        dispatchers: MutableMapping[str, Dispatcher],
        clients: MutableMapping[str, WebhookClient],
        limiter: RateLimiter,
        stats: Stats,
        grace: float,
        dedup: Deduplicator | None = None,
        replayPoll: float = 2.0,
        pruneEvery: float = 300.0,
        onStop: Callable[[], None] | None = None,
        configPath: str = DEFAULT_CONFIG,
    ) -> None:
        self._clock = clock
        self._configPath = configPath
        self._outbox = outbox
        self._dispatchers = dispatchers
        self._clients = clients
        self._limiter = limiter
        self._stats = stats
        #: Seconds attempts in flight get at a stop (``shutdownGracePeriod``; a reload may change it).
        self.grace = grace
        # Dispatchers a reload replaced, until their attempts in flight end: -> their clients.
        self._retiring: dict[Dispatcher, WebhookClient] = {}
        self._dedup = dedup
        self._pollFailing = False
        self._onStop = onStop
        self._loops = [
            (LoopingCall(self._pickUpReplays), replayPoll),
            (LoopingCall(self._outbox.prune), pruneEvery),
        ]

    def startService(self) -> None:
        """Open the outbox, re-arm what a restart must not forget, resume pending work.

        The restore is synchronous and happens before the reactor reads its
        first datagram (twistd binds the UDP port earlier, but nothing is read
        until the reactor runs), so restored de-duplication keys and
        rate-limit windows are in place for every datagram.
        """
        super().startService()
        self._outbox.open()
        # Queued before the read of the pending deliveries: they come back rebound.
        self._outbox.rebind({key: d.webhook.fingerprint for key, d in self._dispatchers.items()}).addCallback(
            self._logRebinding
        )
        now = self._clock.seconds()
        if self._dedup is not None:
            self._dedup.restore(self._outbox.remembered("dedup", now))
        windows = self._outbox.remembered("windows", now)
        self._limiter.restore((kind, task, expiresAt) for kind, (task,), expiresAt in windows)
        if windows:
            log.info(
                "Re-armed {windows} from before the restart",
                windows=count(len(windows), "rate-limit window", "rate-limit windows"),
                n=len(windows),
            )
        self._resumePending()
        for loop, interval in self._loops:
            loop.clock = self._clock
            loop.start(interval, now=False).addErrback(lambda f: log.failure("Outbox housekeeping failed", f))

    def _logRebinding(self, rebinding: Rebinding | None) -> None:
        if rebinding is None:
            return  # the outbox said why; the write is retried before any other
        for old, new in sorted(rebinding.moved.items()):
            log.info("Webhook {old} is now {new} in the config: its deliveries follow", old=old, new=new)
        listCommand = admin_command(self._configPath, "deliveries", "--state", "dead")
        for old, n in sorted(rebinding.removed.items()):
            if n == 0:
                fate = "it had no pending deliveries"
            elif n == 1:
                fate = f"its 1 pending delivery is a dead letter ({listCommand})"
            else:
                fate = f"its {n} pending deliveries are dead letters ({listCommand})"
            log.warn(
                "Webhook {old} was removed from the config or now sends elsewhere: {fate}",
                old=old,
                fate=fate,
                n=n,
            )

    def _resumePending(self) -> None:
        """Each dispatcher reads its earliest due pending deliveries, as many as it holds in memory.

        Queued after the rebind, so they come back under the keys of now. A
        read that fails is tried again at each poll (the dispatcher says so).
        """
        reads = [
            d for d in (dispatcher.refill() for dispatcher in self._dispatchers.values()) if d is not None
        ]
        gatherResults(reads).addCallback(self._resumed)

    def _resumed(self, taken: list[int]) -> None:
        resumed = sum(taken)
        if not resumed:
            return
        waiting = sum(d.waitingInOutbox for d in self._dispatchers.values())
        log.info(
            "Resumed {deliveries}{more}",
            deliveries=count(resumed, "pending delivery", "pending deliveries"),
            more=(
                f"; {count(waiting, 'more waits', 'more wait')} in the outbox, read in as these go out "
                "(butlerWebhook.maxPendingInMemory)"
                if waiting
                else ""
            ),
            n=resumed,
        )

    def held(self) -> list[str]:
        """The ids of every delivery this daemon holds in memory (retiring dispatchers' too)."""
        return [i for d in [*self._dispatchers.values(), *self._retiring] for i in d.held()]

    def _pickUpReplays(self) -> Deferred[None]:
        # A shared store: keep the leases of what is held, take what nobody holds.
        self._outbox.renew(self.held)
        for dispatcher in list(self._dispatchers.values()):
            dispatcher.refill()  # what waits in the outbox only, or a read that failed
        d: Deferred[Any] = self._outbox.requeued()
        d.addCallback(
            self._resume,
            "Picked up {deliveries} re-queued (by `butler-tw replay`, or handed back by another instance)",
            ("delivery", "deliveries"),
            dict(self._dispatchers),
        )
        d.addCallback(self._polled)
        # An error must not end the LoopingCall: log it (once while it lasts), try again at the next tick.
        return d.addErrback(self._pollFailed)

    def _polled(self, _: object) -> None:
        if self._pollFailing:
            self._pollFailing = False
            log.info("Checking the outbox for re-queued deliveries works again")

    def _pollFailed(self, f: Failure) -> None:
        if not self._pollFailing:
            self._pollFailing = True
            log.error(
                "Could not check the outbox for re-queued deliveries: {error} (tried again every few "
                "seconds; said again only once it works)",
                error=str(f.value).strip() or repr(f.value),
            )

    def _resume(
        self,
        deliveries: list,  # type: ignore[type-arg]
        message: str,
        noun: tuple[str, str],
        dispatchers: Mapping[str, Dispatcher],
    ) -> None:
        resumed = 0
        for delivery in deliveries:
            dispatcher = dispatchers.get(delivery.webhookKey)
            if dispatcher is not None:
                dispatcher.submit(delivery)
                resumed += 1
            else:
                # Kept as a dead letter: visible in `butler-tw deliveries`, replayable.
                self._outbox.record(
                    attrs.evolve(delivery, state=State.DEAD, lastOutcome="webhook no longer in the config")
                )
                log.warn(
                    "A delivery of alert {alertId} is for webhook {key}, which is no longer in the config: "
                    "kept as a dead letter",
                    alertId=delivery.alert.alertId,
                    key=describe_key(delivery.webhookKey, {}),
                )
        if resumed:
            log.info(message, deliveries=count(resumed, *noun), n=resumed)

    def replaceWebhooks(
        self,
        dispatchers: Mapping[str, Dispatcher],
        clients: Mapping[str, WebhookClient],
        successors: Mapping[str, str | None],
    ) -> Deferred[Rebinding | None]:
        """Switch to the webhooks of a reloaded configuration, in this reactor turn.

        :param dispatchers: one per webhook of the new configuration, and
            ``clients`` their clients; for a webhook kept as it was, the
            running ones.
        :param successors: for each running webhook not kept, the key of
            the new one that takes over its deliveries, or ``None`` when it
            was removed (see :meth:`Dispatcher.retire`).
        :return: the outbox's rebind, which fires once it is committed.

        The rebind is queued first: outbox writes run in order, so every row
        written with the old keys is rebound and every write from now on,
        with the new keys, comes after. Retired dispatchers keep their
        clients until their attempts in flight end; then the clients close.
        """
        rebinding = self._outbox.rebind({key: d.webhook.fingerprint for key, d in dispatchers.items()})
        before, beforeClients = dict(self._dispatchers), dict(self._clients)
        self._dispatchers.clear()
        self._dispatchers.update(dispatchers)
        self._clients.clear()
        self._clients.update(clients)
        for key, newKey in sorted(successors.items()):
            dispatcher, client = before[key], beforeClients[key]
            self._retiring[dispatcher] = client
            retired = dispatcher.retire(None if newKey is None else dispatchers[newKey])
            retired.addCallback(self._retired, dispatcher)
        return rebinding

    def _retired(self, _: None, dispatcher: Dispatcher) -> None:
        client = self._retiring.pop(dispatcher, None)
        if client is not None:
            client.close().addErrback(lambda f: log.failure("Closing a replaced webhook's connections", f))

    @inlineCallbacks
    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        if self._onStop is not None:
            self._onStop()
        self._limiter.stop()
        # Dispatchers a reload retired may still have attempts in flight: they get the grace too.
        dispatchers = [*self._dispatchers.values(), *self._retiring]
        clients = [*self._clients.values(), *self._retiring.values()]
        stops = [d.stop() for d in dispatchers]
        inFlight = sum(d.inFlight for d in dispatchers)
        if inFlight:
            log.info(
                "Stopping: waiting up to {grace:g} s for {attempts} in flight",
                grace=self.grace,
                attempts=count(inFlight, "attempt", "attempts"),
                n=inFlight,
            )
        # Time out a Deferred of our own, not the DeferredList: cancelling a
        # DeferredList cancels its members and then *succeeds* with their
        # CancelledErrors, so the timeout would never be seen (no abort) and
        # each member's CancelledError would be logged as unhandled.
        waiting: Deferred = Deferred()  # type: ignore[type-arg]
        DeferredList(stops, consumeErrors=True).addBoth(  # type: ignore[arg-type]
            lambda _: None if waiting.called else waiting.callback(None)
        )
        waiting.addTimeout(self.grace, self._clock)
        try:
            yield waiting
        except (TimeoutError, Exception):
            log.warn(
                "Stopping: grace period of {grace:g} s over, cancelling attempts in flight", grace=self.grace
            )
            for dispatcher in dispatchers:
                dispatcher.abort()
        left = sum(d.unattempted() for d in dispatchers)
        if left:
            log.warn(
                "Stopping: {deliveries} not attempted {are} left pending in the outbox",
                deliveries=count(left, "delivery", "deliveries"),
                are="is" if left == 1 else "are",
                n=left,
            )
        yield DeferredList([c.close() for c in clients])
        yield self._outbox.close()
        log.info("Stopped. Counters: {counters}", counters=self._stats.snapshot(), butler_tw_lifecycle=True)
