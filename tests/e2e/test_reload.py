"""Configuration reload on SIGHUP, end to end: a ``twistd butler-webhook`` subprocess, real UDP and HTTP.

Each test rewrites the daemon's config file, sends SIGHUP and waits for what
the daemon logs about it, then checks what receivers got and what the outbox
holds. Retry schedules are chosen so that a retry can only happen at the time
the test means it to (a long one before the reload, a short one after).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from butler_tw.core.delivery import REMOVED
from tests.support.alerts import datagram, new_ids
from tests.support.daemon import (
    Daemon,
    cli,
    counters,
    deliveries_by_state,
    free_udp_port,
    make_config,
    until,
    webhook,
    within,
)
from tests.support.receivers import Reply, execution_of, listen_http

#: Seconds to wait for deliveries and log lines.
DEADLINE = 30.0
KEEPING = "keeping the running configuration"
FAIL = "reloadTaskFailure"


def config(*hooks: dict[str, Any], rateLimit: float = 300, **udp: Any) -> dict[str, Any]:
    doc = make_config(failure=hooks, rateLimit=rateLimit, butlerWebhook={"shutdownGracePeriod": 2})
    if udp:
        doc["Butler"]["udpServerConfig"] = dict(udp)
    return doc


class ReloadTests(TestCase):
    timeout = 60

    def outboxIs(self, daemon: Daemon, expected: dict[str, int], what: str) -> Any:
        return until(lambda: deliveries_by_state(daemon.outboxPath) == expected, DEADLINE, what, daemon)

    @inlineCallbacks
    def test_addedWebhookReceivesPendingRetrySurvives(self) -> Any:
        """A webhook added by SIGHUP gets the next alert; a retry pending across the reload is delivered.

        First answers 500 and then 200. Its retry is 30 s away (retrySchedule
        [0, 30]) when the file is rewritten to add Second in front of it (First
        moves to position 1) with retrySchedule [0, 1, 30] and a rate limit of
        60 s instead of 300 s. After the reload, the pending retry is re-timed
        on the new schedule and delivered within seconds, by the same webhook
        at its new position, with the alert's webhook-id.
        """
        first = listen_http(self, Reply(500, body=b"busy"), Reply(200))
        second = listen_http(self)
        daemon = Daemon(
            self, config(webhook(first.url("/first"), description="First", retrySchedule=[0, 30]))
        )
        yield daemon.start()
        task, execution = new_ids()
        daemon.send(datagram("failed", task, execution))
        yield within(first.waitForRequests(1), DEADLINE, "the first attempt", daemon)
        yield daemon.waitForOutput("retrying in", DEADLINE)
        self.assertEqual(deliveries_by_state(daemon.outboxPath), {"pending": 1, "dead": 0})

        daemon.rewrite(
            config(
                webhook(second.url("/second"), "PUT", description="Second"),
                webhook(first.url("/first"), description="First", retrySchedule=[0, 1, 30]),
                rateLimit=60,
            )
        )
        mark = daemon.hangup()
        yield daemon.waitForOutput("Reloaded", DEADLINE, since=mark)
        (line,) = [x for x in daemon.output[mark:].splitlines() if "Reloaded" in x]
        self.assertIn(f"1 webhook added ({FAIL}.webhooks[0] 'Second': PUT http://127.0.0.1:", line)
        self.assertIn(
            f"1 moved ({FAIL}.webhooks[0] 'First' -> {FAIL}.webhooks[1], retrySchedule 0, 30 s", line
        )
        self.assertIn("rate limit reloadTaskFailure 300 s -> 60 s", line)

        # A new alert (another task) goes to both, the new webhook included.
        other, otherExecution = new_ids()
        daemon.send(datagram("failed", other, otherExecution))
        (got,) = yield within(second.waitForRequests(1), DEADLINE, "the new webhook's first alert", daemon)
        self.assertEqual((got.method, execution_of(got)), ("PUT", otherExecution))
        # The retry that was pending before the reload is delivered now, not in 30 s.
        yield within(first.waitForRequests(3), 10, "First's retry and the new alert", daemon)
        yield self.outboxIs(daemon, {"pending": 0, "dead": 0}, "an empty outbox")
        retried = [r for r in first.requests if execution_of(r) == execution]
        self.assertEqual(len(retried), 2)
        self.assertEqual(retried[0].header("webhook-id"), retried[1].header("webhook-id"))
        self.assertLess(retried[1].receivedAt - retried[0].receivedAt, 10)

        # The task's rate-limit window survived the reload, now 60 s long.
        mark = daemon.mark()
        daemon.send(datagram("failed", task, new_ids()[1]))
        yield daemon.waitForOutput("rate limited: one alert per 60 s per task", DEADLINE, since=mark)

        exit = yield daemon.stopCleanly()
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), 3)
        self.assertEqual(counts.get("alerts_rate_limited"), 1)
        self.assertEqual((len(first.requests), len(second.requests)), (3, 1))

    @inlineCallbacks
    def test_invalidConfigKeepsRunningOne(self) -> Any:
        """An invalid file: every problem logged with its key path; the daemon goes on as it was."""
        receiver = listen_http(self)
        daemon = Daemon(self, config(webhook(receiver.url("/hook"), description="Teams"), rateLimit=0))
        yield daemon.start()
        daemon.rewrite(
            config(
                webhook(receiver.url("/hook"), "FETCH", description="Teams"),
                webhook(
                    receiver.url("/other"),
                    description="Other",
                    cert={"enable": True, "certCA": "/nonexistent/private-ca.pem"},
                ),
            )
        )
        mark = daemon.hangup()
        yield daemon.waitForOutput(
            f"certCA: file not found: /nonexistent/private-ca.pem; {KEEPING}", DEADLINE, mark
        )
        errors = [x for x in daemon.output[mark:].splitlines() if KEEPING in x]
        self.assertEqual(len(errors), 3, daemon.output[mark:])
        self.assertIn("#error] Not reloading", errors[0])
        self.assertIn("2 problems in the configuration", errors[0])
        self.assertIn(
            f"Butler.webhookNotification.{FAIL}.webhooks[0].httpMethod: must be GET, POST or PUT", errors[1]
        )
        self.assertIn(f"Butler.webhookNotification.{FAIL}.webhooks[1].cert.certCA: file not found", errors[2])

        daemon.send(datagram("failed", *new_ids()))
        (got,) = yield within(receiver.waitForRequests(1), DEADLINE, "an alert with the old config", daemon)
        self.assertEqual((got.method, got.path), ("POST", "/hook"))
        exit = yield daemon.stopCleanly()
        self.assertNotIn("Reloaded", exit.output)

    @inlineCallbacks
    def test_removedWebhookPendingDeliveryIsDeadLetter(self) -> Any:
        """A webhook removed while a delivery to it waits for a retry: that delivery is a dead letter."""
        gone = listen_http(self, Reply(503))
        stays = listen_http(self)
        daemon = Daemon(
            self,
            config(
                webhook(gone.url("/gone"), description="Gone", retrySchedule=[0, 30]),
                webhook(stays.url("/stays"), description="Stays"),
            ),
        )
        yield daemon.start()
        daemon.send(datagram("failed", *new_ids()))
        yield within(gone.waitForRequests(1), DEADLINE, "Gone's first attempt", daemon)
        yield within(stays.waitForRequests(1), DEADLINE, "Stays' delivery", daemon)
        yield self.outboxIs(daemon, {"pending": 1, "dead": 0}, "Gone's pending retry")

        daemon.rewrite(config(webhook(stays.url("/stays"), description="Stays")))
        mark = daemon.hangup()
        yield daemon.waitForOutput("Reloaded", DEADLINE, since=mark)
        self.assertIn(
            f"1 webhook removed ({FAIL}.webhooks[0] 'Gone': 1 pending delivery kept as a dead letter), "
            f"1 moved ({FAIL}.webhooks[1] 'Stays' -> {FAIL}.webhooks[0], deliveries follow)",
            daemon.output[mark:],
        )
        yield self.outboxIs(daemon, {"pending": 0, "dead": 1}, "the dead letter")
        status, text = cli("deliveries", "--config", daemon.configPath, "--state", "dead")
        self.assertEqual(status, 0, text)
        header, row = text.splitlines()
        alertId = gone.requests[0].header("webhook-id")
        self.assertTrue(row.startswith(f"{alertId}/{FAIL}.webhooks[0]@removed-"), row)
        self.assertIn(f"  {FAIL}.webhooks[0] (removed)  ", row)
        self.assertIn(REMOVED[:30], row)

        exit = yield daemon.stopCleanly()
        self.assertEqual(len(gone.requests), 1)
        self.assertEqual(counters(exit.output).get("deliveries_dead"), 1)

    @inlineCallbacks
    def test_udpPortChangeNeedsRestart(self) -> Any:
        """A new portTaskFailure is not applied: a warning says so, and the old port keeps working."""
        receiver = listen_http(self)
        port = free_udp_port()
        daemon = Daemon(
            self,
            config(webhook(receiver.url("/hook")), enable=True, serverHost="127.0.0.1", portTaskFailure=port),
        )
        yield daemon.start()
        other = free_udp_port()
        daemon.rewrite(
            config(webhook(receiver.url("/hook")), enable=True, serverHost="127.0.0.1", portTaskFailure=other)
        )
        mark = daemon.hangup()
        yield daemon.waitForOutput("takes effect after a restart", DEADLINE, since=mark)
        self.assertIn(
            "#warn] Butler.udpServerConfig.portTaskFailure changed, takes effect after a restart "
            f"(running with {port}, the file says {other}): still listening on UDP 127.0.0.1:{port}",
            daemon.output[mark:],
        )
        self.assertIn("no change that takes effect now", daemon.output[mark:])
        daemon.send(datagram("failed", *new_ids()))  # to the port it listens on
        yield within(receiver.waitForRequests(1), DEADLINE, "an alert on the old port", daemon)
        yield daemon.stopCleanly()
