"""Counts in words: no "0 deliveries are dead letters", and "1 delivery", "2 deliveries"."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.delivery import Delivery, Rebinding
from butler_tw.core.ratelimit import RateLimiter
from butler_tw.core.stats import Stats
from butler_tw.core.words import DEFAULT_CONFIG, admin_command, count
from butler_tw.delivery.service import DeliveryService
from butler_tw.delivery.stores.memory import MemoryOutbox
from tests.support.logs import LogCapture
from tests.support.receivers import make_alert


class CountTests(SynchronousTestCase):
    def test_count(self) -> None:
        self.assertEqual(
            [count(n, "delivery", "deliveries") for n in (0, 1, 2, 11)],
            ["no deliveries", "1 delivery", "2 deliveries", "11 deliveries"],
        )


class AdminCommandTests(SynchronousTestCase):
    """Commands in log lines paste as they stand: ``-c`` when the config is not the default one."""

    def test_defaultConfig(self) -> None:
        self.assertEqual(
            admin_command(DEFAULT_CONFIG, "deliveries", "--state", "dead"),
            "butler-tw deliveries --state dead",
        )

    def test_otherConfig(self) -> None:
        self.assertEqual(
            admin_command("/srv/qlik butler/production.yaml", "replay", "abc"),
            "butler-tw replay -c '/srv/qlik butler/production.yaml' abc",
        )


class _Taker:
    def __init__(self) -> None:
        self.taken: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.taken.append(delivery)


class ServiceLogTests(SynchronousTestCase):
    """What the delivery service logs at a start, a rebind and a replay pick-up."""

    def setUp(self) -> None:
        self.log = LogCapture(self, "butler_tw.service")
        clock = Clock()
        self.service = DeliveryService(
            clock, MemoryOutbox(), {}, {}, RateLimiter(clock, {}), Stats(), grace=1.0
        )

    def test_removedWebhooks(self) -> None:
        self.service._logRebinding(Rebinding(removed={"a": 0, "b": 1, "c": 2}))
        self.assertEqual(
            self.log.lines(),
            [
                "Webhook a was removed from the config or now sends elsewhere: it had no pending deliveries",
                "Webhook b was removed from the config or now sends elsewhere: its 1 pending delivery is a "
                "dead letter (butler-tw deliveries --state dead)",
                "Webhook c was removed from the config or now sends elsewhere: its 2 pending deliveries are "
                "dead letters (butler-tw deliveries --state dead)",
            ],
        )

    def test_removedWebhooksOtherConfig(self) -> None:
        clock = Clock()
        service = DeliveryService(
            clock,
            MemoryOutbox(),
            {},
            {},
            RateLimiter(clock, {}),
            Stats(),
            grace=1.0,
            configPath="/opt/butler/production.yaml",
        )
        service._logRebinding(Rebinding(removed={"b": 1}))
        self.assertEqual(
            self.log.lines(),
            [
                "Webhook b was removed from the config or now sends elsewhere: its 1 pending delivery is a "
                "dead letter (butler-tw deliveries -c /opt/butler/production.yaml --state dead)",
            ],
        )

    def resume(self, n: int) -> None:
        taker: Any = _Taker()
        deliveries = [Delivery(make_alert(executionId=f"e{i}"), "k", 0.0) for i in range(n)]
        self.service._resume(
            deliveries, "Picked up {deliveries} re-queued", ("delivery", "deliveries"), {"k": taker}
        )
        self.assertEqual(len(taker.taken), n)

    def test_pickedUp(self) -> None:
        self.resume(0)
        self.resume(1)
        self.resume(2)
        self.assertEqual(
            self.log.lines(), ["Picked up 1 delivery re-queued", "Picked up 2 deliveries re-queued"]
        )
