"""Tests for :mod:`butler_tw.ratelimit` and :mod:`butler_tw.throttle`, on a fake clock."""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.alert import Alert, EventKind
from butler_tw.ratelimit import RateLimiter

TASK_A = "dec2a02a-1680-44ef-8dc2-e2bfb180af87"
TASK_B = "3c9d1f4e-7b2a-4e51-9f0d-5a6b8c7d2e10"


def alert(kind: EventKind = EventKind.FAILED, taskId: str = TASK_A, executionId: str = "e1") -> Alert:
    return Alert(
        kind=kind,
        hostName="pro2-win1",
        user="LAB\\goran",
        taskName="Reload",
        taskId=taskId,
        appName="App",
        appId="",
        logTimeStamp="2021-02-16 09:24:59,099",
        logLevel="INFO",
        executionId=executionId,
        logMessage="Max retries reached",
    )


class RateLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, {EventKind.FAILED: 300.0, EventKind.ABORTED: 60.0})

    def test_oncePerWindow(self) -> None:
        self.assertTrue(self.limiter.allow(alert()))
        self.assertFalse(self.limiter.allow(alert()))
        self.assertFalse(self.limiter.allow(alert(executionId="another run")))
        self.assertEqual(len(self.limiter), 1)

    def test_otherTaskNotLimited(self) -> None:
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_B)))
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_B)))
        self.assertEqual(len(self.limiter), 2)

    def test_taskIdCaseInsensitive(self) -> None:
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A.upper())))

    def test_failureAndAbortIndependent(self) -> None:
        self.assertTrue(self.limiter.allow(alert(EventKind.FAILED)))
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))
        self.assertFalse(self.limiter.allow(alert(EventKind.FAILED)))
        self.assertFalse(self.limiter.allow(alert(EventKind.ABORTED)))
        self.assertEqual(len(self.limiter), 2)

    def test_windowExpires(self) -> None:
        self.assertTrue(self.limiter.allow(alert()))
        self.clock.advance(299.9)
        self.assertFalse(self.limiter.allow(alert()))
        self.clock.advance(0.1)
        self.assertEqual(len(self.limiter), 0)
        self.assertTrue(self.limiter.allow(alert()))
        self.assertFalse(self.limiter.allow(alert()))

    def test_refusedAlertDoesNotExtendWindow(self) -> None:
        self.assertTrue(self.limiter.allow(alert()))
        self.clock.advance(200)
        self.assertFalse(self.limiter.allow(alert()))
        self.clock.advance(100)
        self.assertTrue(self.limiter.allow(alert()))

    def test_windowPerKind(self) -> None:
        self.assertTrue(self.limiter.allow(alert(EventKind.FAILED)))
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))
        self.clock.advance(60)
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))
        self.assertFalse(self.limiter.allow(alert(EventKind.FAILED)))

    def test_remaining(self) -> None:
        self.assertEqual(self.limiter.remaining(alert()), 0.0)
        self.limiter.allow(alert())
        self.assertEqual(self.limiter.remaining(alert()), 300.0)
        self.clock.advance(120)
        self.assertEqual(self.limiter.remaining(alert()), 180.0)
        self.assertEqual(self.limiter.remaining(alert(EventKind.ABORTED)), 0.0)
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_B)), 0.0)
        self.clock.advance(180)
        self.assertEqual(self.limiter.remaining(alert()), 0.0)

    def test_oneTimerPerWindow(self) -> None:
        self.limiter.allow(alert())
        self.limiter.allow(alert())
        self.limiter.allow(alert(taskId=TASK_B))
        calls = self.clock.getDelayedCalls()
        self.assertEqual(len(calls), 2)
        self.assertEqual(sorted(c.getTime() for c in calls), [300.0, 300.0])
        self.clock.advance(300)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroDisables(self) -> None:
        limiter = RateLimiter(self.clock, {EventKind.FAILED: 0.0, EventKind.ABORTED: 60.0})
        for _ in range(3):
            self.assertTrue(limiter.allow(alert(EventKind.FAILED)))
        self.assertEqual(limiter.remaining(alert(EventKind.FAILED)), 0.0)
        self.assertEqual(len(limiter), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(limiter.allow(alert(EventKind.ABORTED)))
        self.assertFalse(limiter.allow(alert(EventKind.ABORTED)))

    def test_missingKindNotLimited(self) -> None:
        limiter = RateLimiter(self.clock, {EventKind.FAILED: 10.0})
        self.assertTrue(limiter.allow(alert(EventKind.ABORTED)))
        self.assertTrue(limiter.allow(alert(EventKind.ABORTED)))

    def test_windowsCopied(self) -> None:
        windows = {EventKind.FAILED: 10.0}
        limiter = RateLimiter(self.clock, windows)
        windows[EventKind.FAILED] = 0.0
        self.assertTrue(limiter.allow(alert()))
        self.assertFalse(limiter.allow(alert()))

    def test_stopCancelsTimers(self) -> None:
        self.limiter.allow(alert(EventKind.FAILED))
        self.limiter.allow(alert(EventKind.ABORTED))
        self.limiter.allow(alert(taskId=TASK_B))
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)
        calls = list(self.clock.getDelayedCalls())
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([c.active() for c in calls], [False, False, False])
        self.assertEqual(len(self.limiter), 0)

    def test_stopAfterSomeExpired(self) -> None:
        self.limiter.allow(alert(EventKind.ABORTED))
        self.limiter.allow(alert(EventKind.FAILED))
        self.clock.advance(60)
        self.assertEqual(len(self.limiter), 1)
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopTwice(self) -> None:
        self.limiter.allow(alert())
        self.limiter.stop()
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherFieldsIrrelevant(self) -> None:
        self.assertTrue(self.limiter.allow(alert()))
        self.assertFalse(self.limiter.allow(attrs.evolve(alert(), hostName="other", taskName="renamed")))


FAILED = alert()


class RateLimiterPersistenceTests(SynchronousTestCase):
    """Windows reported to a store as they open, and re-armed after a restart."""

    def test_onOpenReportsExpiry(self) -> None:
        clock = Clock()
        clock.advance(1000)
        opened: list[tuple[EventKind, str, float]] = []
        limiter = RateLimiter(clock, {EventKind.FAILED: 300}, onChange=lambda *a: opened.append(a))
        limiter.allow(FAILED)
        limiter.allow(FAILED)
        self.assertEqual(opened, [(EventKind.FAILED, FAILED.taskId.lower(), 1300.0)])

    def test_restoreRemainingTime(self) -> None:
        clock = Clock()
        clock.advance(1000)
        limiter = RateLimiter(clock, {EventKind.FAILED: 300})
        limiter.restore([(EventKind.FAILED, FAILED.taskId.upper(), 1100.0)])
        self.assertFalse(limiter.allow(FAILED))
        self.assertEqual(limiter.remaining(FAILED), 100)
        clock.advance(100)
        self.assertTrue(limiter.allow(FAILED))

    def test_restoreSkipsExpiredAndClipsToWindow(self) -> None:
        clock = Clock()
        clock.advance(1000)
        limiter = RateLimiter(clock, {EventKind.FAILED: 60, EventKind.ABORTED: 0})
        limiter.restore(
            [
                (EventKind.FAILED, FAILED.taskId, 999.0),  # expired
                (EventKind.ABORTED, FAILED.taskId, 5000.0),  # kind no longer limited
            ]
        )
        self.assertEqual(len(limiter), 0)
        limiter.restore([(EventKind.FAILED, FAILED.taskId, 5000.0)])  # rateLimit lowered to 60
        self.assertEqual(limiter.remaining(FAILED), 60)


class RateLimiterReleaseTests(SynchronousTestCase):
    """An alert that reached no webhook does not silence the task's next one."""

    def test_releaseReopensAndReports(self) -> None:
        clock = Clock()
        clock.advance(1000)
        changes: list[tuple[EventKind, str, float]] = []
        limiter = RateLimiter(clock, {EventKind.FAILED: 300}, onChange=lambda *a: changes.append(a))
        self.assertTrue(limiter.allow(FAILED))
        clock.advance(50)
        limiter.release(FAILED)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(limiter.allow(FAILED))
        task = FAILED.taskId.lower()
        self.assertEqual(
            changes,
            [
                (EventKind.FAILED, task, 1300.0),
                (EventKind.FAILED, task, 1050.0),
                (EventKind.FAILED, task, 1350.0),
            ],
        )

    def test_releaseUnknownIsHarmless(self) -> None:
        limiter = RateLimiter(Clock(), {EventKind.FAILED: 300})
        limiter.release(FAILED)
        self.assertEqual(len(limiter), 0)
