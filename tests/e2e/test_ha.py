"""Two daemons sharing one outbox (PostgreSQL), end to end: storms, a kill -9, a database restart.

Each test makes a fresh database on the throwaway PostgreSQL server
(:mod:`tests.support.postgres`), starts two ``twistd butler-webhook``
subprocesses on it, instances ``a`` and ``b`` (:mod:`tests.support.daemon`),
and a :class:`~tests.support.player.Player` that sends every datagram to both
UDP ports, as Qlik sends each alert to every daemon of a site. The webhook is
a loopback receiver (:mod:`tests.support.receivers`) that records every
request with:

- its ``webhook-id``: the alert's id, the same on every attempt of a delivery,
  and in both daemons (it is derived from kind, taskId and executionId);
- its ``X-Instance`` header: which daemon sent it. Each daemon's webhook has
  its own value; headers are not part of a webhook's fingerprint, so the two
  configs are still "the same webhooks" for the shared outbox.

Everything is asserted with counts: which ids arrived, how often, from whom,
what the daemons logged and counted, what the database holds at the end.
Numbers worth knowing (duplicates, the failover time) are logged to the trial
log with the prefix ``HA:``.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from typing import Any, Iterable, Sequence

import attrs
import treq
from twisted.internet import reactor, threads
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from butler_tw.core.alert import Alert
from butler_tw.core.wireformat import format_datagram
from tests.support.alerts import ALERT
from tests.support.daemon import Daemon, Exit, counters, make_config, until, webhook, within
from tests.support.player import Player
from tests.support.postgres import fresh_database, missing_reason, require_postgres
from tests.support.receivers import Receiver, RecordedRequest, Reply, closed_port, listen_http

log = Logger(namespace="tests.e2e.test_ha")

#: Seconds to wait for deliveries, log lines, an empty outbox.
DEADLINE = 60.0
#: Datagrams per second the player sends to each daemon: fast enough for a storm,
#: slow enough that loopback UDP drops nothing on a busy 2-core box.
RATE = 300
#: butlerWebhook.leaseSeconds where leases matter (the minimum the config takes).
LEASE = 5
#: Each webhook's concurrency (the default, said here because the bounds below use it).
CONCURRENCY = 4
#: Seconds after acceptance of each attempt: short, and long enough to outlast a 503 spell.
SCHEDULE = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30]
INSTANCES = ("a", "b")
SCHEMA = "butler_tw"


def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


def make_alerts(n: int) -> list[Alert]:
    """``n`` alerts of distinct tasks and executions: none is a duplicate or rate limited."""
    return [attrs.evolve(ALERT, taskId=str(uuid.uuid4()), executionId=str(uuid.uuid4())) for _ in range(n)]


def shared_config(
    dsn: str,
    name: str,
    urls: Sequence[str],
    lease: float,
    httpPort: int | None = None,
) -> dict[str, Any]:
    """Instance ``name`` on the shared store ``dsn``; one POST webhook per URL, tagged with ``name``."""
    ours: dict[str, Any] = {
        "store": dsn,
        "instanceName": name,
        "leaseSeconds": lease,
        "shutdownGracePeriod": 3,
        "delivery": {"retrySchedule": SCHEDULE, "maxAge": 120},
    }
    if httpPort is not None:
        ours["http"] = {"listen": f"tcp:{httpPort}:interface=127.0.0.1"}
    hooks = [
        webhook(url, "POST", description=f"hook {i}", concurrency=CONCURRENCY, headers={"X-Instance": name})
        for i, url in enumerate(urls)
    ]
    return make_config(failure=hooks, rateLimit=0, butlerWebhook=ours)


def query(dsn: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the shared database (a connection of its own, closed at once)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, tuple(args)).fetchall()


def outbox_rows(dsn: str) -> dict[str, int]:
    """``{"pending": n, "dead": m}`` in the shared outbox (a delivered delivery's row is deleted)."""
    counts = {"pending": 0, "dead": 0}
    counts.update(
        dict(query(dsn, f"SELECT state, count(*) FROM {SCHEMA}.deliveries GROUP BY state"))  # noqa: S608
    )
    return counts


def sender(request: RecordedRequest) -> str | None:
    return request.header("x-instance")


def alert_id(request: RecordedRequest) -> str | None:
    return request.header("webhook-id")


def answered_ok(receiver: Receiver) -> list[RecordedRequest]:
    """The requests the receiver answered 2xx (the reply written: a delivery as the sender saw it)."""
    return [
        r
        for r, reply, at in zip(receiver.requests, receiver.replies, receiver.answeredAt, strict=True)
        if 200 <= reply.status < 300 and at is not None
    ]


def took_over(output: str, fromInstance: str) -> list[int]:
    """The N of each "Took over N pending deliveries from instance X" line."""
    pattern = rf"Took over (\d+) pending deliver(?:y|ies) from instance {re.escape(fromInstance)}\b"
    return [int(n) for n in re.findall(pattern, output)]


class SharedOutboxTests(TestCase):
    """Two daemons, one PostgreSQL outbox: every alert delivered, and (but for a crash) once."""

    skip = missing_reason()
    timeout = 150

    def setUp(self) -> None:
        self.server = require_postgres()
        self.dsn = fresh_database(self)
        # A test that stopped the server leaves it running for the drop (and the next test).
        self.addCleanup(self.server.start)

    @inlineCallbacks
    def startPair(self, urls: Sequence[str], lease: float = LEASE, http: bool = False) -> Any:
        """Start instances a and b on the shared store; fires with ``{name: Daemon}`` (and HTTP ports)."""
        self.httpPorts = {name: closed_port() for name in INSTANCES} if http else {}
        daemons = {
            name: Daemon(self, shared_config(self.dsn, name, urls, lease, self.httpPorts.get(name)))
            for name in INSTANCES
        }
        yield gatherResults([d.start() for d in daemons.values()], consumeErrors=True)
        return daemons

    @inlineCallbacks
    def health(self, name: str) -> Any:
        """``(HTTP status, JSON body)`` of instance ``name``'s ``/health``."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.get(f"http://127.0.0.1:{self.httpPorts[name]}/health", pool=pool, timeout=5)
        body = yield treq.json_content(response)
        return response.code, body

    def play(self, daemons: Iterable[Daemon], alerts: Sequence[Alert], perSecond: float = RATE) -> Player:
        return Player(self, [d.udpPort for d in daemons], [format_datagram(a) for a in alerts], perSecond)

    def waitUntilDelivered(self, receiver: Receiver, ids: set[str], daemon: Daemon) -> Any:
        """Until every id in ``ids`` got a 2xx, then until the shared outbox is empty."""

        def missing() -> set[str]:
            return ids - {alert_id(r) for r in answered_ok(receiver)}

        d = until(lambda: not missing(), DEADLINE, f"all {len(ids)} alerts delivered", daemon)
        d.addErrback(lambda f: self.fail(f"{len(missing())} alerts never delivered: {f.value}"))
        d.addCallback(
            lambda _: until(
                lambda: outbox_rows(self.dsn) == {"pending": 0, "dead": 0},
                DEADLINE,
                "an empty shared outbox",
                daemon,
            )
        )
        return d

    def assertEveryAlertStored(self, ids: set[str]) -> None:
        """The cluster's table of alerts holds each alert once: it was stored (if late), not only sent."""
        stored = [i for (i,) in query(self.dsn, f"SELECT alert_id FROM {SCHEMA}.alerts")]  # noqa: S608
        self.assertEqual(len(stored), len(set(stored)))
        self.assertEqual(set(stored), ids)

    # ------------------------------------------------------------------
    # 1. A storm with both up

    @inlineCallbacks
    def test_stormBothUpEachAlertOncePerWebhook(self) -> Any:
        """1,000 alerts, both daemons up, two webhooks: each (alert, webhook) exactly once.

        Each alert is created once in the cluster (the other daemon's insert is a
        peer duplicate), and all of an alert's deliveries are made by the daemon
        that created it.
        """
        alerts = make_alerts(1000)
        ids = {a.alertId for a in alerts}
        paths = ("/one", "/two")
        receiver = listen_http(self)
        daemons = yield self.startPair([receiver.url(p) for p in paths])
        yield within(self.play(daemons.values(), alerts).play(), DEADLINE, "the storm to be sent")
        yield self.waitUntilDelivered(receiver, ids, daemons["a"])
        exits = yield gatherResults([d.stopCleanly() for d in daemons.values()])

        perDelivery = Counter((r.path, alert_id(r)) for r in receiver.requests)
        self.assertEqual(set(perDelivery), {(p, i) for p in paths for i in ids})
        self.assertEqual({k: n for k, n in perDelivery.items() if n > 1}, {}, "sent twice")
        self.assertEqual(len(receiver.requests), len(ids) * len(paths))
        self.assertEveryAlertStored(ids)
        senders: dict[str | None, set[str | None]] = {}
        for r in receiver.requests:
            senders.setdefault(alert_id(r), set()).add(sender(r))
        self.assertEqual({i for i, s in senders.items() if len(s) != 1}, set(), "an alert sent by both")

        for exit in exits:
            self.assertNotIn("Took over", exit.output)
        counts = {name: counters(exit.output) for name, exit in zip(INSTANCES, exits, strict=True)}
        created = sum(c.get("deliveries_created", 0) for c in counts.values())
        self.assertEqual(created, len(ids) * len(paths), counts)
        self.assertEqual(sum(c.get("deliveries_delivered", 0) for c in counts.values()), created, counts)
        for name in INSTANCES:
            mine = sum(1 for r in receiver.requests if sender(r) == name)
            self.assertEqual(mine, counts[name].get("deliveries_created", 0), name)
        log.info(
            "HA: storm: {n} alerts, {requests} requests; created by a {a}, by b {b}; peer duplicates {dups}",
            n=len(ids),
            requests=len(receiver.requests),
            a=counts["a"].get("deliveries_created", 0),
            b=counts["b"].get("deliveries_created", 0),
            dups=sum(c.get("alerts_peer_duplicate", 0) for c in counts.values()),
        )

    # ------------------------------------------------------------------
    # 2. kill -9 one daemon mid-storm

    @inlineCallbacks
    def test_kill9MidStormSurvivorTakesOver(self) -> Any:
        """kill -9 of instance a a third into a storm: nothing lost, b takes over a's deliveries.

        The receiver answers after 50 ms, so that a has deliveries in flight and
        queued when it dies. What may be sent twice is exactly what a had sent
        and not yet recorded as delivered in the database: b takes over every
        pending row of a's (the ones it left), and sends each again. That is

        - the attempts in flight when it died: at most its concurrency
          (:data:`CONCURRENCY`, one webhook), whatever the timing; plus
        - the attempts answered 2xx whose DELETE was not yet committed. The
          outbox commits one transaction at a time and each delivery's DELETE
          goes into the next one, so these are the deliveries answered since the
          transaction that was running at the kill began. Each of the
          CONCURRENCY slots takes at least the receiver's 50 ms per attempt,
          so while a commit takes less than that (on a local database: a few
          ms), at most CONCURRENCY of them.

        So at most 2 * CONCURRENCY duplicates, each of them a delivery a left
        pending in the database; the test checks both parts, and that the
        number taken over in b's log is the number of rows a left.
        """
        alerts = make_alerts(600)
        ids = {a.alertId for a in alerts}
        receiver = listen_http(self, Reply(200, delay=0.05))
        daemons = yield self.startPair([receiver.url("/hook")])
        a, b = daemons["a"], daemons["b"]
        player = self.play(daemons.values(), alerts, perSecond=200)
        done = player.play()
        yield within(player.reached(len(alerts) // 3), DEADLINE, "a third of the storm")
        # a cannot deliver more than CONCURRENCY / 50 ms = 80 a second: its backlog grows.
        yield until(
            lambda: (
                query(
                    self.dsn,
                    f"SELECT count(*) FROM {SCHEMA}.deliveries WHERE owner = 'a' AND state = 'pending'",  # noqa: S608
                )[0][0]
                >= 20
            ),
            DEADLINE,
            "a backlog of 20 deliveries at a",
            a,
        )
        mark = b.mark()
        killedAt = reactor.seconds()
        exit: Exit = yield a.kill()
        self.assertEqual(exit.signal, 9, exit.output[-2000:])
        # a's database sessions end as the kernel closes its sockets; a COMMIT it
        # had sent still lands before that. Then what a left is fixed: b cannot
        # take any of it before its lease runs out (>= 3 s: a renewed every 2 s).
        yield until(
            lambda: (
                not query(
                    self.dsn, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", ("butler-tw a",)
                )
            ),
            DEADLINE,
            "a's database sessions to end",
        )
        left = {
            i
            for (i,) in query(
                self.dsn,
                f"SELECT alert_id FROM {SCHEMA}.deliveries WHERE owner = 'a' AND state = 'pending'",  # noqa: S608
            )
        }
        snapshotAt = reactor.seconds()
        self.assertEqual(took_over(b.output, "a"), [], "b took over before the snapshot")

        yield b.waitForOutput("Took over", DEADLINE, since=mark)
        failover = reactor.seconds() - killedAt
        yield within(done, DEADLINE, "the storm to be sent")
        yield self.waitUntilDelivered(receiver, ids, b)
        exitB: Exit = yield b.stopCleanly()

        # Zero lost.
        self.assertEqual(ids - {alert_id(r) for r in answered_ok(receiver)}, set())
        self.assertEveryAlertStored(ids)
        # b took over exactly what a left, and said so.
        takenOver = took_over(exitB.output, "a")
        self.assertEqual(sum(takenOver), len(left), exitB.output[-3000:])
        self.assertIn("whose lease ran out", exitB.output)

        perAlert = Counter(alert_id(r) for r in receiver.requests)
        duplicates = {i for i, n in perAlert.items() if n > 1}
        fromA = [
            (r, at) for r, at in zip(receiver.requests, receiver.answeredAt, strict=True) if sender(r) == "a"
        ]
        sentByA = {alert_id(r) for r, _ in fromA}
        # Every duplicate is one a sent and left pending; b sent each of those again, once.
        self.assertEqual(duplicates, sentByA & left)
        self.assertEqual({i: n for i, n in perAlert.items() if n > 2}, {})
        for r in receiver.requests:
            if alert_id(r) in duplicates and sender(r) != "a":
                self.assertEqual(sender(r), "b")
        # No request of a after the kill could be answered: at most CONCURRENCY were in flight.
        inFlight = {alert_id(r) for r, at in fromA if at is None or at > killedAt}
        self.assertLessEqual(inFlight, left, "a delivery in flight at the kill was not pending")
        answeredUnrecorded = (sentByA & left) - inFlight
        self.assertLessEqual(len(inFlight), CONCURRENCY, inFlight)
        self.assertLessEqual(len(answeredUnrecorded), CONCURRENCY, answeredUnrecorded)
        self.assertLessEqual(len(duplicates), 2 * CONCURRENCY)

        firstTaken = min(r.receivedAt for r in receiver.requests if sender(r) == "b" and alert_id(r) in left)
        log.info(
            "HA: kill -9: {n} alerts, a sent {sentByA} before dying; left {left} pending "
            "(snapshot {snap:.2f} s after the kill); b took over {takenOver}; duplicates {dups} "
            "({inFlight} in flight, {unrecorded} answered but not recorded); first takeover line "
            "{failover:.2f} s and first taken-over delivery {first:.2f} s after the kill",
            n=len(ids),
            sentByA=len(sentByA),
            left=len(left),
            snap=snapshotAt - killedAt,
            takenOver=takenOver,
            dups=len(duplicates),
            inFlight=len(inFlight),
            unrecorded=len(answeredUnrecorded),
            failover=failover,
            first=firstTaken - killedAt,
        )

    # ------------------------------------------------------------------
    # 3. PostgreSQL restarts mid-storm

    @inlineCallbacks
    def test_databaseRestartMidStormLosesNothing(self) -> Any:
        """PostgreSQL stopped for 2 s a third into a storm, then started: every alert delivered.

        While it is down, each daemon delivers what it receives from memory (both
        do: duplicates are allowed then), /health says degraded (not failing: a
        restart would not help, and both still deliver), and the writes
        are retried until they work again. Leases (30 s here) outlast the outage:
        neither daemon takes over the other's deliveries.
        """
        # 5 s of alerts: the database goes down after 1.7 s, for 2 s, and a second of them follows.
        alerts = make_alerts(5 * RATE)
        ids = {a.alertId for a in alerts}
        receiver = listen_http(self)
        daemons = yield self.startPair([receiver.url("/hook")], lease=30, http=True)
        player = self.play(daemons.values(), alerts)
        done = player.play()
        yield within(player.reached(len(alerts) // 3), DEADLINE, "a third of the storm")
        # Stopped off the reactor thread: the player, the receiver and the /health
        # polls go on meanwhile. Started on it: the server gets a parent-death
        # signal from the thread that spawns it, and trial ends the pool's threads
        # after each test.
        yield threads.deferToThread(self.server.stop, "fast")
        stoppedAt = player.sent
        seen: dict[str, list[tuple[int, str, list[str]]]] = {name: [] for name in INSTANCES}
        downUntil = reactor.seconds() + 2
        while reactor.seconds() < downUntil:
            for name in INSTANCES:
                code, body = yield self.health(name)
                seen[name].append((code, body["status"], body["problems"]))
            yield sleep(0.2)
        self.server.start()
        startedAt = player.sent
        yield within(done, DEADLINE, "the storm to be sent")
        yield self.waitUntilDelivered(receiver, ids, daemons["a"])
        for name, d in daemons.items():
            yield d.waitForOutput("work again", DEADLINE)
        exits = yield gatherResults([d.stopCleanly() for d in daemons.values()])

        self.assertEqual(ids - {alert_id(r) for r in answered_ok(receiver)}, set(), "alerts lost")
        self.assertEqual({alert_id(r) for r in receiver.requests} - ids, set())
        # What came while the database was down was stored once it was back.
        self.assertEveryAlertStored(ids)
        for name, exit in zip(INSTANCES, exits, strict=True):
            self.assertIn("Cannot write to the outbox", exit.output, name)
            self.assertIn("Deliveries carry on from memory", exit.output, name)
            self.assertRegex(exit.output, r"Outbox writes to .* work again", name)
            self.assertNotIn("Took over", exit.output, name)
            self.assertNotIn("SHED", exit.output, name)
            degraded = [s for s in seen[name] if s[0] == 200 and s[1] == "degraded"]
            self.assertTrue(
                degraded, f"{name}'s /health never said degraded while the database was down: {seen}"
            )
            self.assertTrue(
                any("the shared outbox cannot be written" in p for s in degraded for p in s[2]), seen[name]
            )
            self.assertFalse([s for s in seen[name] if s[0] == 503], seen[name])
        perAlert = Counter(alert_id(r) for r in receiver.requests)
        duplicates = {i: n for i, n in perAlert.items() if n > 1}
        self.assertEqual({i: n for i, n in duplicates.items() if n > 2}, {}, "sent more than once by each")
        # How long alerts waited, from the datagram to the receiver (measured, not asserted).
        firstSeen: dict[str | None, float] = {}
        for r in receiver.requests:
            firstSeen.setdefault(alert_id(r), r.receivedAt)
        waits = [firstSeen[a.alertId] - at for a, at in zip(alerts, player.sentAt, strict=True)]
        log.info(
            "HA: database restart: {n} alerts; stopped after {stopped} sent, started after {started}; "
            "{requests} requests, {dups} alerts sent twice; longest wait for a first delivery: "
            "{before:.2f} s before the stop, {during:.2f} s while down, {after:.2f} s after; "
            "/health of a while down: {health}",
            n=len(ids),
            stopped=stoppedAt,
            started=startedAt,
            requests=len(receiver.requests),
            dups=len(duplicates),
            before=max(waits[:stoppedAt]),
            during=max(waits[stoppedAt:startedAt]),
            after=max(waits[startedAt:]),
            health=[s[1] for s in seen["a"]],
        )

    # ------------------------------------------------------------------
    # 4. The receiver fails for a while

    @inlineCallbacks
    def test_receiverDownThenUpBacklogDrainsOnce(self) -> Any:
        """The receiver answers 503 for longer than a lease, then 200: each alert delivered once.

        Each daemon keeps retrying the deliveries it created, renewing their
        leases while they wait: no takeover, every attempt of an alert comes from
        one daemon, and each daemon delivers exactly what it created.
        """
        alerts = make_alerts(200)
        ids = {a.alertId for a in alerts}
        receiver = listen_http(self, Reply(503))
        daemons = yield self.startPair([receiver.url("/hook")])
        yield within(self.play(daemons.values(), alerts, perSecond=200).play(), DEADLINE, "the alerts")
        # Every alert refused at least once...
        yield until(
            lambda: {alert_id(r) for r in receiver.requests} == ids,
            DEADLINE,
            "every alert to be attempted",
            daemons["a"],
        )
        # ...and for longer than a lease (renewed meanwhile, or taken over).
        yield sleep(LEASE + 2)
        refused = len(receiver.requests)
        receiver.answer(200)
        yield self.waitUntilDelivered(receiver, ids, daemons["a"])
        exits = yield gatherResults([d.stopCleanly() for d in daemons.values()])

        ok = answered_ok(receiver)
        perAlert = Counter(alert_id(r) for r in ok)
        self.assertEqual(set(perAlert), ids)
        self.assertEqual({i: n for i, n in perAlert.items() if n > 1}, {}, "delivered twice")
        senders: dict[str | None, set[str | None]] = {}
        for r in receiver.requests:
            senders.setdefault(alert_id(r), set()).add(sender(r))
        self.assertEqual({i for i, s in senders.items() if len(s) != 1}, set(), "attempted by both")
        counts = {name: counters(exit.output) for name, exit in zip(INSTANCES, exits, strict=True)}
        for name, exit in zip(INSTANCES, exits, strict=True):
            self.assertNotIn("Took over", exit.output, name)
            created = counts[name].get("deliveries_created", 0)
            self.assertGreater(created, 0, f"{name} created none of the alerts: the backlog is not both's")
            self.assertEqual(sum(1 for r in ok if sender(r) == name), created, name)
            self.assertEqual(counts[name].get("deliveries_delivered", 0), created, name)
        self.assertEqual(sum(c.get("deliveries_created", 0) for c in counts.values()), len(ids))
        log.info(
            "HA: receiver down: {n} alerts, {refused} refused attempts, then delivered by a {a} and by b {b}",
            n=len(ids),
            refused=refused,
            a=counts["a"].get("deliveries_created", 0),
            b=counts["b"].get("deliveries_created", 0),
        )

    # ------------------------------------------------------------------
    # /health's cluster section, and a clean stop's hand-back

    @inlineCallbacks
    def test_healthNamesBothInstancesAndCleanStopHandsBack(self) -> Any:
        """/health of each daemon has a cluster section naming a and b and what each holds;
        after b stops cleanly, a picks up what b held at once (handed back, not taken over)."""
        alerts = make_alerts(20)
        ids = {a.alertId for a in alerts}
        receiver = listen_http(self, Reply(503))
        daemons = yield self.startPair([receiver.url("/hook")], http=True)
        yield within(self.play(daemons.values(), alerts, perSecond=100).play(), DEADLINE, "the alerts")
        # And a few that only b receives (as when a's appender is down): b surely holds some,
        # so the hand-back below is always exercised.
        onlyB = make_alerts(3)
        ids |= {a.alertId for a in onlyB}
        yield within(self.play([daemons["b"]], onlyB, perSecond=100).play(), DEADLINE, "b's own alerts")

        def cluster(name: str, check: Any) -> Any:
            """Poll ``name``'s /health until ``check(cluster section)`` holds; fires with the body."""
            last: dict[str, Any] = {}

            @inlineCallbacks
            def poll() -> Any:
                while True:
                    _, body = yield self.health(name)
                    last.update(body)
                    if "cluster" in body and check(body["cluster"]):
                        return body
                    yield sleep(0.2)

            d = within(poll(), DEADLINE, f"{name}'s /health to show {check.__doc__}")
            return d.addErrback(lambda f: self.fail(f"{f.value}; its last /health: {last}"))

        def holds(section: dict[str, Any]) -> dict[str, int]:
            return {m["name"]: m["holds"] for m in section["instances"]}

        def bothHoldAll(section: dict[str, Any]) -> bool:
            """a and b up, holding all the deliveries between them"""
            states = {m["name"]: m["state"] for m in section["instances"]}
            return states == {"a": "up", "b": "up"} and sum(holds(section).values()) == len(ids)

        bodies = {}
        for name in INSTANCES:
            bodies[name] = yield cluster(name, bothHoldAll)
        for name, body in bodies.items():
            section = body["cluster"]
            self.assertEqual(section["instance"], name)
            self.assertEqual(section["pending"], len(ids))
            self.assertEqual(section["dead"], 0)
            self.assertEqual([m["name"] for m in section["instances"]], ["a", "b"])
            for member in section["instances"]:
                self.assertLessEqual({"host", "pid", "version", "lastSeenSecondsAgo"}, set(member))
        heldByB = holds(bodies["a"]["cluster"])["b"]
        self.assertGreaterEqual(heldByB, len(onlyB))

        mark = daemons["a"].mark()
        yield daemons["b"].stopCleanly()

        def aHoldsAll(section: dict[str, Any]) -> bool:
            """b stopped, a holding everything"""
            states = {m["name"]: m["state"] for m in section["instances"]}
            return states["b"] == "stopped" and holds(section) == {"a": len(ids), "b": 0}

        yield cluster("a", aHoldsAll)
        yield daemons["a"].waitForOutput("handed back by another instance", DEADLINE, since=mark)
        receiver.answer(200)
        yield self.waitUntilDelivered(receiver, ids, daemons["a"])
        exitA = yield daemons["a"].stopCleanly()
        self.assertNotIn("Took over", exitA.output)
        perAlert = Counter(alert_id(r) for r in answered_ok(receiver))
        self.assertEqual(perAlert, Counter({i: 1 for i in ids}))
        self.assertTrue(all(sender(r) == "a" for r in answered_ok(receiver)))
        log.info(
            "HA: health: holds before b stopped {holds}; b handed back {b}",
            holds=holds(bodies["a"]["cluster"]),
            b=heldByB,
        )
