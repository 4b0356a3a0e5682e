"""Fault tests on real sockets: what the daemon does when receivers misbehave.

Every test runs ``twistd butler-webhook`` as a subprocess (:mod:`tests.support.daemon`)
with a short retry schedule, sends it datagrams over loopback UDP, and looks at
what real ``twisted.web`` receivers (:mod:`tests.support.receivers`) got, at what the
daemon logged, and at its SQLite outbox (read-only, or through the
``butler-tw`` admin command). Every wait is bounded.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from typing import Any, Sequence

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.alerts import datagram, new_ids
from tests.support.daemon import (
    Daemon,
    cli,
    counters,
    deliveries_by_state,
    make_config,
    query_outbox,
    until,
    webhook,
    within,
)
from tests.support.receivers import RecordedRequest, Reply, closed_port, execution_of, listen_http

#: Seconds to wait for deliveries, log lines, exits.
DEADLINE = 30.0

#: Seconds after acceptance of each attempt: quick, but long enough to see a retry happen.
FAST_SCHEDULE = [0, 0.3, 0.6, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 15, 20]

EMPTY = {"pending": 0, "dead": 0}
FAIL0 = "reloadTaskFailure.webhooks[0]"


def fast_config(
    failure: Sequence[dict[str, Any]] = (),
    aborted: Sequence[dict[str, Any]] = (),
    rateLimit: float = 0,
    schedule: Sequence[float] = FAST_SCHEDULE,
) -> dict[str, Any]:
    """A config with a short retry schedule, no rate limit, a 2 s grace period."""
    return make_config(
        failure=failure,
        aborted=aborted,
        rateLimit=rateLimit,
        butlerWebhook={
            "shutdownGracePeriod": 2,
            "delivery": {"retrySchedule": list(schedule), "maxAge": 60},
        },
    )


def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


class FaultTests(TestCase):
    timeout = 60

    def outboxIs(self, daemon: Daemon, expected: dict[str, int], what: str) -> Any:
        """Wait until the outbox holds ``expected`` pending/dead deliveries."""
        return until(lambda: deliveries_by_state(daemon.outboxPath) == expected, DEADLINE, what, daemon)

    @inlineCallbacks
    def test_refusedThenListening(self) -> Any:
        """Connections refused until a receiver listens on that port: then every alert once per webhook."""
        port = closed_port()
        daemon = Daemon(
            self,
            fast_config(
                failure=[
                    webhook(f"http://127.0.0.1:{port}/post", "POST"),
                    webhook(f"http://127.0.0.1:{port}/get", "GET"),
                ]
            ),
        )
        yield daemon.start()
        alerts = [new_ids() for _ in range(10)]
        daemon.send(*(datagram("failed", task, execution) for task, execution in alerts))
        # Every delivery has been refused at least once, and is still pending.
        yield until(
            lambda: (
                query_outbox(
                    daemon.outboxPath,
                    "SELECT count(*) FROM deliveries WHERE state = 'pending' AND attempts >= 1",
                )
                == [(20,)]
            ),
            DEADLINE,
            "20 deliveries refused at least once",
            daemon,
        )
        self.assertIn("connection refused", daemon.output)

        receiver = listen_http(self, port=port)
        yield within(receiver.waitForRequests(20), DEADLINE, "20 deliveries", daemon)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        exit = yield daemon.stopCleanly()

        got = Counter((r.path, execution_of(r)) for r in receiver.requests)
        expected = Counter((path, e) for _, e in alerts for path in ("/post", "/get"))
        self.assertEqual(got, expected)  # each exactly once
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), 20)
        self.assertEqual(counts.get("deliveries_dead", 0), 0)

    @inlineCallbacks
    def test_500Then200(self) -> Any:
        """A 500 is retried; the 200 that follows ends the delivery, for each of two webhooks."""
        post = listen_http(self, Reply(500, body=b"busy"), Reply(200))
        get = listen_http(self, Reply(500, body=b"busy"), Reply(200))
        daemon = Daemon(self, fast_config(failure=[webhook(post.url("/p")), webhook(get.url("/g"), "GET")]))
        yield daemon.start()
        task, execution = new_ids()
        daemon.send(datagram("failed", task, execution))
        yield within(post.waitForRequests(2), DEADLINE, "2 POST attempts", daemon)
        yield within(get.waitForRequests(2), DEADLINE, "2 GET attempts", daemon)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        exit = yield daemon.stopCleanly()

        for receiver in (post, get):
            first, second = receiver.requests  # exactly two
            self.assertEqual(
                (first.method, first.path, first.body, first.query),
                (second.method, second.path, second.body, second.query),
            )
            self.assertEqual(execution_of(first), execution)
            self.assertEqual(first.header("webhook-id"), second.header("webhook-id"))
        self.assertIn("HTTP 500", exit.output)
        self.assertIn("retrying in", exit.output)
        counts = counters(exit.output)
        self.assertEqual(counts.get("attempts_retry"), 2)
        self.assertEqual(counts.get("deliveries_delivered"), 2)
        self.assertEqual(counts.get("deliveries_dead", 0), 0)

    @inlineCallbacks
    def test_400OneAttemptDeadLetter(self) -> Any:
        """400: one attempt, no retry, a dead letter listed by ``butler-tw deliveries --state dead``."""
        receiver = listen_http(self, Reply(400, body=b"bad payload"), Reply(200))
        daemon = Daemon(self, fast_config(failure=[webhook(receiver.url("/hook"), description="Teams")]))
        yield daemon.start()
        task, execution = new_ids()
        daemon.send(datagram("failed", task, execution))
        yield daemon.waitForOutput("giving up (permanent failure)", DEADLINE)
        self.assertIn("the receiver rejected the payload", daemon.output)
        # Long enough for three more attempts of the schedule, had it been retried.
        yield sleep(1.5)
        self.assertEqual(len(receiver.requests), 1)
        alertId = receiver.requests[0].header("webhook-id")
        self.assertTrue(alertId)

        yield self.outboxIs(daemon, {"pending": 0, "dead": 1}, "one dead letter")
        status, text = cli("deliveries", "--config", daemon.configPath, "--state", "dead")
        self.assertEqual(status, 0, text)
        lines = text.splitlines()
        self.assertEqual(len(lines), 2, text)  # header and one dead letter
        row = lines[1]
        self.assertTrue(row.startswith(f"{alertId}/reloadTaskFailure.webhooks[0] "), row)
        self.assertRegex(row, r"\sdead\s.*\sTeams\s+1\s+HTTP 400\s", row)
        self.assertIn(task, row)
        status, text = cli("deliveries", "--config", daemon.configPath, "--state", "pending")
        self.assertEqual((status, text.splitlines()[1:]), (0, ["(no pending deliveries)"]))

        exit = yield daemon.stopCleanly()
        self.assertEqual(len(receiver.requests), 1)
        counts = counters(exit.output)
        self.assertEqual(counts.get("attempts_started"), 1)
        self.assertEqual(counts.get("deliveries_dead"), 1)

    @inlineCallbacks
    def test_429RetryAfter(self) -> Any:
        """429 with ``Retry-After: 1``: the next attempt waits ~1 s, not the schedule's 0.3 s."""
        receiver = listen_http(self, Reply(429, headers=(("Retry-After", "1"),)), Reply(200))
        daemon = Daemon(self, fast_config(failure=[webhook(receiver.url("/hook"))]))
        yield daemon.start()
        daemon.send(datagram("failed", *new_ids()))
        first, second = yield within(receiver.waitForRequests(2), DEADLINE, "2 attempts", daemon)
        gap = second.receivedAt - first.receivedAt
        self.assertGreaterEqual(gap, 0.95, daemon.output)
        self.assertLess(gap, 10, daemon.output)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        exit = yield daemon.stopCleanly()
        self.assertEqual(len(receiver.requests), 2)
        self.assertEqual(first.header("webhook-id"), second.header("webhook-id"))
        self.assertIn("HTTP 429", exit.output)

    @inlineCallbacks
    def test_noAnswerTimesOutThenRetried(self) -> Any:
        """A receiver that never answers: the attempt times out (1 s), the retry is delivered."""
        receiver = listen_http(self, Reply(hang=True), Reply(200))
        daemon = Daemon(self, fast_config(failure=[webhook(receiver.url("/hook"), timeout=1)]))
        yield daemon.start()
        daemon.send(datagram("failed", *new_ids()))
        first, second = yield within(receiver.waitForRequests(2), DEADLINE, "2 attempts", daemon)
        gap = second.receivedAt - first.receivedAt
        self.assertGreaterEqual(gap, 0.9, daemon.output)
        self.assertLess(gap, 10, daemon.output)
        self.assertEqual(first.header("webhook-id"), second.header("webhook-id"))
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        # The hung connection was given up by the client, not left open.
        yield until(lambda: receiver.openConnections <= 1, DEADLINE, "the hung connection to close", daemon)
        exit = yield daemon.stopCleanly()
        self.assertIn("timed out after 1 s", exit.output)
        self.assertEqual(len(receiver.requests), 2)
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), 1)

    @inlineCallbacks
    def test_webhookIdStableAcrossAttempts(self) -> Any:
        """``webhook-id``: the same on every attempt of an alert (and on both webhooks), another per alert."""
        receiver = listen_http(self, *([Reply(503)] * 4), Reply(200))
        daemon = Daemon(
            self, fast_config(failure=[webhook(receiver.url("/post")), webhook(receiver.url("/get"), "GET")])
        )
        yield daemon.start()
        alerts = [new_ids() for _ in range(2)]
        daemon.send(*(datagram("failed", task, execution) for task, execution in alerts))
        yield within(receiver.waitForRequests(8), DEADLINE, "8 attempts", daemon)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        yield daemon.stopCleanly()

        attempts: dict[tuple[str, str], list[RecordedRequest]] = {}
        for r in receiver.requests:
            attempts.setdefault((r.path, execution_of(r)), []).append(r)
        self.assertEqual(sorted(attempts), sorted((path, e) for _, e in alerts for path in ("/get", "/post")))
        idOf: dict[str, set[str | None]] = {}
        for (_, execution), requests in attempts.items():
            self.assertGreaterEqual(len(requests), 2, "each delivery was retried at least once")
            idOf.setdefault(execution, set()).update(r.header("webhook-id") for r in requests)
            self.assertTrue(all((r.header("webhook-timestamp") or "").isdigit() for r in requests))
        self.assertEqual(len(receiver.requests), 8)
        ids = [idOf[e] for _, e in alerts]
        for each in ids:
            self.assertEqual(len(each), 1, f"one webhook-id per alert: {each}")
            self.assertNotIn(None, each)
        self.assertNotEqual(ids[0], ids[1])

    @inlineCallbacks
    def test_replayWhileRunning(self) -> Any:
        """A dead letter replayed with ``butler-tw replay`` is sent again by the running daemon, same id."""
        receiver = listen_http(self, Reply(400), Reply(200))
        daemon = Daemon(self, fast_config(failure=[webhook(receiver.url("/hook"))]))
        yield daemon.start()
        task, execution = new_ids()
        daemon.send(datagram("failed", task, execution))
        yield self.outboxIs(daemon, {"pending": 0, "dead": 1}, "the dead letter")
        self.assertEqual(len(receiver.requests), 1)
        alertId = receiver.requests[0].header("webhook-id")
        deliveryId = f"{alertId}/reloadTaskFailure.webhooks[0]"

        status, text = cli("replay", "--config", daemon.configPath, deliveryId)
        self.assertEqual((status, text), (0, f"re-queued 1 dead delivery to {FAIL0}\n"))
        # The daemon polls for replays every 2 s.
        yield within(receiver.waitForRequests(2), 8, "the replayed delivery", daemon)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        exit = yield daemon.stopCleanly()

        first, second = receiver.requests
        self.assertEqual(second.header("webhook-id"), alertId)
        self.assertEqual(second.body, first.body)
        self.assertEqual(execution_of(second), execution)
        self.assertIn("Picked up 1 delivery re-queued", exit.output)
        status, text = cli("deliveries", "--config", daemon.configPath)
        self.assertEqual((status, text.splitlines()[1:]), (0, ["(no pending or dead deliveries)"]))

    @inlineCallbacks
    def test_replayRemovedWebhookTo(self) -> Any:
        """A removed webhook's dead letter: refused without --to, then sent by the running daemon to --to's."""
        old, pager = listen_http(self, 503), listen_http(self)
        daemon = Daemon(self, fast_config(failure=[webhook(old.url("/old"), description="Old")]))
        yield daemon.start()
        daemon.send(datagram("failed", *new_ids()))
        yield within(old.waitForRequests(1), DEADLINE, "the first attempt", daemon)
        daemon.rewrite(fast_config(failure=[webhook(pager.url("/pager"), description="Pager")]))
        mark = daemon.hangup()
        yield daemon.waitForOutput("Reloaded", DEADLINE, mark)
        yield self.outboxIs(daemon, {"pending": 0, "dead": 1}, "the removed webhook's dead letter")
        alertId = old.requests[0].header("webhook-id")

        status, text = cli("replay", "--config", daemon.configPath, alertId)
        self.assertEqual(status, 1)
        self.assertIn(f"not re-queued: 1 dead delivery of {FAIL0} (removed): no webhook in the config", text)
        status, text = cli("replay", "--config", daemon.configPath, alertId, "--to", "Pager")
        self.assertEqual((status, text), (0, f"re-queued 1 dead delivery of {FAIL0} (removed) to Pager\n"))
        (request,) = yield within(pager.waitForRequests(1), 8, "the replayed delivery", daemon)
        self.assertEqual(request.header("webhook-id"), alertId)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        exit = yield daemon.stopCleanly()
        self.assertIn("Picked up 1 delivery re-queued", exit.output)

    @inlineCallbacks
    def test_sameDatagramTwiceDeliveredOnce(self) -> Any:
        """De-duplication: the same datagram twice (no rate limit) is delivered once."""
        receiver = listen_http(self)
        daemon = Daemon(self, fast_config(failure=[webhook(receiver.url("/hook"))], rateLimit=0))
        yield daemon.start()
        task, execution = new_ids()
        marker = new_ids()
        twice = datagram("failed", task, execution)
        daemon.send(twice, twice, datagram("failed", *marker))
        # Datagrams are handled in order: once the marker is delivered, both copies were seen.
        yield within(receiver.waitForRequests(2), DEADLINE, "2 deliveries", daemon)
        yield self.outboxIs(daemon, EMPTY, "an empty outbox")
        yield sleep(0.5)
        exit = yield daemon.stopCleanly()

        self.assertEqual(
            sorted(execution_of(r) for r in receiver.requests), sorted([execution, marker[1]]), exit.output
        )
        self.assertIn(f"execution {execution} was already received", exit.output)
        counts = counters(exit.output)
        self.assertEqual(counts.get("alerts_duplicate"), 1)
        self.assertEqual(counts.get("alerts_accepted"), 2)

    @inlineCallbacks
    def test_allWebhooksDeadLogsReachedNone(self) -> Any:
        """An error line says so when every webhook of an alert failed, and only then."""
        notFound = listen_http(self, 404)
        ok = listen_http(self)
        rejected = listen_http(self, 422)
        refused = closed_port()
        daemon = Daemon(
            self,
            fast_config(
                # The failure reaches one of its two webhooks ...
                failure=[webhook(notFound.url("/gone"), description="Gone"), webhook(ok.url("/ok"))],
                # ... the abort neither: a permanent failure, and retries exhausted.
                aborted=[
                    webhook(rejected.url("/strict"), "PUT", description="Strict"),
                    webhook(
                        f"http://127.0.0.1:{refused}/down", "GET", description="Down", retrySchedule=[0, 0.2]
                    ),
                ],
                rateLimit=300,
            ),
        )
        yield daemon.start()
        failedTask, abortedTask = new_ids(), new_ids()
        daemon.send(
            datagram("failed", *failedTask, taskName="Reload Half Reached"),
            datagram("aborted", *abortedTask, taskName="Reload Nothing Reached"),
        )
        yield daemon.waitForOutput("reached NONE", DEADLINE)
        yield self.outboxIs(daemon, {"pending": 0, "dead": 3}, "three dead letters")
        # The undelivered abort released its task's rate-limit window: the next abort
        # of that task goes out although rateLimit is 300 s.
        daemon.send(datagram("aborted", abortedTask[0], str(uuid.uuid4()), taskName="Reload Nothing Reached"))
        yield within(rejected.waitForRequests(2), DEADLINE, "the next abort of the task", daemon)
        yield self.outboxIs(daemon, {"pending": 0, "dead": 5}, "five dead letters")
        exit = yield daemon.stopCleanly()

        self.assertEqual((len(notFound.requests), len(ok.requests), len(rejected.requests)), (1, 1, 2))
        self.assertNotIn("rate limited", exit.output)
        none = [line for line in exit.output.splitlines() if "reached NONE" in line]
        self.assertEqual(len(none), 2, exit.output)
        self.assertIn("#error]", none[0])
        self.assertIn("Reload Nothing Reached", none[0])
        self.assertIn(abortedTask[0], none[0])
        self.assertIn("reached NONE of its 2 webhooks", none[0])
        # The commands it gives paste as they stand: this daemon's config is not the default one.
        self.assertIn(f"see `butler-tw deliveries -c {daemon.configPath} --state dead`", none[0])
        self.assertIn("`butler-tw replay -c ", none[0])
        self.assertNotIn("Reload Half Reached", none[0])
        counts = counters(exit.output)
        self.assertEqual(counts.get("alerts_undelivered"), 2)
        self.assertEqual(counts.get("deliveries_dead"), 5)
        self.assertEqual(counts.get("deliveries_delivered"), 1)
        self.assertRegex(exit.output, re.escape("to Down (GET http://127.0.0.1:") + r".*retries exhausted")
