"""Admission: datagram -> size check -> parse -> dedup -> rate limit -> outbox -> dispatchers, on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.config import parse_config
from butler_tw.core.alert import EventKind
from butler_tw.core.dedup import Deduplicator
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.stats import Stats
from butler_tw.delivery.admission import Admission
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.support.admission import FakeDispatcher, config
from tests.support.daemon import sample_datagrams
from tests.support.receivers import make_alert


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.make()

    def make(self, rateLimit: float = 300, **udp: Any) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.dispatcher = FakeDispatcher()
        cfg = config(rateLimit, **udp)
        limiter = RateLimiter(self.clock, {k: r.rateLimit for k, r in cfg.routes.items()})
        self.admission = Admission(
            cfg,
            self.clock,
            MemoryOutbox(),
            {"reloadTaskFailure.webhooks[0]": self.dispatcher},  # type: ignore[dict-item]
            limiter,
            self.stats,
            Deduplicator(self.clock, cfg.dedupTtl),
        )

    def test_firstSampleIsDelivered(self) -> None:
        self.admission.datagram(sample_datagrams()[0])
        (delivery,) = self.dispatcher.submitted
        self.assertEqual(delivery.alert.kind, EventKind.FAILED)
        self.assertEqual(self.stats.get("alerts_accepted"), 1)

    def test_duplicateDropped(self) -> None:
        first = sample_datagrams()[0]
        self.admission.datagram(first)
        self.admission.datagram(first)
        self.assertEqual(len(self.dispatcher.submitted), 1)
        self.assertEqual(self.stats.get("alerts_duplicate"), 1)

    def test_noExecutionIdNeverDuplicate(self) -> None:
        """Two tasks failing without an executionId are two alerts; with one, a copy is dropped."""
        self.make(rateLimit=0)  # de-duplication alone
        first = sample_datagrams()[0]
        bare = first.replace(b"14a81bf5-f81c-4047-b1a1-193b0920de28", b"")
        other = bare.replace(b"dec2a02a-1680-44ef-8dc2-e2bfb180af87", b"7d3c2b1a-0000-4000-8000-000000000000")
        for data in (bare, other, first, first):
            self.admission.datagram(data)
        self.assertEqual(
            [(d.alert.taskId, d.alert.executionId) for d in self.dispatcher.submitted],
            [
                ("dec2a02a-1680-44ef-8dc2-e2bfb180af87", ""),
                ("7d3c2b1a-0000-4000-8000-000000000000", ""),
                ("dec2a02a-1680-44ef-8dc2-e2bfb180af87", "14a81bf5-f81c-4047-b1a1-193b0920de28"),
            ],
        )
        self.assertEqual(self.stats.get("alerts_duplicate"), 1)

    def test_sameTaskWithoutExecutionIdIsTheRateLimitsCall(self) -> None:
        """One task failing twice without an executionId: the rate limit, not de-duplication,
        holds the second back; after the window it is a new alert, with its own id."""
        bare = sample_datagrams()[0].replace(b"14a81bf5-f81c-4047-b1a1-193b0920de28", b"")
        self.admission.datagram(bare)
        self.admission.datagram(bare)
        self.assertEqual((self.stats.get("alerts_rate_limited"), self.stats.get("alerts_duplicate")), (1, 0))
        self.clock.advance(300)
        later = bare.replace(b"09:24:59,099", b"09:29:59,512")
        self.admission.datagram(later)
        first, second = self.dispatcher.submitted
        self.assertEqual(second.alert.logTimeStamp, "2021-02-16 09:29:59,512")
        self.assertNotEqual(first.id, second.id)
        self.assertEqual(self.stats.get("alerts_duplicate"), 0)

    def test_sameTaskWithoutExecutionIdNoRateLimit(self) -> None:
        """With rateLimit 0 nothing holds back a task's repeated failures without an executionId."""
        self.make(rateLimit=0)
        bare = sample_datagrams()[0].replace(b"14a81bf5-f81c-4047-b1a1-193b0920de28", b"")
        self.admission.datagram(bare)
        self.admission.datagram(bare.replace(b"09:24:59,099", b"09:25:00,001"))
        self.assertEqual(len(self.dispatcher.submitted), 2)
        self.assertEqual(len({d.id for d in self.dispatcher.submitted}), 2)

    def test_sameTaskRateLimited(self) -> None:
        first = sample_datagrams()[0]
        again = first.replace(
            b"14a81bf5-f81c-4047-b1a1-193b0920de28", b"24a81bf5-f81c-4047-b1a1-193b0920de28"
        )
        self.admission.datagram(first)
        self.admission.datagram(again)
        self.assertEqual(self.stats.get("alerts_rate_limited"), 1)
        self.clock.advance(300)
        self.admission.datagram(again.replace(b"24a81bf5", b"34a81bf5"))
        self.assertEqual(len(self.dispatcher.submitted), 2)

    def test_oversizeDropped(self) -> None:
        """A datagram over maxMessageSize is counted and dropped before parsing."""
        self.make(maxMessageSize=300)
        self.admission.datagram(sample_datagrams()[0] + b" " * 100)
        self.assertEqual(self.dispatcher.submitted, [])
        self.assertEqual((self.stats.get("datagrams_oversize"), self.stats.get("datagrams_rejected")), (1, 1))
        self.admission.datagram(sample_datagrams()[0])  # 279 bytes: fine
        self.assertEqual(len(self.dispatcher.submitted), 1)

    def test_defaultsAndReceiveBuffer(self) -> None:
        self.assertEqual((config().maxMessageSize, config().receiveBuffer), (65507, 8 * 1024 * 1024))
        self.assertEqual(config(receiveBufferBytes=33554432).receiveBuffer, 33554432)


class RejectLogTests(SynchronousTestCase):
    """Bad input is logged once per (problem, source) per minute, then summarised by a timer."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.stats = Stats()
        cfg = config()
        self.admission = Admission(
            cfg, self.clock, MemoryOutbox(), {}, RateLimiter(self.clock, {}), self.stats
        )

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == "butler_tw.gate"]

    def test_floodIsThrottledPerSource(self) -> None:
        for _ in range(1000):
            self.admission.datagram(b"garbage", "10.0.0.1")
        self.admission.datagram(b"", "10.0.0.1")
        self.admission.datagram(b"garbage", "10.0.0.2")
        lines = self.lines()
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("from 10.0.0.1", lines[0])
        self.assertIn("unknown type token 'garbage'", lines[0])
        self.assertIn("empty datagram", lines[1])
        self.assertIn("from 10.0.0.2", lines[2])
        self.assertEqual(self.stats.get("datagrams_rejected"), 1002)
        self.clock.advance(60)
        (summary,) = self.lines()[3:]
        self.assertIn("Dropped 999 more datagrams in the last 60 s: 999 unknown-token from 10.0.0.1", summary)

    def test_stopSummarises(self) -> None:
        self.admission.datagram(b"x", "h")
        self.admission.datagram(b"x", "h")
        self.admission.stop()
        self.assertIn("Dropped 1 more datagram in", self.lines()[-1])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RoutingTests(SynchronousTestCase):
    """``match:`` / ``exclude:``: production failures page someone, the rest go to chat."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.stats = Stats()
        self.pager, self.chat = FakeDispatcher(), FakeDispatcher()
        hooks = [
            {"webhookURL": "http://h/pager", "httpMethod": "POST", "match": {"taskName": "^Prod "}},
            {"webhookURL": "http://h/chat", "httpMethod": "POST", "exclude": {"taskName": "^Prod "}},
            {
                "webhookURL": "http://h/none",
                "httpMethod": "POST",
                "match": {"taskName": "^Prod "},
                "exclude": {"hostName": "^dev-"},
            },
        ]
        doc = {
            "Butler": {
                "udpServerConfig": {"enable": True, "serverHost": "127.0.0.1", "portTaskFailure": 9998},
                "webhookNotification": {
                    "enable": True,
                    "reloadTaskFailure": {"rateLimit": 300, "webhooks": hooks},
                    "reloadTaskAborted": {
                        "rateLimit": 300,
                        "webhooks": [hooks[0]],
                    },
                },
            }
        }
        cfg = parse_config(doc)
        self.limiter = RateLimiter(self.clock, {k: r.rateLimit for k, r in cfg.routes.items()})
        self.other = FakeDispatcher()
        self.admission = Admission(
            cfg,
            self.clock,
            MemoryOutbox(),
            {
                "reloadTaskFailure.webhooks[0]": self.pager,
                "reloadTaskFailure.webhooks[1]": self.chat,
                "reloadTaskFailure.webhooks[2]": self.other,
                "reloadTaskAborted.webhooks[0]": self.other,
            },  # type: ignore[dict-item]
            self.limiter,
            self.stats,
            Deduplicator(self.clock, cfg.dedupTtl),
        )

    def test_eachAlertToTheWebhooksThatTakeIt(self) -> None:
        self.admission.alert(make_alert(taskName="Prod sales", hostName="dev-1", taskId="t1"))
        self.admission.alert(make_alert(taskName="Prod sales", hostName="prod-1", taskId="t2"))
        self.admission.alert(make_alert(taskName="Test sales", taskId="t3"))
        self.assertEqual([d.alert.taskId for d in self.pager.submitted], ["t1", "t2"])
        self.assertEqual([d.alert.taskId for d in self.chat.submitted], ["t3"])
        self.assertEqual([d.alert.taskId for d in self.other.submitted], ["t2"])
        self.assertEqual(self.stats.get("alerts_accepted"), 3)

    def test_unroutedCountedAndLeavesTheWindowOpen(self) -> None:
        """An abort no webhook takes is counted as unrouted, not sent, and not rate limited."""
        alert = make_alert(EventKind.ABORTED, taskName="Test sales")
        self.admission.alert(alert)
        self.assertEqual(self.other.submitted, [])
        self.assertEqual(self.stats.get("alerts_unrouted", "reloadTaskAborted"), 1)
        self.assertEqual(self.stats.get("alerts_accepted"), 0)
        self.assertTrue(self.limiter.allow(alert))
