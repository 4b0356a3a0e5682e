"""The pipeline from datagram to deliveries: parse, rate-limit, outbox, dispatch."""

from __future__ import annotations

from typing import Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from butler_tw.config import Config
from butler_tw.core.alert import Alert
from butler_tw.core.dedup import Deduplicator
from butler_tw.core.delivery import Delivery, State
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.stats import Stats
from butler_tw.core.throttle import OVERFLOW, LogThrottle
from butler_tw.core.wireformat import Ignored, Parsed, parse
from butler_tw.core.words import DEFAULT_CONFIG, admin_command, count
from butler_tw.delivery.dispatcher import Dispatcher
from butler_tw.delivery.outbox import AlreadyTaken, IOutbox
from butler_tw.intake.gate import Gate

log = Logger(namespace="butler_tw.notifier")


class Admission:
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
        gate: Gate | None = None,
        configPath: str = DEFAULT_CONFIG,
    ) -> None:
        self._config = config
        self._configPath = configPath
        self._dedup = dedup if dedup is not None else Deduplicator(clock, 0)
        # alertId -> [deliveries not yet at their end, of which dead, total]
        self._open: dict[str, list[int]] = {}
        self._clock = clock
        self._outbox = outbox
        self._dispatchers = dispatchers
        self._limiter = limiter
        self._stats = stats
        self._gate = gate if gate is not None else Gate(clock, stats, config.maxMessageSize)
        # Alerts handed to the outbox and not yet stored: bounded by maxBufferedAlerts.
        self._unstored = 0
        #: When an alert was last shed (for /health).
        self.lastShedAt: float | None = None
        self._dropLog = LogThrottle(clock, self._summariseDrops, maxKeys=100)
        self._storeLog = LogThrottle(clock, self._summariseSheds)
        self._guessLog = LogThrottle(
            clock,
            lambda swallowed: log.warn(
                "Parsed {n} more alerts with a guess in the last {period:g} s (alerts_ambiguous_split)",
                n=sum(swallowed.values()),
                period=self._guessLog.period,
            ),
            maxKeys=100,
        )

    def datagram(self, data: bytes, source: str = "unknown") -> None:
        """Handle one datagram from the log appender, sent from address ``source``."""
        self._stats.incr("datagrams_received")
        if not self._gate.admit(data, source):
            return
        result = parse(data)
        if isinstance(result, Parsed):
            self._stats.incr("alerts_parsed", result.alert.kind.value)
            if result.note:
                self._stats.incr("alerts_ambiguous_split")
            if result.note and self._guessLog.allow(result.alert.taskId.lower()):
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
            self._gate.reject(data, source, result)

    def reconfigure(self, config: Config, gate: Gate) -> None:
        """Take a reloaded configuration (routes, message queue) and its intake gate.

        The dispatchers are the ones in the mapping given at construction,
        which the owner updates in the same reactor turn.
        """
        old, self._gate = self._gate, gate
        self._config = config
        old.stop()

    def stop(self) -> None:
        """On shutdown: summarise what the log throttles swallowed, cancel their timers."""
        self._gate.stop()
        self._dropLog.stop()
        self._storeLog.stop()
        self._guessLog.stop()

    def alert(self, alert: Alert) -> None:
        """De-duplicate and rate-limit ``alert``, then hand it to the outbox and the dispatchers."""
        route = self._config.routes[alert.kind]
        if self._unstored + self._outbox.unsavedAlerts >= self._config.maxBufferedAlerts:
            self._shed(alert)
            return
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
        webhooks = [w for w in route.webhooks if w.routing.accepts(alert)]
        if not webhooks:
            self._drop(
                alert,
                "alerts_unrouted",
                "not sent: no webhook of {block} takes it (their match/exclude rules)",
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
        self._stats.incr("alerts_accepted", alert.kind.value)
        keys = [w.key for w in webhooks]
        self._unstored += 1
        if self._unstored == int(self._config.maxBufferedAlerts * self._config.backpressureThreshold):
            if self._storeLog.allow("backpressure"):
                log.warn(
                    "The outbox is falling behind: {n} alerts wait in memory to be stored "
                    "({pct:.0f} % of butlerWebhook.maxBufferedAlerts {max}); "
                    "beyond that, new alerts are shed",
                    n=self._unstored,
                    pct=100 * self._config.backpressureThreshold,
                    max=self._config.maxBufferedAlerts,
                )
        # The dispatchers of now: should a reload replace one before the alert
        # is stored, the retired dispatcher passes its delivery on.
        targets = [self._dispatchers[key] for key in keys]
        d = self._outbox.add(alert, keys, self._clock.seconds(), route.rateLimit)
        d.addBoth(self._stored)
        d.addCallbacks(self._dispatch, self._taken, callbackArgs=(targets,), errbackArgs=(alert,))
        d.addErrback(
            lambda f: log.failure("Could not store the alert for task {taskId}", f, taskId=alert.taskId)
        )

    def _taken(self, failure: Failure, alert: Alert) -> None:
        """Another daemon sharing the store had this alert, or its task's window, first."""
        failure.trap(AlreadyTaken)
        taken = failure.value
        assert isinstance(taken, AlreadyTaken)
        if taken.reason == "rate_limited":
            # The cluster's window decides: this daemon's own must not outlast it.
            self._limiter.release(alert)
            self._drop(
                alert,
                "alerts_peer_rate_limited",
                "rate limited: instance {by} sent this task's alert within the window",
                by=taken.by,
            )
        else:
            self._stats.incr("alerts_peer_duplicate", alert.kind.value)
            log.debug(
                "{event}: task {taskName!r} ({taskId}): instance {by} has this alert already",
                event=alert.event,
                taskName=alert.taskName,
                taskId=alert.taskId,
                by=taken.by,
            )

    def _stored(self, result: object) -> object:
        self._unstored -= 1
        return result

    @property
    def unstored(self) -> int:
        """Alerts handed to the outbox and not yet stored."""
        return self._unstored

    @property
    def lastSourceLimitedAt(self) -> float | None:
        """When datagrams from a source were last dropped by the per-source rate limit."""
        return self._gate.lastRateLimitedAt

    @property
    def backlogged(self) -> bool:
        """Whether the alerts waiting to be stored passed ``messageQueue.backpressureThreshold``."""
        return self._unstored >= self._config.maxBufferedAlerts * self._config.backpressureThreshold

    def _shed(self, alert: Alert) -> None:
        self._stats.incr("alerts_shed", alert.kind.value)
        self.lastShedAt = self._clock.seconds()
        if self._storeLog.allow("shed"):
            log.error(
                "{event}: task {taskName!r} ({taskId}) SHED: {n} alerts already wait in memory for the "
                "outbox (butlerWebhook.maxBufferedAlerts). Is the disk under {what} full or hung? "
                "Further sheds are "
                "counted (alerts_shed) and summarised once per {period:g} s",
                event=alert.event,
                taskName=alert.taskName,
                taskId=alert.taskId,
                n=self._unstored,
                what="butlerWebhook.stateDir",
                period=self._storeLog.period,
            )

    def _summariseSheds(self, swallowed: dict[str, int]) -> None:
        if swallowed.get("shed"):
            log.error(
                "Shed {n} more alerts in the last {period:g} s: the outbox could not keep up",
                n=swallowed["shed"],
                period=self._storeLog.period,
            )

    def _drop(self, alert: Alert, counter: str, why: str, **fields: object) -> None:
        """Count an alert that goes no further, and say why at info.

        One line per task and reason per minute (at most 100 such lines);
        a timer summarises the rest, so a storm of one task cannot flood the log.
        """
        self._stats.incr(counter, alert.kind.value)
        if not self._dropLog.allow((counter, alert.taskId.lower())):
            return
        log.info(
            "{event}: task {taskName!r} ({taskId}) " + why,
            event=alert.event,
            taskName=alert.taskName,
            taskId=alert.taskId,
            **fields,
        )

    def _summariseDrops(self, swallowed: dict[tuple[str, str], int]) -> None:
        byReason: dict[str, list[int]] = {}
        for (counter, _), n in swallowed.items():
            entry = byReason.setdefault(
                counter if counter != OVERFLOW[0] else "alerts_for_other_tasks", [0, 0]
            )
            entry[0] += n
            entry[1] += 1
        details = ", ".join(
            f"{n} {counter.removeprefix('alerts_').replace('_', ' ')} ({count(tasks, 'task', 'tasks')})"
            for counter, (n, tasks) in sorted(byReason.items())
        )
        log.info(
            "Also not sent in the last {period:g} s: {details}", period=self._dropLog.period, details=details
        )

    def _dispatch(self, deliveries: list[Delivery], targets: list[Dispatcher]) -> None:
        if deliveries:
            self._open[deliveries[0].alert.alertId] = [len(deliveries), 0, len(deliveries)]
        for delivery, dispatcher in zip(deliveries, targets, strict=True):
            self._stats.incr("deliveries_created", delivery.webhookKey)
            dispatcher.submit(delivery)

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
            self._stats.incr("alerts_undelivered", delivery.alert.kind.value)
            a = delivery.alert
            self._limiter.release(a)
            log.error(
                "{event}: task {taskName!r} ({taskId}) reached NONE of its {webhooks}; "
                "see `{listCommand}`; `{replayCommand}` re-queues them. "
                "Its rate-limit window is released: the task's next alert goes out",
                webhooks=count(counts[2], "webhook", "webhooks"),
                listCommand=admin_command(self._configPath, "deliveries", "--state", "dead"),
                replayCommand=admin_command(self._configPath, "replay", a.alertId),
                event=a.event,
                taskName=a.taskName,
                taskId=a.taskId,
                n=counts[2],
                alertId=a.alertId,
            )
