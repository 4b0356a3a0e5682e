"""LogThrottle on a fake clock: first line per key per period, then one summary from a timer."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.throttle import OVERFLOW, LogThrottle


class LogThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.summaries: list[dict[Any, int]] = []
        self.throttle = LogThrottle(self.clock, self.summaries.append, burst=1, period=60.0, maxKeys=3)

    def test_firstPerKeyPerPeriod(self) -> None:
        a, b = ("unknown-token", "10.0.0.1"), ("unknown-token", "10.0.0.2")
        self.assertEqual([self.throttle.allow(a) for _ in range(3)], [True, False, False])
        self.assertTrue(self.throttle.allow(b))
        self.assertEqual(self.summaries, [])

    def test_summaryFromTimerWithoutFurtherEvents(self) -> None:
        """The summary comes at the end of the period even if nothing else arrives."""
        a, b = ("empty", "10.0.0.1"), ("oversize", "10.0.0.2")
        for _ in range(5):
            self.throttle.allow(a)
        self.throttle.allow(b)
        self.clock.advance(59.9)
        self.assertEqual(self.summaries, [])
        self.clock.advance(0.1)
        self.assertEqual(self.summaries, [{a: 4}])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.throttle.allow(a))  # a new period

    def test_quietPeriodNoSummary(self) -> None:
        self.throttle.allow(("empty", "x"))
        self.clock.advance(60)
        self.assertEqual(self.summaries, [])

    def test_keysBounded(self) -> None:
        """A flood from many sources shares one overflow key beyond maxKeys."""
        for i in range(10):
            self.throttle.allow(("empty", f"10.0.0.{i}"))
        self.clock.advance(60)
        self.assertEqual(self.summaries, [{OVERFLOW: 6}])

    def test_stopSummarisesAndCancels(self) -> None:
        a = ("empty", "x")
        self.throttle.allow(a)
        self.throttle.allow(a)
        self.throttle.stop()
        self.assertEqual(self.summaries, [{a: 1}])
        self.assertEqual(self.clock.getDelayedCalls(), [])
