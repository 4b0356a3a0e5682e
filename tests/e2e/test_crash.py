"""Crash and restart, end to end: what the outbox keeps when the daemon dies.

Each test runs ``twistd butler-webhook`` as a subprocess (:mod:`tests.daemon`),
ends it with ``kill -9`` or SIGTERM, starts a second one on the same config,
state directory and UDP port (:meth:`Daemon.successor`), and checks what a
real receiver gets. The outbox is looked at read-only with ``sqlite3``.
Every wait is bounded; every process is reaped on cleanup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from butler_tw.delivery.stores.sqlite import connect
from tests.support.alerts import datagram
from tests.support.daemon import (
    STOPPED,
    Daemon,
    Exit,
    counters,
    deliveries_by_state,
    make_config,
    until,
    webhook,
    within,
)
from tests.support.receivers import RecordedRequest, Reply, closed_port, execution_of, listen_http

#: Seconds to wait for deliveries, log lines, exits.
DEADLINE = 45.0

#: Alerts sent while the receiver is down.
ALERTS = 300
#: Alerts sent to a slow receiver, of which half are delivered when the daemon is ended.
MID_ALERTS = 60
#: POST and GET: deliveries per alert.
WEBHOOKS = ("/post", "/get")

#: Seconds after acceptance: every 1-2 s for a minute, so that deliveries
#: follow within seconds once the receiver is up (offsets, not intervals).
SCHEDULE = [0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 35, 40, 50, 60]


def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


def crash_config(port: int, rateLimit: float = 0, inMemory: int | None = None) -> dict[str, Any]:
    """Two webhooks (POST and GET) on ``port`` of loopback, a short retry schedule.

    :param inMemory: butlerWebhook.maxPendingInMemory (None: the default, above what the tests send).
    """
    return make_config(
        failure=[
            webhook(f"http://127.0.0.1:{port}/post", "POST", description="Post hook"),
            webhook(f"http://127.0.0.1:{port}/get", "GET", description="Get hook"),
        ],
        rateLimit=rateLimit,
        butlerWebhook={
            "shutdownGracePeriod": 3,
            "delivery": {"retrySchedule": SCHEDULE, "maxAge": 600},
            **({"maxPendingInMemory": inMemory} if inMemory is not None else {}),
        },
    )


class CrashTests(TestCase):
    timeout = 90

    def assertCleanStop(self, exit: Exit) -> None:
        self.assertFalse(exit.killed, f"needed SIGKILL:\n{exit.output}")
        self.assertIn(STOPPED, exit.output)
        self.assertNotIn("Unhandled error", exit.output)
        self.assertNotIn("Traceback", exit.output)

    @inlineCallbacks
    def acceptWhileDown(self, inMemory: int | None = None, storeProcess: bool = True) -> Any:
        """Start a daemon whose receiver is down, send :data:`ALERTS` alerts, wait until all are in its outbox.

        :param storeProcess: ``butlerWebhook.storeProcess`` (false: the writer is a thread of the daemon).
        :returns: (daemon, receiver port, execution ids)
        """
        port = closed_port()
        config = crash_config(port, inMemory=inMemory)
        config["butlerWebhook"]["storeProcess"] = storeProcess
        httpPort = closed_port()
        config["butlerWebhook"]["http"] = {"listen": f"tcp:{httpPort}:interface=127.0.0.1"}
        daemon = Daemon(self, config)
        daemon.httpPort = httpPort  # type: ignore[attr-defined]
        yield daemon.start()
        executions = [str(uuid.uuid4()) for _ in range(ALERTS)]
        # Distinct tasks: the rate limit (off anyway) would not apply.
        daemon.send(*(datagram("failed", str(uuid.uuid4()), e) for e in executions))
        expected = {"pending": ALERTS * len(WEBHOOKS), "dead": 0}
        yield until(
            lambda: deliveries_by_state(daemon.outboxPath) == expected,
            DEADLINE,
            f"{expected['pending']} pending deliveries in the outbox",
            daemon,
        )
        yield daemon.waitForOutput("connection refused", DEADLINE)
        return daemon, port, executions

    @inlineCallbacks
    def restartAndDeliver(self, first: Daemon, port: int, resumed: str = "") -> Any:
        """Start the successor of ``first``, bring the receiver up, wait until the outbox is empty.

        :param resumed: the line it says at start (default: that it resumed every delivery).
        :returns: (receiver, the successor's :class:`Exit` after SIGTERM)
        """
        second = first.successor(self)
        yield second.start()
        total = ALERTS * len(WEBHOOKS)
        yield second.waitForOutput(resumed or f"Resumed {total} pending deliveries\n", DEADLINE)
        receiver = listen_http(self, port=port)
        yield within(receiver.waitForRequests(total), DEADLINE, f"{total} deliveries", second)
        yield until(
            lambda: deliveries_by_state(second.outboxPath) == {"pending": 0, "dead": 0},
            DEADLINE,
            "an empty outbox",
            second,
        )
        exit: Exit = yield second.stop()
        self.assertCleanStop(exit)
        return receiver, exit

    def byDelivery(self, requests: list[RecordedRequest]) -> dict[tuple[str, str], list[RecordedRequest]]:
        got: dict[tuple[str, str], list[RecordedRequest]] = {}
        for r in requests:
            got.setdefault((r.path, execution_of(r)), []).append(r)
        return got

    def assertEveryAlertEverywhere(self, requests: list[RecordedRequest], executions: list[str]) -> None:
        """Each alert reached each webhook; every request of one alert has the same webhook-id,
        and no two alerts share one."""
        got = self.byDelivery(requests)
        self.assertEqual(set(got), {(path, e) for e in executions for path in WEBHOOKS})
        idOf: dict[str, set[str | None]] = {}
        for (_, execution), attempts in got.items():
            idOf.setdefault(execution, set()).update(r.header("webhook-id") for r in attempts)
        for execution, ids in idOf.items():
            self.assertEqual(len(ids), 1, f"{execution}: several webhook-ids {ids}")
            self.assertNotIn(None, ids)
        self.assertEqual(len({next(iter(ids)) for ids in idOf.values()}), len(executions))

    @inlineCallbacks
    def test_kill9ThenRestart(self) -> Any:
        """kill -9 with hundreds of alerts pending: the next daemon delivers every one to every webhook."""
        first, port, executions = yield self.acceptWhileDown()
        exit: Exit = yield first.kill()
        self.assertEqual(exit.signal, 9, exit.output)
        self.assertNotIn(STOPPED, exit.output)

        receiver, exit = yield self.restartAndDeliver(first, port)
        self.assertGreaterEqual(len(receiver.requests), ALERTS * len(WEBHOOKS))
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), ALERTS * len(WEBHOOKS), exit.output[-2000:])
        self.assertEqual(counts.get("deliveries_dead", 0), 0)

    @inlineCallbacks
    def test_kill9ThenRestartWriterThread(self) -> Any:
        """The same with ``storeProcess: false``: the outbox written by a thread of the daemon."""
        first, port, executions = yield self.acceptWhileDown(storeProcess=False)
        self.assertNotIn("written by a process of its own", first.output)
        exit: Exit = yield first.kill()
        self.assertEqual(exit.signal, 9, exit.output)

        receiver, exit = yield self.restartAndDeliver(first, port)
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        self.assertEqual(counters(exit.output).get("deliveries_delivered"), ALERTS * len(WEBHOOKS))

    @inlineCallbacks
    def test_sigtermThenRestart(self) -> Any:
        """SIGTERM with hundreds of alerts pending: the next daemon delivers each exactly once per webhook."""
        first, port, executions = yield self.acceptWhileDown()
        exit: Exit = yield first.stop()
        self.assertCleanStop(exit)

        receiver, exit = yield self.restartAndDeliver(first, port)
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        duplicates = {k: len(v) for k, v in self.byDelivery(receiver.requests).items() if len(v) > 1}
        self.assertEqual(duplicates, {})
        self.assertEqual(len(receiver.requests), ALERTS * len(WEBHOOKS))
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), ALERTS * len(WEBHOOKS))

    @inlineCallbacks
    def test_boundedMemoryRestartThenDeliver(self) -> Any:
        """600 pending with 50 per webhook held in memory: the rest wait in the outbox, across a restart
        too, and each goes exactly once when the receiver is back."""
        first, port, executions = yield self.acceptWhileDown(inMemory=50)
        exit: Exit = yield first.stop()
        self.assertCleanStop(exit)
        self.assertGreaterEqual(counters(exit.output).get("deliveries_spilled", 0), 500, exit.output[-2000:])

        receiver, exit = yield self.restartAndDeliver(
            first, port, "Resumed 100 pending deliveries; 500 more wait in the outbox"
        )
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        duplicates = {k: len(v) for k, v in self.byDelivery(receiver.requests).items() if len(v) > 1}
        self.assertEqual(duplicates, {})
        counts = counters(exit.output)
        self.assertEqual(counts.get("deliveries_delivered"), ALERTS * len(WEBHOOKS))
        self.assertGreaterEqual(counts.get("deliveries_paged_in", 0), 500)

    @inlineCallbacks
    def test_boundedMemoryReceiverBack(self) -> Any:
        """The receiver comes back while the daemon runs: what waited in the outbox only is read back in turn."""
        daemon, port, executions = yield self.acceptWhileDown(inMemory=50)
        response = yield treq.get(f"http://127.0.0.1:{daemon.httpPort}/health", persistent=False)
        hooks = (yield treq.json_content(response))["webhooks"]
        self.assertEqual([(w["queued"] + w["inFlight"]) for w in hooks], [ALERTS, ALERTS])
        for w in hooks:  # at most 50 in memory (fewer while retries wait in the outbox too)
            self.assertTrue(ALERTS - 50 <= w["waitingInOutbox"] < ALERTS, hooks)
        response = yield treq.get(f"http://127.0.0.1:{daemon.httpPort}/metrics", persistent=False)
        metrics = (yield treq.text_content(response)).splitlines()
        waiting = [
            line for line in metrics if line.startswith('butler_tw_webhook_waiting_in_outbox{webhook="Post')
        ]
        self.assertEqual(len(waiting), 1, metrics)
        self.assertGreaterEqual(float(waiting[0].split()[-1]), ALERTS - 50)
        out = [
            line for line in metrics if line.startswith('butler_tw_deliveries_paged_total{direction="out"')
        ]
        self.assertEqual(len(out), 2, metrics)
        receiver = listen_http(self, port=port)
        total = ALERTS * len(WEBHOOKS)
        yield within(receiver.waitForRequests(total), DEADLINE, f"{total} deliveries", daemon)
        yield until(
            lambda: deliveries_by_state(daemon.outboxPath) == {"pending": 0, "dead": 0},
            DEADLINE,
            "an empty outbox",
            daemon,
        )
        exit: Exit = yield daemon.stop()
        self.assertCleanStop(exit)
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        self.assertEqual(len(receiver.requests), total, "none twice")

    @inlineCallbacks
    def test_outboxProcessKilledLosesNothing(self) -> Any:
        """butlerWebhook.storeProcess (the default): the outbox's own process killed mid-stream is started again and
        sent what it had not stored; every alert reaches every webhook, and the outbox ends empty."""
        receiver = listen_http(self, Reply(200, delay=0.05))
        daemon = Daemon(self, crash_config(receiver.port))
        yield daemon.start()
        output = yield daemon.waitForOutput("writes ", DEADLINE)
        (pid,) = re.findall(r"Outbox process (\d+) writes", output)
        executions = [str(uuid.uuid4()) for _ in range(MID_ALERTS * 4)]
        daemon.send(*(datagram("failed", str(uuid.uuid4()), e) for e in executions[: MID_ALERTS * 2]))
        yield within(receiver.waitForRequests(MID_ALERTS), DEADLINE, "some deliveries", daemon)
        os.kill(int(pid), signal.SIGKILL)
        daemon.send(*(datagram("failed", str(uuid.uuid4()), e) for e in executions[MID_ALERTS * 2 :]))
        yield daemon.waitForOutput("The outbox process ended", DEADLINE)
        yield daemon.waitForOutput("started again", DEADLINE)
        total = len(executions) * len(WEBHOOKS)
        yield until(
            lambda: (
                self.byDelivery(receiver.requests).keys() >= {(p, e) for e in executions for p in WEBHOOKS}
            ),
            DEADLINE,
            f"{total} deliveries",
            daemon,
        )
        yield until(
            lambda: deliveries_by_state(daemon.outboxPath) == {"pending": 0, "dead": 0},
            DEADLINE,
            "an empty outbox (the deletions of what was delivered while it was down landed)",
            daemon,
        )
        exit: Exit = yield daemon.stop()
        self.assertCleanStop(exit)
        self.assertEveryAlertEverywhere(receiver.requests, executions)

    @inlineCallbacks
    def deliverAcrossRestart(self, end: str) -> Any:
        """Alerts going out to a slow receiver when the daemon is ended (``"kill"`` or ``"term"``)
        with requests in flight; a successor finishes the work.

        :returns: (receiver, execution ids, the request in flight at the end,
            the successor's :class:`Exit`)
        """
        receiver = listen_http(self, Reply(200, delay=0.1))
        first = Daemon(self, crash_config(receiver.port))
        yield first.start()
        executions = [str(uuid.uuid4()) for _ in range(MID_ALERTS)]
        first.send(*(datagram("failed", str(uuid.uuid4()), e) for e in executions))
        # Runs as the request arrives, before it is answered (0.1 s later):
        # this request is surely in flight when the daemon is ended.
        requests = yield within(receiver.waitForRequests(MID_ALERTS), DEADLINE, "half the deliveries", first)
        inFlight = requests[-1]
        exit: Exit = yield (first.kill() if end == "kill" else first.stop())
        if end == "kill":
            self.assertEqual(exit.signal, 9, exit.output)
        else:
            self.assertCleanStop(exit)
        self.assertLess(len(receiver.requests), MID_ALERTS * len(WEBHOOKS), "all delivered before the end")

        second = first.successor(self)
        yield second.start()
        yield until(
            lambda: (
                self.byDelivery(receiver.requests).keys() >= {(p, e) for e in executions for p in WEBHOOKS}
            ),
            DEADLINE,
            "every delivery",
            second,
        )
        yield until(
            lambda: deliveries_by_state(second.outboxPath) == {"pending": 0, "dead": 0},
            DEADLINE,
            "an empty outbox",
            second,
        )
        exit = yield second.stop()
        self.assertCleanStop(exit)
        self.assertEveryAlertEverywhere(receiver.requests, executions)
        return receiver, executions, inFlight, exit

    @inlineCallbacks
    def test_kill9MidDeliveryRepeatsWithSameId(self) -> Any:
        """kill -9 with requests in flight: they are made again after the restart, with the same webhook-id."""
        receiver, executions, inFlight, exit = yield self.deliverAcrossRestart("kill")
        attempts = self.byDelivery(receiver.requests)
        repeated = {k for k, v in attempts.items() if len(v) > 1}
        self.assertIn((inFlight.path, execution_of(inFlight)), repeated)
        # The repeats carry the alert's one webhook-id (checked by assertEveryAlertEverywhere).
        for key in repeated:
            self.assertEqual(len({r.header("webhook-id") for r in attempts[key]}), 1)
            self.assertEqual(len({r.body for r in attempts[key]}), 1)

    @inlineCallbacks
    def test_sigtermMidDeliveryNoRepeats(self) -> Any:
        """SIGTERM with requests in flight: they finish in the grace period; nothing is sent twice."""
        receiver, executions, inFlight, exit = yield self.deliverAcrossRestart("term")
        attempts = self.byDelivery(receiver.requests)
        self.assertEqual({k: len(v) for k, v in attempts.items() if len(v) > 1}, {})
        self.assertEqual(len(receiver.requests), len(executions) * len(WEBHOOKS))

    @inlineCallbacks
    def test_rateLimitWindowSurvivesRestart(self) -> Any:
        """A rate-limit window outlives a SIGTERM restart, with the time it had left (not a fresh one)."""
        window = 6.0
        receiver = listen_http(self)
        # One webhook that works is enough here.
        first = Daemon(
            self,
            make_config(
                failure=[webhook(receiver.url("/hook"))],
                rateLimit=window,
                butlerWebhook={"shutdownGracePeriod": 3},
            ),
        )
        yield first.start()
        task = str(uuid.uuid4())
        e1, e2, e3, other = (str(uuid.uuid4()) for _ in range(4))
        first.send(datagram("failed", task, e1, taskName="Reload Limited"))
        (r1,) = yield within(receiver.waitForRequests(1), DEADLINE, "the first alert", first)
        self.assertCleanStop((yield first.stop()))
        # A pause, so that a window wrongly started afresh at the restart
        # would still be open when the old one has ended.
        yield sleep(1.5)

        second = first.successor(self)
        yield second.start()
        yield second.waitForOutput("Re-armed 1 rate-limit window from", DEADLINE)
        sentAt = reactor.seconds()
        self.assertLess(sentAt - r1.receivedAt, window - 1, "the restart took too long for this test")
        second.send(datagram("failed", task, e2, taskName="Reload Limited"))
        second.send(datagram("failed", str(uuid.uuid4()), other))  # in order: a marker
        yield within(receiver.waitForRequests(2), DEADLINE, "the marker alert", second)
        yield second.waitForOutput("rate limited", DEADLINE)
        self.assertEqual([execution_of(r) for r in receiver.requests], [e1, other])
        limited = [line for line in second.output.splitlines() if "rate limited" in line]
        self.assertEqual(len(limited), 1)
        self.assertIn("Reload Limited", limited[0])
        self.assertIn(task, limited[0])

        # The window ends when it would have without the restart.
        yield sleep(max(0.0, r1.receivedAt + window + 0.5 - reactor.seconds()))
        second.send(datagram("failed", task, e3, taskName="Reload Limited"))
        yield within(receiver.waitForRequests(3), DEADLINE, "the alert after the window", second)
        exit: Exit = yield second.stop()
        self.assertCleanStop(exit)
        self.assertEqual([execution_of(r) for r in receiver.requests], [e1, other, e3])
        self.assertEqual(counters(exit.output).get("alerts_rate_limited"), 1)

    @inlineCallbacks
    def test_dedupKeysSurviveRestart(self) -> Any:
        """The same datagram before and after a SIGTERM restart is delivered once."""
        receiver = listen_http(self)
        first = Daemon(self, make_config(failure=[webhook(receiver.url("/hook"))], rateLimit=0))
        yield first.start()
        task, execution, other = (str(uuid.uuid4()) for _ in range(3))
        same = datagram("failed", task, execution)
        first.send(same)
        yield within(receiver.waitForRequests(1), DEADLINE, "the first alert", first)
        self.assertCleanStop((yield first.stop()))

        second = first.successor(self)
        yield second.start()
        second.send(same, datagram("failed", str(uuid.uuid4()), other))
        yield within(receiver.waitForRequests(2), DEADLINE, "the marker alert", second)
        exit: Exit = yield second.stop()
        self.assertCleanStop(exit)
        self.assertEqual([execution_of(r) for r in receiver.requests], [execution, other], exit.output)
        self.assertIn(f"execution {execution} was already received", exit.output)

    @inlineCallbacks
    def assertRefusesToStart(self, daemon: Daemon) -> Any:
        with open(daemon.outboxPath, "rb") as f:
            before = f.read()
        exit: Exit = yield daemon.run()
        self.assertIsNone(exit.signal, exit.output)
        self.assertNotEqual(exit.exitCode, 0, exit.output)
        self.assertIn(daemon.outboxPath, exit.stderr)
        self.assertIn("move the file", exit.stderr)
        self.assertNotIn("Listening", exit.output)
        self.assertNotIn("Traceback", exit.output)
        with open(daemon.outboxPath, "rb") as f:
            self.assertEqual(f.read(), before, "the corrupt file was changed")
        self.assertEqual(sorted(os.listdir(daemon.stateDir)), ["outbox.sqlite3"])

    def test_garbageOutboxRefusesToStart(self) -> Any:
        """An outbox file that is not SQLite at all: no start, a non-zero exit, the file named."""
        daemon = Daemon(self, crash_config(closed_port()))
        os.makedirs(daemon.stateDir)
        with open(daemon.outboxPath, "wb") as f:
            f.write(b"this is not an SQLite database\n" * 200)
        return self.assertRefusesToStart(daemon)

    def test_damagedOutboxRefusesToStart(self) -> Any:
        """An outbox with damaged pages in the middle: no start, a non-zero exit, the file named."""
        daemon = Daemon(self, crash_config(closed_port()))
        conn = connect(daemon.stateDir)
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO alerts (alert_id, kind, fields, accepted_at) VALUES (?, 'reloadTaskFailure', ?, 0)",
                [(f"msg_{i}", json.dumps({"logMessage": "x" * 200})) for i in range(500)],
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for leftover in ("-wal", "-shm"):
            if os.path.exists(daemon.outboxPath + leftover):
                os.remove(daemon.outboxPath + leftover)
        size = os.path.getsize(daemon.outboxPath)
        self.assertGreater(size, 8 * 4096)
        with open(daemon.outboxPath, "r+b") as f:
            f.seek(3 * 4096)
            f.write(b"\xa5" * (2 * 4096))
        return self.assertRefusesToStart(daemon)
