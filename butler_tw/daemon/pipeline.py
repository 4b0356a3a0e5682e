"""The parts of the daemon that follow the configuration: built at start-up, changed at a reload.

From a :class:`~butler_tw.config.Config`, a :class:`Pipeline` makes one
client and one dispatcher per webhook, the rate limiter, the de-duplicator,
the intake gate, the admission and the delivery service. At a configuration
reload, :meth:`Pipeline.apply` changes them to a new configuration in one
reactor turn, as a :class:`~butler_tw.reloadplan.ReloadPlan` says: what is
kept keeps running untouched, and nothing pending is lost.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet import threads
from twisted.internet.defer import Deferred

from butler_tw.config import Config, Webhook
from butler_tw.config.reloadplan import ReloadPlan
from butler_tw.core.alert import EventKind
from butler_tw.core.dedup import Deduplicator
from butler_tw.core.delivery import Rebinding, removed_key
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.sources import SourceFilter
from butler_tw.core.stats import Stats
from butler_tw.core.words import DEFAULT_CONFIG
from butler_tw.delivery.admission import Admission
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.outbox import IOutbox
from butler_tw.delivery.service import DeliveryService
from butler_tw.intake.gate import Gate
from butler_tw.intake.resolve import refresh, resolve_blocking
from butler_tw.intake.sourcelimit import SourceRateLimit
from butler_tw.transport.client import WebhookClient


def rate_limits(config: Config) -> Mapping[EventKind, float]:
    return {kind: route.rateLimit for kind, route in config.routes.items()}


class Pipeline:
    """Datagram to deliveries, for one configuration at a time.

    :ivar dispatchers: webhook key -> its dispatcher: the live mapping,
        updated in place at a reload (the admission and the service share it).
    :ivar clients: webhook key -> its client, likewise.
    :ivar config: the configuration in effect.
    :ivar sources: the allow-list of source addresses, or ``None`` when
        source validation is off.
    """

    def __init__(
        self,
        reactor: Any,
        config: Config,
        outbox: IOutbox,
        stats: Stats,
        sources: SourceFilter | None,
        configPath: str = DEFAULT_CONFIG,
    ) -> None:
        self._reactor = reactor
        self._outbox = outbox
        self._stats = stats
        self.config = config
        self.sources = sources
        self.dispatchers: dict[str, Dispatcher] = {}
        self.clients: dict[str, WebhookClient] = {}
        self.limiter = RateLimiter(
            reactor,
            rate_limits(config),
            onChange=lambda kind, task, expiresAt: outbox.remember("windows", kind, (task,), expiresAt),
        )
        self.dedup = Deduplicator(
            reactor,
            config.dedupTtl,
            onRemember=lambda kind, ids, expiresAt: outbox.remember("dedup", kind, ids, expiresAt),
        )
        self.admission = Admission(
            config,
            reactor,
            outbox,
            self.dispatchers,
            self.limiter,
            stats,
            self.dedup,
            self._gate(config, sources),
            configPath,
        )
        for w in config.webhooks:
            self.dispatchers[w.key], self.clients[w.key] = self._webhook(w, config.maxPendingInMemory)
        self.service = DeliveryService(
            reactor,
            outbox,
            self.dispatchers,
            self.clients,
            self.limiter,
            stats,
            config.shutdownGrace,
            self.dedup,
            onStop=self.admission.stop,
            configPath=configPath,
        )

    def _webhook(self, webhook: Webhook, maxInMemory: int) -> tuple[Dispatcher, WebhookClient]:
        client = WebhookClient(webhook, self._reactor)
        dispatcher = Dispatcher(
            webhook, client, self._outbox, self._reactor, self._stats, maxInMemory=maxInMemory
        )
        dispatcher.onFinal = self.admission.delivery_finished
        return dispatcher, client

    def _gate(self, config: Config, sources: SourceFilter | None) -> Gate:
        perSource = SourceRateLimit(self._reactor, config.sourceRateLimit) if config.sourceRateLimit else None
        return Gate(self._reactor, self._stats, config.maxMessageSize, sources, perSource)

    def apply(
        self, plan: ReloadPlan, config: Config, sources: SourceFilter | None
    ) -> Deferred[Rebinding | None]:
        """Change to ``config``, now (in this reactor turn), as ``plan`` says.

        Kept webhooks keep their dispatcher and client, attempts in flight
        included; replaced ones get new ones that take over their deliveries;
        removed ones' deliveries become dead letters. Rate-limit windows and
        de-duplication keys are kept (and fitted to the new lengths), the
        intake gate is rebuilt. A new datagram meets only the new settings.

        :param sources: the allow-list for ``config``, names resolved.
        :return: fires with what the outbox rebind did, once committed.
        """
        # Everything new is built before anything running is changed.
        dispatchers = {w.key: self.dispatchers[w.key] for w in plan.kept}
        clients = {w.key: self.clients[w.key] for w in plan.kept}
        for w in [r.new for r in plan.replaced] + list(plan.added):
            dispatchers[w.key], clients[w.key] = self._webhook(w, config.maxPendingInMemory)
        for dispatcher in dispatchers.values():
            dispatcher.maxInMemory = config.maxPendingInMemory
        gate = self._gate(config, sources)
        # Per-webhook numbers follow their webhook: moved to its new key, or kept
        # apart under a removed key, never inherited by whoever takes the position.
        fingerprints = {w.key: w.fingerprint for w in self.config.webhooks}
        self._stats.relabel(
            {
                old: new if new is not None else removed_key(old, fingerprints.get(old, "?"))
                for old, new in plan.successors.items()
            }
        )
        self.limiter.reconfigure(rate_limits(config))
        self.dedup.reconfigure(config.dedupTtl)
        self.admission.reconfigure(config, gate)
        self._outbox.deadLetterRetention = config.deadLetterRetention
        self.service.grace = config.shutdownGrace
        self.config, self.sources = config, sources
        return self.service.replaceWebhooks(dispatchers, clients, plan.successors)

    def refreshSources(self) -> Deferred[None] | None:
        """Resolve the allow-list's host names again, off the reactor thread (every few minutes)."""
        if self.sources is None or not self.sources.names:
            return None
        return refresh(self.sources, lambda name: threads.deferToThread(resolve_blocking, name))
