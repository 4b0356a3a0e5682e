"""``/metrics``: the counters of :class:`~butler_tw.stats.Stats` and the live state, in Prometheus format.

A custom collector reads everything at scrape time, so the hot path only
bumps plain counters and nothing is counted twice. Webhooks are labelled by
their ``description`` (else their config key), never by URL.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from butler_tw import __version__
from butler_tw.config import Webhook
from butler_tw.core.cluster import ClusterView
from butler_tw.core.delivery import describe_key
from butler_tw.core.stats import Stats
from butler_tw.delivery.dispatcher import Dispatcher

#: Stats counter -> the ``outcome`` label of butler_tw_alerts_total.
ALERT_OUTCOMES = {
    "alerts_accepted": "accepted",
    "alerts_duplicate": "duplicate",
    "alerts_rate_limited": "rate_limited",
    "alerts_not_sent_disabled": "disabled",
    "alerts_no_webhooks": "no_webhooks",
    "alerts_unrouted": "unrouted",
    "alerts_shed": "shed",
}
#: Stats counter -> the ``reason`` of butler_tw_alerts_taken_by_peer_total: alerts this daemon
#: accepted that another daemon sharing the store had first (a part of "accepted", not beside it).
PEER_OUTCOMES = {"alerts_peer_duplicate": "duplicate", "alerts_peer_rate_limited": "rate_limited"}
_ATTEMPT = "attempt_outcome_"


def webhook_labels(webhooks: Iterable[Webhook]) -> dict[str, str]:
    """Config key -> label: the description (or key), made unique when two share one."""
    hooks = list(webhooks)
    names = [w.name for w in hooks]
    return {w.key: w.name if names.count(w.name) == 1 else f"{w.name} ({w.key})" for w in hooks}


class ButlerCollector(Collector):
    """Everything /metrics shows, read when scraped.

    :param webhooks: the webhooks in effect (they change at a reload).
    :param dispatchers: the live webhook key -> dispatcher mapping.
    """

    def __init__(
        self,
        stats: Stats,
        webhooks: Callable[[], Iterable[Webhook]],
        dispatchers: Mapping[str, Dispatcher],
        storeWritable: Callable[[], bool],
        udpListening: Callable[[], bool],
        clock: Callable[[], float],
        unstored: Callable[[], int] = lambda: 0,
        writeErrors: Callable[[], int] = lambda: 0,
        cluster: Callable[[], ClusterView | None] = lambda: None,
    ) -> None:
        self._stats = stats
        self._webhooks = webhooks
        self._dispatchers = dispatchers
        self._storeWritable = storeWritable
        self._udpListening = udpListening
        self._clock = clock
        self._unstored = unstored
        self._writeErrors = writeErrors
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        labels = webhook_labels(self._webhooks())

        def hook(key: str) -> str:
            # A webhook removed by a reload: "reloadTaskFailure.webhooks[0] (removed)".
            return describe_key(key, labels)

        counts = self._stats.items()
        received = CounterMetricFamily("butler_tw_datagrams_received", "Datagrams read from the UDP socket")
        received.add_metric([], self._stats.get("datagrams_received"))
        yield received
        ignored = CounterMetricFamily(
            "butler_tw_datagrams_ignored", "Well-formed datagrams that are not alerts", labels=["kind"]
        )
        for kind in ("success", "distribute"):
            ignored.add_metric([kind], self._stats.get(f"datagrams_{kind}"))
        yield ignored
        rejected = CounterMetricFamily(
            "butler_tw_datagrams_rejected", "Datagrams dropped, by reason", labels=["reason"]
        )
        for name, label, n in counts:
            if name == "datagrams_rejected":
                rejected.add_metric([label or "unknown"], n)
        yield rejected
        parsed = CounterMetricFamily(
            "butler_tw_alerts_parsed", "Alerts parsed from datagrams", labels=["kind"]
        )
        alerts = CounterMetricFamily(
            "butler_tw_alerts",
            "Alerts by what became of them: accepted for delivery, or suppressed and why",
            labels=["kind", "outcome"],
        )
        peer = CounterMetricFamily(
            "butler_tw_alerts_taken_by_peer",
            "Accepted alerts another daemon sharing the store had first (it sends them)",
            labels=["kind", "reason"],
        )
        undelivered = CounterMetricFamily(
            "butler_tw_alerts_undelivered", "Alerts that reached none of their webhooks", labels=["kind"]
        )
        attempts = CounterMetricFamily(
            "butler_tw_delivery_attempts",
            "Delivery attempts by webhook and outcome",
            labels=["webhook", "outcome"],
        )
        deliveries = CounterMetricFamily(
            "butler_tw_deliveries",
            "Deliveries that reached their end: delivered, or given up (dead)",
            labels=["webhook", "result"],
        )
        paged = CounterMetricFamily(
            "butler_tw_deliveries_paged",
            "Pending deliveries left to wait in the outbox only (out; butlerWebhook.maxPendingInMemory "
            "reached) and read back into memory (in)",
            labels=["webhook", "direction"],
        )
        for name, label, n in counts:
            if name == "alerts_parsed":
                parsed.add_metric([label], n)
            elif name in ALERT_OUTCOMES:
                alerts.add_metric([label, ALERT_OUTCOMES[name]], n)
            elif name in PEER_OUTCOMES:
                peer.add_metric([label, PEER_OUTCOMES[name]], n)
            elif name == "alerts_undelivered":
                undelivered.add_metric([label], n)
            elif name.startswith(_ATTEMPT):
                attempts.add_metric([hook(label), name[len(_ATTEMPT) :]], n)
            elif name == "deliveries_delivered":
                deliveries.add_metric([hook(label), "delivered"], n)
            elif name == "deliveries_dead":
                deliveries.add_metric([hook(label), "dead"], n)
            elif name == "deliveries_spilled":
                paged.add_metric([hook(label), "out"], n)
            elif name == "deliveries_paged_in":
                paged.add_metric([hook(label), "in"], n)
        yield from (parsed, alerts, peer, undelivered, attempts, deliveries, paged)

        latency = HistogramMetricFamily(
            "butler_tw_delivery_latency_seconds",
            "From the datagram's arrival to the webhook's 2xx answer",
            labels=["webhook"],
        )
        for (name, label), histogram in self._stats.histograms.items():
            if name == "delivery_latency":
                buckets = [(floatToGoString(bound), n) for bound, n in histogram.cumulative()]
                latency.add_metric([hook(label)], buckets, histogram.sum)
        yield latency

        now = self._clock()
        inFlight = GaugeMetricFamily("butler_tw_webhook_in_flight", "Attempts in flight", labels=["webhook"])
        queued = GaugeMetricFamily(
            "butler_tw_webhook_queued", "Deliveries waiting: due, or for a retry", labels=["webhook"]
        )
        inOutbox = GaugeMetricFamily(
            "butler_tw_webhook_waiting_in_outbox",
            "Of the deliveries waiting, about how many wait in the outbox only (beyond "
            "butlerWebhook.maxPendingInMemory; as of the last read, plus those left there since)",
            labels=["webhook"],
        )
        failures = GaugeMetricFamily(
            "butler_tw_webhook_consecutive_failures",
            "Failed attempts since the last success",
            labels=["webhook"],
        )
        lastSuccess = GaugeMetricFamily(
            "butler_tw_webhook_last_success_timestamp_seconds",
            "When an attempt last succeeded (Unix time; absent: not since the start)",
            labels=["webhook"],
        )
        lastFailure = GaugeMetricFamily(
            "butler_tw_webhook_last_failure_timestamp_seconds",
            "When an attempt last failed (Unix time; absent: not since the start)",
            labels=["webhook"],
        )
        oldest: list[float] = []
        for key, dispatcher in self._dispatchers.items():
            inFlight.add_metric([hook(key)], dispatcher.inFlight)
            queued.add_metric([hook(key)], dispatcher.queued)
            inOutbox.add_metric([hook(key)], dispatcher.waitingInOutbox)
            health = dispatcher.health
            failures.add_metric([hook(key)], health.consecutiveFailures)
            if health.lastSuccess is not None:
                lastSuccess.add_metric([hook(key)], health.lastSuccess)
            if health.lastFailure is not None:
                lastFailure.add_metric([hook(key)], health.lastFailure)
            at = dispatcher.oldestPendingAt()
            if at is not None:
                oldest.append(at)
        yield from (inFlight, queued, inOutbox, failures, lastSuccess, lastFailure)
        unstored = GaugeMetricFamily(
            "butler_tw_outbox_unstored_alerts",
            "Alerts in memory waiting to be stored (bound: butlerWebhook.maxBufferedAlerts)",
        )
        unstored.add_metric([], self._unstored())
        yield unstored
        writeErrors = CounterMetricFamily("butler_tw_outbox_write_errors", "Outbox write batches that failed")
        writeErrors.add_metric([], self._writeErrors())
        yield writeErrors
        depth = GaugeMetricFamily("butler_tw_outbox_pending", "Pending deliveries (waiting or in flight)")
        depth.add_metric([], sum(d.queued + d.inFlight for d in self._dispatchers.values()))
        yield depth
        age = GaugeMetricFamily(
            "butler_tw_outbox_oldest_pending_seconds", "Age of the oldest delivery waiting (0: none)"
        )
        age.add_metric([], max(0.0, now - min(oldest)) if oldest else 0.0)
        yield age
        writable = GaugeMetricFamily("butler_tw_outbox_writable", "1 while the outbox can be written")
        writable.add_metric([], 1.0 if self._storeWritable() else 0.0)
        yield writable
        listening = GaugeMetricFamily("butler_tw_udp_listening", "1 while the UDP socket is open")
        listening.add_metric([], 1.0 if self._udpListening() else 0.0)
        yield listening
        view = self._cluster()
        if view is not None:
            yield from cluster_metrics(view, now)
        info = GaugeMetricFamily("butler_tw_info", "The running version", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


def cluster_metrics(view: ClusterView, now: float) -> Iterator[Metric]:
    """The shared outbox (PostgreSQL), as the last read every few seconds saw it."""
    pending = GaugeMetricFamily(
        "butler_tw_cluster_outbox_pending", "Pending deliveries in the shared outbox, of every instance"
    )
    pending.add_metric([], view.pending)
    unowned = GaugeMetricFamily(
        "butler_tw_cluster_outbox_unowned",
        "Pending deliveries no instance holds a lease on (about to be taken over)",
    )
    unowned.add_metric([], view.unowned)
    dead = GaugeMetricFamily("butler_tw_cluster_outbox_dead", "Dead letters in the shared outbox")
    dead.add_metric([], view.dead)
    age = GaugeMetricFamily(
        "butler_tw_cluster_outbox_oldest_pending_seconds",
        "Age of the oldest pending delivery in the shared outbox (0: none)",
    )
    age.add_metric([], max(0.0, now - view.oldestPendingAt) if view.oldestPendingAt is not None else 0.0)
    holds = GaugeMetricFamily(
        "butler_tw_cluster_instance_holds", "Pending deliveries each instance holds", labels=["instance"]
    )
    silent = GaugeMetricFamily(
        "butler_tw_cluster_instance_silent_seconds",
        "Seconds since each instance last renewed its leases",
        labels=["instance"],
    )
    for member in view.members:
        holds.add_metric([member.name], member.holds)
        silent.add_metric([member.name], member.silentFor)
    yield from (pending, unowned, dead, age, holds, silent)


def registry_for(collector: ButlerCollector) -> CollectorRegistry:
    """A registry of our own (not the process-wide default): ours, and the process's memory and CPU."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
