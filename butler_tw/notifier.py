"""The pipeline from datagram to deliveries: parse, rate-limit, outbox, dispatch."""

from __future__ import annotations

from typing import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from butler_tw.alert import Alert, fingerprint
from butler_tw.config import Config
from butler_tw.dedup import Deduplicator
from butler_tw.dispatch import Dispatcher
from butler_tw.outbox import Delivery, IOutbox, State
from butler_tw.ratelimit import RateLimiter
from butler_tw.stats import Stats
from butler_tw.throttle import LogThrottle
from butler_tw.wireformat import Ignored, Parsed, Rejected, parse

log = Logger(namespace="butler_tw.notifier")


class Notifier:
    """Turns datagrams into alerts and alerts into deliveries.

    Each alert goes to every webhook of its kind at once: one delivery per
    webhook, each on its own dispatcher, so no receiver waits for another.
    """

    def __init__(
        self,
        config: Config,
        clock: IReactorTime,
        outbox: IOutbox,
        dispatchers: Mapping[str, Dispatcher],
        limiter: RateLimiter,
        stats: Stats,
        dedup: Deduplicator | None = None,
    ) -> None:
        self._config = config
        self._dedup = dedup if dedup is not None else Deduplicator(clock, 0)
        # alertId -> [deliveries not yet at their end, of which dead, total]
        self._open: dict[str, list[int]] = {}
        self._clock = clock
        self._outbox = outbox
        self._dispatchers = dispatchers
        self._limiter = limiter
        self._stats = stats
        self._rejectLog = LogThrottle(clock, self._summariseRejects)

    def datagram(self, data: bytes, source: str = "unknown") -> None:
        """Handle one datagram from the log appender, sent from address ``source``."""
        self._stats.incr("datagrams_received")
        if len(data) > self._config.maxMessageSize:
            self._stats.incr("datagrams_oversize")
            reason = f"larger than maxMessageSize ({self._config.maxMessageSize} bytes)"
            self._reject(data, source, Rejected(reason, "oversize"))
            return
        result = parse(data)
        if isinstance(result, Parsed):
            self._stats.incr("alerts_parsed")
            if result.note:
                self._stats.incr("alerts_ambiguous_split")
                log.warn(
                    "Alert for task {taskName!r} ({taskId}) parsed with a guess: {note}",
                    taskName=result.alert.taskName,
                    taskId=result.alert.taskId,
                    note=result.note,
                )
            self.alert(result.alert)
        elif isinstance(result, Ignored):
            self._stats.incr(f"datagrams_{result.value}")
        else:
            self._reject(data, source, result)

    def _reject(self, data: bytes, source: str, result: Rejected) -> None:
        self._stats.incr("datagrams_rejected")
        if self._rejectLog.allow((result.kind, source)):
            log.warn(
                "Dropped a datagram of {size} bytes from {source} (sha256 {digest}): {reason}. "
                "More like it from there are counted and summarised once per {period:g} s",
                size=len(data),
                source=source,
                digest=fingerprint(data),
                reason=result.reason,
                period=self._rejectLog.period,
            )

    def _summariseRejects(self, swallowed: dict[tuple[str, str], int]) -> None:
        top = sorted(swallowed.items(), key=lambda kv: -kv[1])
        details = ", ".join(f"{n} {kind} from {source}" for (kind, source), n in top[:10])
        if len(top) > 10:
            rest = sum(n for _, n in top[10:])
            details += f", and {rest} more from {len(top) - 10} other (problem, source) pairs"
        log.warn(
            "Dropped {total} more datagrams in the last {period:g} s: {details}",
            total=sum(swallowed.values()),
            period=self._rejectLog.period,
            details=details,
        )

    def stop(self) -> None:
        """On shutdown: summarise what the log throttle swallowed, cancel its timer."""
        self._rejectLog.stop()

    def alert(self, alert: Alert) -> None:
        """De-duplicate and rate-limit ``alert``, then hand it to the outbox and the dispatchers."""
        route = self._config.routes[alert.kind]
        if self._dedup.seen(alert):
            self._drop(
                alert,
                "alerts_duplicate",
                "dropped: execution {executionId} was already received",
                executionId=alert.executionId,
            )
            return
        if not self._config.notificationsEnabled:
            self._drop(
                alert, "alerts_not_sent_disabled", "not sent: Butler.webhookNotification.enable is false"
            )
            return
        if not route.webhooks:
            self._drop(
                alert,
                "alerts_no_webhooks",
                "not sent: no webhooks in {block}",
                block=f"Butler.webhookNotification.{alert.kind.value}.webhooks",
            )
            return
        if not self._limiter.allow(alert):
            self._drop(
                alert,
                "alerts_rate_limited",
                "rate limited: one alert per {window:g} s per task, next possible in {left:.0f} s",
                window=route.rateLimit,
                left=self._limiter.remaining(alert),
            )
            return
        self._stats.incr("alerts_accepted")
        keys = [w.key for w in route.webhooks]
        d = self._outbox.add(alert, keys, self._clock.seconds())
        d.addCallback(self._dispatch)
        d.addErrback(
            lambda f: log.failure("Could not store the alert for task {taskId}", f, taskId=alert.taskId)
        )

    def _drop(self, alert: Alert, counter: str, why: str, **fields: object) -> None:
        """Count an alert that goes no further, and say why at info (one line each)."""
        self._stats.incr(counter)
        log.info(
            "{event}: task {taskName!r} ({taskId}) " + why,
            event=alert.event,
            taskName=alert.taskName,
            taskId=alert.taskId,
            **fields,
        )

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            self._open[deliveries[0].alert.alertId] = [len(deliveries), 0, len(deliveries)]
        for delivery in deliveries:
            self._stats.incr("deliveries_created", delivery.webhookKey)
            self._dispatchers[delivery.webhookKey].submit(delivery)

    def delivery_finished(self, delivery: Delivery) -> None:
        """Note a delivery's end; when every webhook of an alert failed, say so loudly.

        Tracks the alerts accepted by this process (not ones resumed after a
        restart, whose other deliveries may have ended before it).
        """
        counts = self._open.get(delivery.alert.alertId)
        if counts is None:
            return
        counts[0] -= 1
        if delivery.state is State.DEAD:
            counts[1] += 1
        if counts[0] > 0:
            return
        del self._open[delivery.alert.alertId]
        if counts[1] == counts[2]:
            self._stats.incr("alerts_undelivered")
            a = delivery.alert
            self._limiter.release(a)
            log.error(
                "{event}: task {taskName!r} ({taskId}) reached NONE of its {n} webhook(s); "
                "see `butler-tw deliveries --state dead` and `butler-tw replay`. "
                "Its rate-limit window is released: the task's next alert goes out",
                event=a.event,
                taskName=a.taskName,
                taskId=a.taskId,
                n=counts[2],
                alertId=a.alertId,
            )
