"""/metrics, /health and /deliveries: the rules on fakes, then the real daemon over HTTP."""

from __future__ import annotations

import json
import math
from typing import Any

import treq
from prometheus_client import generate_latest
from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from butler_tw.core.cluster import ClusterView, Member
from butler_tw.core.retry import Outcome
from butler_tw.core.stats import Histogram, Stats
from butler_tw.daemon.startup import EX_CONFIG
from butler_tw.delivery.attempts import WebhookHealth
from butler_tw.web.health import RECENT, STALE_PENDING, WebhookState, report
from butler_tw.web.metrics import ButlerCollector, registry_for, webhook_labels
from tests.support.daemon import Daemon, make_config, sample_datagrams, webhook, within
from tests.support.receivers import closed_port, listen_http, make_webhook

DEADLINE = 20.0


def state(name: str = "Chat", failing: bool = False, oldest: float | None = None) -> WebhookState:
    health = WebhookHealth()
    if failing:
        health.failure(100.0, "HTTP 500")
    else:
        health.success(100.0)
    return WebhookState(name, f"reloadTaskFailure.webhooks[{name}]", health, 1, 0, oldest)


class HealthRuleTests(SynchronousTestCase):
    def test_ok(self) -> None:
        code, body = report(1000.0, True, "0.0.0.0:9998", True, None, [state(oldest=990.0)])
        self.assertEqual((code, body["status"], body["problems"]), (200, "ok", []))
        self.assertEqual(
            body["outbox"], {"writable": True, "error": None, "pending": 1, "oldestPendingSeconds": 10.0}
        )
        self.assertEqual(body["webhooks"][0]["lastSuccess"], "1970-01-01T00:01:40+00:00")

    def test_degradedWhileAReceiverFails(self) -> None:
        code, body = report(1000.0, True, "x", True, None, [state("Chat", failing=True), state("Ticketing")])
        self.assertEqual((code, body["status"]), (200, "degraded"))
        self.assertEqual(body["problems"], ["Chat: last attempt failed (HTTP 500)"])
        self.assertEqual([w["status"] for w in body["webhooks"]], ["failing", "ok"])
        self.assertEqual(body["webhooks"][0]["consecutiveFailures"], 1)

    def test_degradedWhenADeliveryWaitsTooLong(self) -> None:
        _, body = report(1000.0 + STALE_PENDING + 1, True, "x", True, None, [state(oldest=1000.0)])
        self.assertEqual(body["status"], "degraded")

    def test_failingWithoutSocketOrStore(self) -> None:
        code, body = report(1.0, False, "", True, None, [])
        self.assertEqual((code, body["status"]), (503, "failing"))
        code, body = report(1.0, True, "x", False, "disk I/O error", [state(failing=True)])
        self.assertEqual((code, body["status"]), (503, "failing"))
        self.assertEqual(body["problems"][0], "the outbox cannot be written (disk I/O error)")

    def test_sharedStoreDownIsDegraded(self) -> None:
        code, body = report(1.0, True, "x", False, "connection refused", [state()], instance="a")
        self.assertEqual((code, body["status"]), (200, "degraded"))
        self.assertTrue(
            body["problems"][0].startswith("the shared outbox cannot be written (connection refused)")
        )

    def test_clusterSection(self) -> None:
        view = ClusterView(
            readAt=998.0,
            members=(
                Member("a", "qs-bt-1", 10, "1.0", 1.0, False, 3),
                Member("b", "qs-bt-2", 20, "1.0", 45.0, False, 0),
                Member("c", "qs-bt-3", 30, "1.0", 900.0, True, 0),
            ),
            pending=3,
            dead=1,
            oldestPendingAt=990.0,
            unowned=0,
        )
        code, body = report(1000.0, True, "x", True, None, [state()], cluster=view, instance="a")
        self.assertEqual((code, body["status"]), (200, "degraded"))
        self.assertEqual(
            body["problems"],
            [
                "instance b has not renewed its leases for 45 s (is it down?): its deliveries are taken over "
                "as their leases run out"
            ],
        )
        cluster = body["cluster"]
        self.assertEqual(
            (cluster["instance"], cluster["pending"], cluster["oldestPendingSeconds"]), ("a", 3, 10.0)
        )
        self.assertEqual(
            [(m["name"], m["state"], m["holds"]) for m in cluster["instances"]],
            [("a", "up", 3), ("b", "silent", 0), ("c", "stopped", 0)],
        )

    def test_shedAlertIsFailingForAWhile(self) -> None:
        code, body = report(1000.0, True, "x", True, None, [state()], lastShedAt=990.0)
        self.assertEqual((code, body["status"]), (503, "failing"))
        self.assertIn("alerts were shed 10 s ago", body["problems"][0])
        code, body = report(1000.0 + RECENT, True, "x", True, None, [state()], lastShedAt=990.0)
        self.assertEqual((code, body["status"]), (200, "ok"))

    def test_recentDeadLetterOrBacklogIsDegraded(self) -> None:
        hook = state()
        hook.health.lastDead = 950.0
        _, body = report(1000.0, True, "x", True, None, [hook])
        self.assertEqual(body["status"], "degraded")
        self.assertEqual(body["problems"], ["Chat: a delivery was given up 50 s ago (a dead letter)"])
        self.assertEqual(body["webhooks"][0]["lastDeadLetter"], "1970-01-01T00:15:50+00:00")
        _, body = report(1000.0, True, "x", True, None, [state()], backlogged=True)
        self.assertEqual(body["status"], "degraded")

    def test_sourceLimitedOrNothingToSendIsDegraded(self) -> None:
        _, body = report(1000.0, True, "x", True, None, [state()], lastSourceLimitedAt=999.0)
        self.assertEqual(body["status"], "degraded")
        self.assertIn("rateLimit.maxMessagesPerMinute 1 s ago", body["problems"][0])
        _, body = report(1000.0, True, "x", True, None, [], notSending="no webhook is configured")
        self.assertEqual((body["status"], body["problems"]), ("degraded", ["no webhook is configured"]))

    def test_recoveryClearsTheFailure(self) -> None:
        health = WebhookHealth()
        health.failure(1.0, "timed out after 10 s")
        health.failure(2.0, "timed out after 10 s")
        health.success(3.0)
        self.assertEqual((health.failing, health.consecutiveFailures, health.lastFailure), (False, 0, 2.0))


class MetricsTests(SynchronousTestCase):
    def test_labelsAreNamesNeverUrls(self) -> None:
        a = make_webhook(
            "https://hooks.example.com/services/T0/B0/SECRET", key="reloadTaskFailure.webhooks[0]"
        )
        b = make_webhook("https://other.example.com/x", key="reloadTaskFailure.webhooks[1]")
        labels = webhook_labels([a, b])
        self.assertEqual(set(labels), {a.key, b.key})
        self.assertNotIn("SECRET", repr(labels))
        # Two webhooks with the same description still get distinct label values.
        self.assertEqual(len(set(labels.values())), 2)

    def test_exposition(self) -> None:
        hook = make_webhook("https://hooks.example.com/x?token=SECRET", key="reloadTaskFailure.webhooks[0]")
        stats = Stats()
        stats.incr("datagrams_received", by=5)
        stats.incr("datagrams_rejected", "unknown-token", by=2)
        stats.incr("alerts_accepted", "reloadTaskFailure", by=3)
        stats.incr("alerts_rate_limited", "reloadTaskFailure")
        stats.incr("attempt_outcome_timeout", hook.key)
        stats.incr("attempt_outcome_delivered", hook.key, by=3)
        stats.observe("delivery_latency", 0.02, hook.key)
        collector = ButlerCollector(
            stats, lambda: [hook], {}, lambda: True, lambda: True, lambda: 0.0, lambda: 7, lambda: 2
        )
        text = generate_latest(registry_for(collector)).decode()
        name = hook.name
        for line in (
            "butler_tw_datagrams_received_total 5.0",
            'butler_tw_datagrams_rejected_total{reason="unknown-token"} 2.0',
            'butler_tw_alerts_total{kind="reloadTaskFailure",outcome="accepted"} 3.0',
            'butler_tw_alerts_total{kind="reloadTaskFailure",outcome="rate_limited"} 1.0',
            f'butler_tw_delivery_attempts_total{{outcome="timeout",webhook="{name}"}} 1.0',
            f'butler_tw_delivery_attempts_total{{outcome="delivered",webhook="{name}"}} 3.0',
            f'butler_tw_delivery_latency_seconds_bucket{{le="0.025",webhook="{name}"}} 1.0',
            f'butler_tw_delivery_latency_seconds_count{{webhook="{name}"}} 1.0',
            "butler_tw_outbox_writable 1.0",
            "butler_tw_outbox_unstored_alerts 7.0",
            "butler_tw_outbox_write_errors_total 2.0",
            "butler_tw_udp_listening 1.0",
        ):
            self.assertIn(line, text.splitlines())
        self.assertNotIn("SECRET", text)
        self.assertNotIn("hooks.example.com", text)
        self.assertIn("process_resident_memory_bytes", text)

    def test_outcomeKinds(self) -> None:
        self.assertEqual(
            [
                Outcome(status=204).kind,
                Outcome(status=503).kind,
                Outcome(status=404).kind,
                Outcome(error="timed out after 10 s", timedOut=True).kind,
                Outcome(error="TLS: certificate verification failed", tlsFailure=True).kind,
                Outcome(error="connection refused").kind,
            ],
            ["delivered", "retry", "permanent_failure", "timeout", "tls_error", "retry"],
        )

    def test_histogramIsCumulative(self) -> None:
        h = Histogram((0.1, 1.0))
        for value in (0.05, 0.1, 0.5, 7.0):
            h.observe(value)
        self.assertEqual(h.cumulative(), [(0.1, 2), (1.0, 3), (math.inf, 4)])
        self.assertAlmostEqual(h.sum, 7.65)


class HttpEndpointTests(TestCase):
    """Against a twistd subprocess: counters move, health turns degraded and back, deliveries show."""

    def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @inlineCallbacks
    def get(self, path: str) -> Any:
        response = yield treq.get(f"http://127.0.0.1:{self.httpPort}{path}", pool=self.pool)
        body = yield treq.content(response)
        return response.code, body.decode("utf-8")

    @inlineCallbacks
    def health(self) -> Any:
        code, body = yield self.get("/health")
        return code, json.loads(body)

    @inlineCallbacks
    def test_endToEnd(self) -> Any:
        ok = listen_http(self)
        flaky = listen_http(self, 500, 200)  # fails once, then recovers
        self.httpPort = closed_port()
        config = make_config(
            failure=[
                webhook(ok.url("/tickets?token=QUERYSECRET"), "POST", "Ticketing"),
                webhook(flaky.url("/chat/PATHSECRET"), "PUT", "Chat", retrySchedule=[0, 1.5, 60]),
            ],
            butlerWebhook={
                "shutdownGracePeriod": 5,
                "http": {"listen": f"tcp:{self.httpPort}:interface=127.0.0.1"},
            },
        )
        daemon = Daemon(self, config)
        yield daemon.start()
        yield daemon.waitForOutput("Serving /metrics, /health and /deliveries")
        code, body = yield self.health()
        self.assertEqual((code, body["status"]), (200, "ok"))
        self.assertTrue(body["udp"]["listening"])

        daemon.send(sample_datagrams()[0], b"garbage")
        yield within(flaky.waitForRequests(1), DEADLINE, "the first attempt to Chat", daemon)
        yield within(ok.waitForRequests(1), DEADLINE, "the delivery to Ticketing", daemon)
        yield daemon.waitForOutput("retrying in")
        code, body = yield self.health()
        self.assertEqual((code, body["status"]), (200, "degraded"), body)
        chat = next(w for w in body["webhooks"] if w["name"] == "Chat")
        self.assertEqual(
            (chat["status"], chat["lastFailureReason"], chat["queued"]), ("failing", "HTTP 500", 1)
        )

        code, text = yield self.get("/deliveries?state=pending")
        self.assertEqual(code, 200)
        (alert,) = json.loads(text)["alerts"]
        (pending,) = alert["deliveries"]
        self.assertEqual(
            (pending["webhook"], pending["attempts"], pending["lastOutcome"]), ("Chat", 1, "HTTP 500")
        )

        code, metrics = yield self.get("/metrics")
        self.assertEqual(code, 200)
        lines = metrics.splitlines()
        self.assertIn("butler_tw_datagrams_received_total 2.0", lines)
        self.assertIn('butler_tw_datagrams_rejected_total{reason="unknown-token"} 1.0', lines)
        self.assertIn('butler_tw_alerts_total{kind="reloadTaskFailure",outcome="accepted"} 1.0', lines)
        self.assertIn('butler_tw_delivery_attempts_total{outcome="delivered",webhook="Ticketing"} 1.0', lines)
        self.assertIn('butler_tw_delivery_attempts_total{outcome="retry",webhook="Chat"} 1.0', lines)
        self.assertIn('butler_tw_webhook_queued{webhook="Chat"} 1.0', lines)
        self.assertIn('butler_tw_webhook_consecutive_failures{webhook="Chat"} 1.0', lines)
        self.assertIn("butler_tw_outbox_pending 1.0", lines)

        # The retry succeeds: health is ok again, the counters say so.
        yield within(flaky.waitForRequests(2), DEADLINE, "the retry to Chat", daemon)
        yield daemon.waitForOutput("HTTP 200 in")
        for _ in range(50):
            code, body = yield self.health()
            if body["status"] == "ok":
                break
            yield pause(0.1)
        self.assertEqual((code, body["status"]), (200, "ok"), body)
        code, metrics = yield self.get("/metrics")
        lines = metrics.splitlines()
        self.assertIn('butler_tw_deliveries_total{result="delivered",webhook="Chat"} 1.0', lines)
        self.assertIn('butler_tw_delivery_latency_seconds_count{webhook="Chat"} 1.0', lines)
        self.assertIn("butler_tw_outbox_pending 0.0", lines)
        for secret in ("QUERYSECRET", "PATHSECRET", f":{ok.port}", f":{flaky.port}"):
            self.assertNotIn(secret, metrics)
        code, _ = yield self.get("/nope")
        self.assertEqual(code, 404)
        code, text = yield self.get("/deliveries?state=delivered")
        self.assertEqual(code, 400)
        yield daemon.stopCleanly()

    @inlineCallbacks
    def test_portInUseIsAClearError(self) -> Any:
        busy = listen_http(self)
        config = make_config(butlerWebhook={"http": {"listen": f"tcp:{busy.port}:interface=127.0.0.1"}})
        exit = yield Daemon(self, config).run(DEADLINE)
        self.assertEqual(exit.exitCode, EX_CONFIG, exit.output)
        self.assertEqual(
            exit.stderr,
            f"butler-webhook: cannot listen on HTTP 127.0.0.1:{busy.port} "
            f"(butlerWebhook.http.listen 'tcp:{busy.port}:interface=127.0.0.1'): the port is in use\n",
        )
        self.assertNotIn("Traceback", exit.output)


def pause(seconds: float) -> Any:
    return task.deferLater(reactor, seconds, lambda: None)


class RelabelTests(SynchronousTestCase):
    """At a reload, per-webhook numbers follow their webhook (a review finding)."""

    def test_movedRemovedAndSwapped(self) -> None:
        stats = Stats()
        stats.incr("deliveries_dead", "a", by=2)
        stats.incr("deliveries_dead", "b", by=5)
        stats.observe("delivery_latency", 0.1, "a")
        stats.observe("delivery_latency", 0.2, "c")
        stats.relabel({"a": "b", "b": "a@removed-x", "c": "b"})
        self.assertEqual(stats.get("deliveries_dead", "b"), 2)
        self.assertEqual(stats.get("deliveries_dead", "a@removed-x"), 5)
        self.assertEqual(stats.get("deliveries_dead", "a"), 0)
        self.assertEqual(stats.histograms[("delivery_latency", "b")].count, 2)

    def test_sharedStoreMetrics(self) -> None:
        """Alerts a peer had first are a part of 'accepted', counted apart; the cluster's gauges."""
        stats = Stats()
        stats.incr("alerts_accepted", "reloadTaskFailure", 5)
        stats.incr("alerts_peer_duplicate", "reloadTaskFailure", 3)
        stats.incr("alerts_peer_rate_limited", "reloadTaskFailure", 1)
        view = ClusterView(
            readAt=100.0,
            members=(Member("a", "h1", 1, "1", 2.0, False, 4), Member("b", "h2", 2, "1", 50.0, False, 0)),
            pending=4,
            dead=2,
            oldestPendingAt=90.0,
            unowned=1,
        )
        collector = ButlerCollector(
            stats, lambda: [], {}, lambda: True, lambda: True, lambda: 100.0, cluster=lambda: view
        )
        text = generate_latest(registry_for(collector)).decode()
        for line in (
            'butler_tw_alerts_total{kind="reloadTaskFailure",outcome="accepted"} 5.0',
            'butler_tw_alerts_taken_by_peer_total{kind="reloadTaskFailure",reason="duplicate"} 3.0',
            'butler_tw_alerts_taken_by_peer_total{kind="reloadTaskFailure",reason="rate_limited"} 1.0',
            "butler_tw_cluster_outbox_pending 4.0",
            "butler_tw_cluster_outbox_unowned 1.0",
            "butler_tw_cluster_outbox_dead 2.0",
            "butler_tw_cluster_outbox_oldest_pending_seconds 10.0",
            'butler_tw_cluster_instance_holds{instance="a"} 4.0',
            'butler_tw_cluster_instance_silent_seconds{instance="b"} 50.0',
        ):
            self.assertIn(line, text)
        self.assertNotIn('outcome="peer', text)

    def test_removedLabelShowsNoFingerprint(self) -> None:
        stats = Stats()
        stats.incr("deliveries_dead", "reloadTaskFailure.webhooks[0]@removed-1d593dd49228f836")
        collector = ButlerCollector(stats, lambda: [], {}, lambda: True, lambda: True, lambda: 0.0)
        text = generate_latest(registry_for(collector)).decode()
        self.assertIn('webhook="reloadTaskFailure.webhooks[0] (removed)"', text)
        self.assertNotIn("1d593dd4", text)
