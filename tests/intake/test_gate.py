"""The intake gate: allow-list, per-source rate limit, size limit, throttled warnings; and shedding.

Unit tests on a fake clock; ``tests.e2e.test_faults`` and ``tests.e2e.test_alerts`` run
the same rules against the real daemon.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from butler_tw.config import parse_config
from butler_tw.core.alert import Alert
from butler_tw.core.delivery import Delivery
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.sources import SourceFilter, parse_entry, source_address
from butler_tw.core.stats import Stats
from butler_tw.daemon.startup import StartupError, allowed_sources, resolve_sources
from butler_tw.delivery.admission import Admission
from butler_tw.delivery.stores.memory import MemoryOutbox
from butler_tw.intake.gate import Gate
from butler_tw.intake.resolve import refresh, resolve_all, update
from butler_tw.intake.sourcelimit import OTHERS, SourceRateLimit
from tests.support.admission import FakeDispatcher, config
from tests.support.daemon import sample_datagrams
from tests.support.logs import LogCapture

GOOD = sample_datagrams()[0]


def sources(*entries: str, resolved: dict[str, list[str]] | None = None) -> SourceFilter:
    f = SourceFilter.from_entries(parse_entry(e) for e in entries)
    if resolved is not None:
        f.update(resolved)
    return f


class SourceFilterTests(SynchronousTestCase):
    def test_address(self) -> None:
        f = sources("192.168.1.100")
        self.assertTrue(f.allows("192.168.1.100"))
        self.assertFalse(f.allows("192.168.1.101"))

    def test_cidr(self) -> None:
        f = sources("10.20.0.0/16")
        self.assertTrue(f.allows("10.20.255.1"))
        self.assertFalse(f.allows("10.21.0.1"))

    def test_ipv6(self) -> None:
        f = sources("2001:db8::/32", "fe80::1")
        self.assertTrue(f.allows("2001:db8:1::5"))
        self.assertTrue(f.allows("fe80::1%eth0"))  # a zone index does not hide the address
        self.assertFalse(f.allows("2001:db9::1"))

    def test_ipv4MappedOnDualStackSocket(self) -> None:
        """A dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d: they match IPv4 entries."""
        f = sources("10.0.0.0/8")
        self.assertTrue(f.allows("::ffff:10.1.2.3"))
        self.assertEqual(source_address("::ffff:10.1.2.3"), ipaddress.ip_address("10.1.2.3"))

    def test_ipv4MappedEntryMatchesAsIPv4(self) -> None:
        """An address copied from a log line on a dual-stack socket (::ffff:a.b.c.d) works as an entry."""
        f = sources("::ffff:10.0.0.5", "::ffff:10.1.0.0/112")
        self.assertTrue(f.allows("10.0.0.5"))
        self.assertTrue(f.allows("::ffff:10.0.0.5"))
        self.assertTrue(f.allows("10.1.0.77"))
        self.assertFalse(f.allows("10.0.0.6"))

    def test_garbageSourceRefused(self) -> None:
        self.assertFalse(sources("0.0.0.0/0").allows("not an address"))

    def test_nameResolvedAtStart(self) -> None:
        f = sources("sense-01.lab")
        self.assertFalse(f.usable())
        self.assertFalse(f.allows("10.0.0.7"))
        resolved, failed = resolve_all(f.names, lambda name: ["10.0.0.7", "fe80::7"])
        self.assertEqual(failed, {})
        update(f, resolved)
        self.assertTrue(f.usable())
        self.assertTrue(f.allows("10.0.0.7"))
        self.assertTrue(f.allows("fe80::7"))

    def test_unresolvableNameReported(self) -> None:
        def resolve(name: str) -> list[str]:
            raise OSError(-2, "Name or service not known")

        f = sources("gone.lab", "10.0.0.1")
        resolved, failed = resolve_all(f.names, resolve)
        self.assertEqual(failed, {"gone.lab": "Name or service not known"})
        update(f, resolved)
        self.assertTrue(f.usable())  # the address still is
        self.assertEqual(f.unresolved(), ["gone.lab"])

    def test_refreshFollowsDnsAndKeepsLastOnFailure(self) -> None:
        f = sources("sense-01.lab", resolved={"sense-01.lab": ["10.0.0.7"]})
        refresh(f, lambda name: succeed(["10.0.0.8"]))
        self.assertTrue(f.allows("10.0.0.8"))
        self.assertFalse(f.allows("10.0.0.7"))
        refresh(f, lambda name: fail(OSError(-3, "Temporary failure in name resolution")))
        self.assertTrue(f.allows("10.0.0.8"))  # neither opened nor closed by a DNS hiccup


class FailClosedTests(SynchronousTestCase):
    def test_noUsableEntryRefusesToStart(self) -> None:
        cfg = config(enableSourceValidation=True, allowedSources=["no-such-host.invalid"])
        e = self.assertRaises(StartupError, allowed_sources, resolve_sources(cfg))
        (problem,) = e.problems
        self.assertIn("Butler.udpServerConfig.allowedSources: no entry is usable", problem)
        self.assertIn("no-such-host.invalid", problem)

    def test_offMeansNoFilter(self) -> None:
        loaded = resolve_sources(config(allowedSources=["10.0.0.1"]))
        self.assertEqual((allowed_sources(loaded), loaded.unresolved), (None, {}))

    def test_localhostResolves(self) -> None:
        loaded = resolve_sources(
            config(enableSourceValidation=True, allowedSources=["localhost", "gone.invalid"])
        )
        f, unresolved = allowed_sources(loaded), loaded.unresolved
        assert f is not None
        self.assertTrue(f.allows("127.0.0.1"))
        self.assertEqual(list(unresolved), ["gone.invalid"])


class SourceRateLimitTests(SynchronousTestCase):
    def test_perSourceNotGlobal(self) -> None:
        clock = Clock()
        limit = SourceRateLimit(clock, perMinute=3)
        self.assertEqual([limit.allow("10.0.0.1") for _ in range(5)], [True, True, True, False, False])
        self.assertTrue(limit.allow("10.0.0.2"))  # a noisy neighbour does not silence another server
        clock.advance(60)
        self.assertTrue(limit.allow("10.0.0.1"))

    def test_spoofedSourcesShareOneBudget(self) -> None:
        limit = SourceRateLimit(Clock(), perMinute=2, maxSources=3)
        for n in range(3):
            limit.allow(f"10.0.0.{n}")
        self.assertEqual([limit.allow(f"10.1.0.{n}") for n in range(4)], [True, True, False, False])
        self.assertEqual(len(limit._counter._counts), 4)
        self.assertIn(OTHERS, limit._counter._counts)

    def test_stopCancelsTimer(self) -> None:
        clock = Clock()
        limit = SourceRateLimit(clock, perMinute=1)
        limit.allow("a")
        limit.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.log = LogCapture(self, "butler_tw.gate")

    def gate(self, **kwargs: Any) -> Gate:
        return Gate(self.clock, self.stats, 65507, **kwargs)

    def test_refusedSourceCountedAndLoggedOncePerMinute(self) -> None:
        gate = self.gate(sources=sources("10.0.0.0/8"))
        self.assertTrue(gate.admit(GOOD, "10.9.9.9"))
        for _ in range(500):
            self.assertFalse(gate.admit(GOOD, "203.0.113.5"))
        self.assertFalse(gate.admit(GOOD, "203.0.113.6"))
        self.assertEqual(self.stats.get("datagrams_source_refused"), 501)
        lines = self.log.lines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("from 203.0.113.5", lines[0])
        self.assertIn("not in allowedSources", lines[0])
        # The summary comes from a timer: no further datagram is needed to see it.
        self.clock.advance(60)
        (summary,) = self.log.lines()[2:]
        self.assertIn("Dropped 499 more datagrams in the last 60 s: 499 source from 203.0.113.5", summary)

    def test_perSourceRateLimit(self) -> None:
        gate = self.gate(perSourceLimit=SourceRateLimit(self.clock, perMinute=2))
        results = [gate.admit(GOOD, "10.0.0.1") for _ in range(4)]
        self.assertEqual(results, [True, True, False, False])
        self.assertTrue(gate.admit(GOOD, "10.0.0.2"))
        self.assertEqual(self.stats.get("datagrams_source_rate_limited"), 2)
        (line,) = self.log.lines()
        self.assertIn("more than rateLimit.maxMessagesPerMinute (2) from there", line)

    def test_sizeLimit(self) -> None:
        gate = Gate(self.clock, self.stats, 300)
        self.assertFalse(gate.admit(b"x" * 301, "h"))
        self.assertTrue(gate.admit(b"x" * 300, "h"))
        self.assertEqual(self.stats.get("datagrams_oversize"), 1)

    def test_refusedBeforeCountedAgainstBudget(self) -> None:
        """A refused source does not use up anyone's rate-limit budget."""
        limit = SourceRateLimit(self.clock, perMinute=1)
        gate = self.gate(sources=sources("10.0.0.1"), perSourceLimit=limit)
        gate.admit(GOOD, "10.0.0.2")
        self.assertTrue(gate.admit(GOOD, "10.0.0.1"))

    def test_stopSummarisesAndCancels(self) -> None:
        gate = self.gate(perSourceLimit=SourceRateLimit(self.clock, perMinute=1))
        for _ in range(3):
            gate.admit(GOOD, "h")
        gate.stop()
        self.assertIn("Dropped 1 more datagram in", self.log.lines()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StalledOutbox(MemoryOutbox):
    """An outbox whose disk hangs: ``add`` never completes until ``unstall``."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[Deferred[list[Delivery]], Alert, list[str], float]] = []

    def add(
        self, alert: Alert, webhookKeys: Any, now: float, window: float = 0.0
    ) -> Deferred[list[Delivery]]:
        d: Deferred[list[Delivery]] = Deferred()
        self.waiting.append((d, alert, list(webhookKeys), now))
        return d

    def unstall(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d, alert, keys, now in waiting:
            MemoryOutbox.add(self, alert, keys, now).chainDeferred(d)


def distinct(n: int) -> list[bytes]:
    """``n`` valid failure datagrams of different tasks and executions."""
    out = []
    for i in range(n):
        out.append(
            GOOD.replace(
                b"dec2a02a-1680-44ef-8dc2-e2bfb180af87", f"dec2a02a-1680-44ef-8dc2-{i:012x}".encode()
            ).replace(b"14a81bf5-f81c-4047-b1a1-193b0920de28", f"14a81bf5-f81c-4047-b1a1-{i:012x}".encode())
        )
    return out


def unlimited_config(messageQueue: dict[str, Any], maxBufferedAlerts: int = 1000) -> Any:
    """One failure webhook, no rate limit, this memory bound and these ``messageQueue`` settings."""
    return parse_config(
        {
            "butlerWebhook": {"maxBufferedAlerts": maxBufferedAlerts},
            "Butler": {
                "udpServerConfig": {
                    "enable": True,
                    "serverHost": "127.0.0.1",
                    "portTaskFailure": 9998,
                    "messageQueue": messageQueue,
                },
                "webhookNotification": {
                    "enable": True,
                    "reloadTaskFailure": {
                        "rateLimit": 0,
                        "webhooks": [{"webhookURL": "http://h/a", "httpMethod": "POST"}],
                    },
                },
            },
        }
    )


class SheddingTests(SynchronousTestCase):
    """If the store falls behind, at most maxBufferedAlerts wait in memory; then new alerts are shed."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.outbox = StalledOutbox()
        self.dispatcher = FakeDispatcher()
        cfg = unlimited_config({"backpressureThreshold": 0.5})
        self.admission = Admission(
            cfg,
            self.clock,
            self.outbox,
            {"reloadTaskFailure.webhooks[0]": self.dispatcher},  # type: ignore[dict-item]
            RateLimiter(self.clock, {}),
            self.stats,
        )
        self.log = LogCapture(self, "butler_tw.notifier")

    def test_shedBeyondBoundThenRecover(self) -> None:
        datagrams = distinct(1300)
        for data in datagrams[:1200]:
            self.admission.datagram(data)
        self.assertEqual(self.admission.unstored, 1000)
        self.assertEqual(self.stats.get("alerts_shed"), 200)
        self.assertEqual(self.stats.get("alerts_accepted"), 1000)
        lines = self.log.lines()
        self.assertEqual(len(lines), 2, lines)  # one backpressure warning, one shed error
        self.assertIn("The outbox is falling behind: 500 alerts wait in memory", lines[0])
        self.assertIn("SHED: 1000 alerts already wait in memory", lines[1])
        self.clock.advance(60)
        self.assertIn("Shed 199 more alerts in the last 60 s", self.log.lines()[-1])
        # The disk comes back: every alert accepted is stored and dispatched, then new ones flow again.
        self.outbox.unstall()
        self.assertEqual(self.admission.unstored, 0)
        self.assertEqual(len(self.dispatcher.submitted), 1000)
        for data in datagrams[1200:]:
            self.admission.datagram(data)
        self.outbox.unstall()
        self.assertEqual(len(self.dispatcher.submitted), 1100)
        self.assertEqual(self.stats.get("alerts_shed"), 200)

    def test_shedAlertsDoNotUseRateLimitOrDedup(self) -> None:
        """A shed alert is gone, but it must not also silence the task's next alert."""
        for data in distinct(1000):
            self.admission.datagram(data)
        shed = distinct(1001)[-1]
        self.admission.datagram(shed)
        self.assertEqual(self.stats.get("alerts_shed"), 1)
        self.outbox.unstall()
        self.admission.datagram(shed)  # Qlik's log appender does not resend, but a replay tool might
        self.outbox.unstall()
        self.assertEqual(self.stats.get("alerts_duplicate"), 0)
        self.assertEqual(len(self.dispatcher.submitted), 1001)


class GuessLogTests(SynchronousTestCase):
    def test_ambiguousSplitLoggedOncePerTaskPerMinute(self) -> None:
        clock = Clock()
        log = LogCapture(self, "butler_tw.notifier")
        stats = Stats()
        admission = Admission(
            config(),
            clock,
            MemoryOutbox(),
            {"reloadTaskFailure.webhooks[0]": FakeDispatcher()},  # type: ignore[dict-item]
            RateLimiter(clock, {}),
            stats,
        )
        ambiguous = (
            b"/scheduler-task-failed/;host;Reload a;b;App a;b;LAB\\u;dec2a02a-1680-44ef-8dc2-e2bfb180af87;"
            b"5e3dbea5-1c1b-4a7c-8b33-6d3d4a1e8e11;2021-02-16 09:24:59,099;INFO;"
            b"14a81bf5-f81c-4047-b1a1-193b0920de28;Max retries"
        )
        for _ in range(50):
            admission.datagram(ambiguous)
        self.assertEqual(stats.get("alerts_ambiguous_split"), 50)
        guesses = [line for line in log.lines() if "parsed with a guess" in line]
        self.assertEqual(len(guesses), 1)
        clock.advance(60)
        self.assertIn("Parsed 49 more alerts with a guess in the last 60 s", log.lines()[-1])


class DropLogTests(SynchronousTestCase):
    """Duplicate and rate-limited alerts: one line per task and reason per minute, then a summary."""

    def test_stormOfOneTask(self) -> None:
        clock = Clock()
        cfg = config()
        log = LogCapture(self, "butler_tw.notifier")
        admission = Admission(
            cfg,
            clock,
            MemoryOutbox(),
            {"reloadTaskFailure.webhooks[0]": FakeDispatcher()},  # type: ignore[dict-item]
            RateLimiter(clock, {k: r.rateLimit for k, r in cfg.routes.items()}),
            Stats(),
        )
        first = distinct(1)[0]
        for n in range(1000):
            admission.datagram(first.replace(b"14a81bf5-f81c", f"{n:08x}-f81c".encode()))
        lines = log.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("rate limited", lines[0])
        clock.advance(60)
        self.assertEqual(log.lines()[1], "Also not sent in the last 60 s: 998 rate limited (1 task)")


class FailingDiskTests(TestCase):
    """The disk under the outbox fails for good: alerts still flow, memory stays bounded, the rest is shed."""

    @inlineCallbacks
    def test_boundHoldsWhileWritesFail(self) -> Any:
        import sqlite3

        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        from butler_tw.delivery.stores.sqlite import SqliteOutbox

        outbox = SqliteOutbox(self.mktemp(), reactor)
        outbox.open()

        def broken(ops: Any) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        outbox._commit = broken  # type: ignore[method-assign]
        self.addCleanup(lambda: outbox._retryCall.cancel() if outbox._retryCall else None)
        self.addCleanup(outbox._pool.stop)
        cfg = unlimited_config({})
        stats = Stats()
        dispatcher = FakeDispatcher()
        admission = Admission(
            cfg,
            reactor,
            outbox,
            {"reloadTaskFailure.webhooks[0]": dispatcher},  # type: ignore[dict-item]
            RateLimiter(reactor, {}),
            stats,
        )
        self.addCleanup(admission.stop)
        for chunk in range(6):
            for data in distinct(3000)[chunk * 500 : (chunk + 1) * 500]:
                admission.datagram(data)
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(outbox.healthy)
        self.assertLessEqual(outbox.unsavedAlerts + admission.unstored, 1000)
        self.assertGreater(len(dispatcher.submitted), 0)  # delivery carries on from memory
        # Every alert is delivered from memory, shed (counted), or waiting for its first write attempt.
        self.assertEqual(len(dispatcher.submitted) + stats.get("alerts_shed") + admission.unstored, 3000)
        self.assertGreaterEqual(stats.get("alerts_shed"), 2000)
