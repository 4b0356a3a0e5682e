"""Deduplicator: (kind, taskId, executionId) remembered for a TTL, on a fake clock."""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.alert import EventKind
from butler_tw.core.dedup import Deduplicator
from tests.support.alerts import ALERT


class DeduplicatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.remembered: list[tuple[EventKind, tuple[str, str], float]] = []
        self.dedup = Deduplicator(self.clock, 600, lambda *a: self.remembered.append(a))

    def test_secondIsDuplicate(self) -> None:
        self.assertFalse(self.dedup.seen(ALERT))
        self.assertTrue(self.dedup.seen(ALERT))
        self.assertEqual(self.remembered, [(EventKind.FAILED, (ALERT.taskId, ALERT.executionId), 600.0)])

    def test_idsCaseInsensitive(self) -> None:
        self.dedup.seen(ALERT)
        upper = attrs.evolve(ALERT, taskId=ALERT.taskId.upper(), executionId=ALERT.executionId.upper())
        self.assertTrue(self.dedup.seen(upper))

    def test_otherKindTaskOrExecutionIsNew(self) -> None:
        self.dedup.seen(ALERT)
        self.assertFalse(self.dedup.seen(attrs.evolve(ALERT, kind=EventKind.ABORTED)))
        self.assertFalse(
            self.dedup.seen(attrs.evolve(ALERT, executionId="00000000-0000-4000-8000-000000000000"))
        )
        # The same executionId from another task is another run, not a copy.
        self.assertFalse(self.dedup.seen(attrs.evolve(ALERT, taskId="7d3c2b1a-0000-4000-8000-000000000000")))
        self.assertEqual(len(self.dedup), 4)

    def test_emptyExecutionIdNeverDuplicate(self) -> None:
        """Without an executionId nothing is remembered: neither another task nor the same one is dropped."""
        bare = attrs.evolve(ALERT, executionId="")
        other = attrs.evolve(bare, taskId="7d3c2b1a-0000-4000-8000-000000000000", taskName="other")
        self.assertEqual(
            [self.dedup.seen(a) for a in (bare, other, bare, attrs.evolve(bare, executionId="  "))],
            [False, False, False, False],
        )
        self.assertEqual((len(self.dedup), self.remembered), (0, []))

    def test_expires(self) -> None:
        self.dedup.seen(ALERT)
        self.clock.advance(599)
        self.assertTrue(self.dedup.seen(ALERT))
        self.clock.advance(1)
        self.assertFalse(self.dedup.seen(ALERT))
        self.assertEqual(len(self.remembered), 2)

    def test_sweepBoundsMemory(self) -> None:
        for i in range(100):
            self.dedup.seen(attrs.evolve(ALERT, executionId=f"{i:08x}-0000-4000-8000-000000000000"))
            self.clock.advance(10)
        # Only the last 60 (600 s at one per 10 s) are still remembered.
        self.assertEqual(len(self.dedup), 60)

    def test_zeroTtlDisables(self) -> None:
        dedup = Deduplicator(self.clock, 0)
        self.assertFalse(dedup.seen(ALERT))
        self.assertFalse(dedup.seen(ALERT))
        self.assertEqual(len(dedup), 0)

    def test_restore(self) -> None:
        """Keys from before a restart keep their remaining time."""
        self.clock.advance(1000)
        self.dedup.restore([(EventKind.FAILED, (ALERT.taskId, ALERT.executionId.upper()), 1100.0)])
        self.assertTrue(self.dedup.seen(ALERT))
        self.clock.advance(100)
        self.assertFalse(self.dedup.seen(ALERT))

    def test_reconfigureLongerKeepsKeys(self) -> None:
        self.dedup.seen(ALERT)
        self.clock.advance(500)
        self.dedup.reconfigure(1200)
        self.assertTrue(self.dedup.seen(ALERT))
        self.clock.advance(100)  # seen at 0 with 600 s: ended
        self.assertFalse(self.dedup.seen(ALERT))
        self.clock.advance(1199)
        self.assertTrue(self.dedup.seen(ALERT))

    def test_reconfigureShorterEndsKeysSooner(self) -> None:
        other = attrs.evolve(ALERT, executionId="other")
        self.dedup.seen(ALERT)
        self.clock.advance(250)
        self.dedup.seen(other)
        self.clock.advance(50)
        self.dedup.reconfigure(120)  # ALERT seen 300 s ago: forgotten; other 50 s ago: 70 s left
        self.assertEqual(len(self.dedup), 1)
        self.assertFalse(self.dedup.seen(ALERT))
        self.clock.advance(69)
        self.assertTrue(self.dedup.seen(other))
        self.clock.advance(1)
        self.assertFalse(self.dedup.seen(other))

    def test_reconfigureOffAndOn(self) -> None:
        self.dedup.seen(ALERT)
        self.dedup.reconfigure(0)
        self.assertEqual(len(self.dedup), 0)
        self.assertFalse(self.dedup.seen(ALERT))
        self.dedup.reconfigure(60)
        self.assertFalse(self.dedup.seen(ALERT))
        self.assertTrue(self.dedup.seen(ALERT))
