"""Tests for :mod:`butler_tw.ratelimit` and :mod:`butler_tw.throttle`, on a fake clock."""

from __future__ import annotations

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.alert import Alert, EventKind
from butler_tw.core.ratelimit import RateLimiter

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

    def test_oneTimerPerKind(self) -> None:
        self.limiter.allow(alert())
        self.limiter.allow(alert())
        self.limiter.allow(alert(taskId=TASK_B))
        calls = self.clock.getDelayedCalls()
        self.assertEqual([c.getTime() for c in calls], [300.0])
        self.limiter.allow(alert(EventKind.ABORTED))
        self.assertEqual(sorted(c.getTime() for c in self.clock.getDelayedCalls()), [60.0, 300.0])
        self.clock.advance(300)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.limiter), 0)

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
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # one per kind
        calls = list(self.clock.getDelayedCalls())
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual([c.active() for c in calls], [False, False])
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


def task(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


class RateLimiterTimerTests(SynchronousTestCase):
    """One timer per kind, armed for the window that ends first."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, {EventKind.FAILED: 300.0, EventKind.ABORTED: 60.0})

    def due(self) -> list[float]:
        return sorted(c.getTime() for c in self.clock.getDelayedCalls())

    def test_manyTasksExpireInOrder(self) -> None:
        for n in range(100):
            self.assertTrue(self.limiter.allow(alert(taskId=task(n))))
            self.assertEqual(self.due(), [300.0])
            self.clock.advance(1)
        self.assertEqual(len(self.limiter), 100)
        self.clock.advance(200)  # t=300: task 0's window ends
        for n in range(100):  # t=300+n: windows 0..n have ended, n+1.. are open
            self.assertEqual(len(self.limiter), 99 - n)
            self.assertEqual(self.limiter.remaining(alert(taskId=task(n))), 0.0)
            if n < 99:
                self.assertEqual(self.limiter.remaining(alert(taskId=task(n + 1))), 1.0)
                self.assertEqual(self.due(), [301.0 + n])
            self.clock.advance(1)
        self.assertEqual(self.due(), [])

    def test_timerPerKindIndependent(self) -> None:
        for n in range(10):
            self.limiter.allow(alert(EventKind.FAILED, task(n)))
            self.limiter.allow(alert(EventKind.ABORTED, task(n)))
            self.clock.advance(1)
        self.assertEqual(self.due(), [60.0, 300.0])
        self.clock.advance(55)  # t=65: ABORTED windows 0-5 ended
        self.assertEqual(len(self.limiter), 10 + 4)
        self.assertEqual(self.due(), [66.0, 300.0])
        self.clock.advance(5)
        self.assertEqual(self.due(), [300.0])

    def test_lateTimer(self) -> None:
        for n in range(10):
            self.limiter.allow(alert(taskId=task(n)))  # windows end at 300 .. 309
            self.clock.advance(1)
        self.clock.advance(295)  # t=305, one step over six expiries
        self.assertEqual(len(self.limiter), 4)
        self.assertEqual(self.due(), [306.0])
        for n in range(6):
            self.assertTrue(self.limiter.allow(alert(taskId=task(n))))
        self.assertFalse(self.limiter.allow(alert(taskId=task(6))))
        self.assertEqual(self.due(), [306.0])

    def test_endedWindowBeforeItsTimerRuns(self) -> None:
        """A window that has ended counts as ended even if the timer is late."""
        changes: list[tuple[EventKind, str, float]] = []
        limiter = RateLimiter(self.clock, {EventKind.FAILED: 300.0}, onChange=lambda *a: changes.append(a))
        limiter.allow(alert(taskId=task(0)))
        self.clock.advance(1)
        limiter.allow(alert(taskId=task(1)))
        self.clock.rightNow = 400.0  # time passed; the reactor has not run the timer yet
        self.assertEqual(limiter.remaining(alert(taskId=task(0))), 0.0)
        self.assertTrue(limiter.allow(alert(taskId=task(0))))
        self.assertEqual(changes[-1], (EventKind.FAILED, task(0), 700.0))
        self.assertEqual(limiter.remaining(alert(taskId=task(0))), 300.0)
        self.clock.advance(0)  # the late timer runs
        self.assertEqual(len(limiter), 1)
        self.assertFalse(limiter.allow(alert(taskId=task(0))))
        self.assertTrue(limiter.allow(alert(taskId=task(1))))
        self.assertEqual(self.due(), [700.0])

    def test_timerRoundingEarly(self) -> None:
        """The timer may run a rounding error before the expiry it was armed for."""
        self.clock.rightNow = 50.0
        self.limiter.allow(alert(taskId=task(0)))
        self.clock.rightNow = 79.2
        self.limiter.allow(alert(taskId=task(1)))  # ends at 79.2 + 300
        self.clock.rightNow = 82.4
        self.limiter.release(alert(taskId=task(0)))  # timer re-armed at 82.4
        self.clock.advance((79.2 + 300) - 82.4)
        self.assertLess(self.clock.seconds(), 79.2 + 300)  # the case under test
        self.assertEqual(len(self.limiter), 0)
        self.assertEqual(self.due(), [])

    def test_releaseFirstRearms(self) -> None:
        for n in range(3):
            self.limiter.allow(alert(taskId=task(n)))  # windows end at 300, 310, 320
            self.clock.advance(10)
        first = self.clock.getDelayedCalls()[0]
        self.limiter.release(alert(taskId=task(0)))
        self.assertFalse(first.active())
        self.assertEqual(self.due(), [310.0])
        rearmed = self.clock.getDelayedCalls()[0]
        self.limiter.release(alert(taskId=task(2)))  # not the first: timer kept
        self.assertEqual(self.clock.getDelayedCalls(), [rearmed])
        self.assertTrue(self.limiter.allow(alert(taskId=task(0))))  # ends at 330
        self.clock.advance(280)  # t=310
        self.assertEqual(len(self.limiter), 1)
        self.assertEqual(self.due(), [330.0])
        self.limiter.release(alert(taskId=task(0)))
        self.assertEqual(self.due(), [])
        self.assertEqual(len(self.limiter), 0)

    def test_releaseUpperCase(self) -> None:
        self.limiter.allow(alert(taskId=TASK_A))
        self.limiter.release(alert(taskId=TASK_A.upper()))
        self.assertEqual(len(self.limiter), 0)
        self.assertEqual(self.due(), [])

    def test_stopLeavesNoTimers(self) -> None:
        for n in range(5):
            self.limiter.allow(alert(EventKind.FAILED, task(n)))
            self.limiter.allow(alert(EventKind.ABORTED, task(n)))
            self.clock.advance(20)
        self.limiter.release(alert(EventKind.FAILED, task(0)))
        self.limiter.restore([(EventKind.FAILED, task(9), 150.0)])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.limiter), 0)
        self.clock.advance(1000)
        self.assertTrue(self.limiter.allow(alert(taskId=task(1))))  # usable again, from empty
        self.assertEqual(self.due(), [1400.0])


class RateLimiterRestoreOrderTests(SynchronousTestCase):
    """Restored windows are merged in expiry order, whatever order they come in."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.limiter = RateLimiter(self.clock, {EventKind.FAILED: 300.0, EventKind.ABORTED: 60.0})

    def due(self) -> list[float]:
        return sorted(c.getTime() for c in self.clock.getDelayedCalls())

    def test_outOfOrder(self) -> None:
        self.limiter.restore(
            [
                (EventKind.FAILED, task(1), 1200.0),
                (EventKind.FAILED, task(2).upper(), 1050.0),
                (EventKind.ABORTED, task(3), 1030.0),
                (EventKind.FAILED, task(4), 1100.0),
                (EventKind.FAILED, task(1), 1250.0),  # repeated: the first counts
                (EventKind.FAILED, task(5), 999.0),  # ended
                (EventKind.FAILED, task(6), 9000.0),  # clipped to 1300
                (EventKind.ABORTED, task(7), 1010.0),
            ]
        )
        self.assertEqual(len(self.limiter), 6)
        self.assertEqual(self.due(), [1010.0, 1050.0])
        ends = {1: 1200.0, 2: 1050.0, 4: 1100.0, 6: 1300.0}
        for n, end in ends.items():
            self.assertEqual(self.limiter.remaining(alert(taskId=task(n))), end - 1000)
        self.assertEqual(self.limiter.remaining(alert(EventKind.ABORTED, task(3))), 30.0)
        open_ = len(self.limiter)
        for end in sorted([1010.0, 1030.0, *ends.values()]):
            self.clock.advance(end - self.clock.seconds())
            open_ -= 1
            self.assertEqual(len(self.limiter), open_, end)
        self.assertEqual(self.due(), [])

    def test_mergedWithOpenWindows(self) -> None:
        self.assertTrue(self.limiter.allow(alert(taskId=task(0))))  # ends at 1300
        self.clock.advance(10)
        self.assertTrue(self.limiter.allow(alert(taskId=task(1))))  # ends at 1310
        self.limiter.restore(
            [
                (EventKind.FAILED, task(2), 1305.0),
                (EventKind.FAILED, task(0), 1100.0),  # already open: kept as is
                (EventKind.FAILED, task(3), 1100.0),
            ]
        )
        self.assertEqual(self.due(), [1100.0])
        self.assertEqual(self.limiter.remaining(alert(taskId=task(0))), 290.0)
        self.clock.advance(90)  # t=1100
        self.assertEqual(len(self.limiter), 3)
        self.assertTrue(self.limiter.allow(alert(taskId=task(3))))  # ends at 1400
        self.assertEqual(self.due(), [1300.0])
        for t, left in [(1300.0, 3), (1305.0, 2), (1310.0, 1), (1400.0, 0)]:
            self.clock.advance(t - self.clock.seconds())
            self.assertEqual(len(self.limiter), left, t)
        self.assertEqual(self.due(), [])

    def test_restoreNothingKeepsTimer(self) -> None:
        self.limiter.allow(alert())
        call = self.clock.getDelayedCalls()[0]
        self.limiter.restore([(EventKind.FAILED, task(1), 900.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [call])
        self.assertTrue(call.active())


class ReconfigureTests(SynchronousTestCase):
    """``reconfigure``: new rateLimit values at a reload keep the open windows."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, {EventKind.FAILED: 300.0, EventKind.ABORTED: 0.0})

    def test_longerWindowLengthensOpenOnes(self) -> None:
        """300 s -> 600 s: a window opened 100 s ago lasts 600 s from its start; new ones too."""
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(100)
        self.limiter.reconfigure({EventKind.FAILED: 600.0, EventKind.ABORTED: 0.0})
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A)))
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_A)), 500)
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_B)))
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_B)), 600)
        self.clock.advance(499)
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(1)
        self.assertEqual(len(self.limiter), 1, "A's window ended at its start + 600 s, B's is open")
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.assertEqual(len(self.limiter), 2)

    def test_longerThenShorterDoesNotEndEarly(self) -> None:
        """300 -> 400 -> 350 s: a window opened at 0 ends at 350, not 300 or before."""
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(100)
        self.limiter.reconfigure({EventKind.FAILED: 400.0, EventKind.ABORTED: 0.0})
        self.clock.advance(100)
        self.limiter.reconfigure({EventKind.FAILED: 350.0, EventKind.ABORTED: 0.0})
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_A)), 150)
        self.clock.advance(149)
        self.assertEqual(len(self.limiter), 1)
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(1)
        self.assertEqual((len(self.limiter), self.clock.getDelayedCalls()), (0, []))
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))

    def test_shorterThenLongerDoesNotEndEarly(self) -> None:
        """300 -> 200 -> 300 s: a window opened at 0 (and not ended at 200) lasts to 300 again."""
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(50)
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_B)))
        self.clock.advance(50)
        self.limiter.reconfigure({EventKind.FAILED: 200.0, EventKind.ABORTED: 0.0})
        self.clock.advance(50)
        self.limiter.reconfigure({EventKind.FAILED: 300.0, EventKind.ABORTED: 0.0})
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_A)), 150)
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_B)), 200)
        self.clock.advance(149)
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(1)
        self.assertEqual(len(self.limiter), 1, "A ended at 300, B (opened at 50) is open")
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_B)))
        self.clock.advance(50)
        self.assertEqual((len(self.limiter), self.clock.getDelayedCalls()), (0, []))

    def test_shorterWindowEndsOpenOnesSooner(self) -> None:
        """300 s -> 60 s: a window opened 100 s ago has ended; one opened 20 s ago has 40 s left."""
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(80)
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_B)))
        self.clock.advance(20)
        self.limiter.reconfigure({EventKind.FAILED: 60.0, EventKind.ABORTED: 0.0})
        self.assertEqual(len(self.limiter), 1)
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_A)), 0)
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_B)), 40)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(40)
        self.assertEqual(len(self.limiter), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # And the order of expiry still holds for windows opened after the reload.
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(59)
        self.assertFalse(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(1)
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))

    def test_shorterWindowNeverExtends(self) -> None:
        """A window about to end is not given the new length from now."""
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.clock.advance(290)
        self.limiter.reconfigure({EventKind.FAILED: 200.0, EventKind.ABORTED: 0.0})
        self.assertEqual(self.limiter.remaining(alert(taskId=TASK_A)), 0)
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))

    def test_zeroForgetsWindows(self) -> None:
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.limiter.reconfigure({EventKind.FAILED: 0.0, EventKind.ABORTED: 0.0})
        self.assertEqual((len(self.limiter), self.clock.getDelayedCalls()), (0, []))
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))
        self.assertTrue(self.limiter.allow(alert(taskId=TASK_A)))

    def test_fromZeroStartsLimiting(self) -> None:
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))
        self.limiter.reconfigure({EventKind.FAILED: 300.0, EventKind.ABORTED: 30.0})
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))
        self.assertFalse(self.limiter.allow(alert(EventKind.ABORTED)))
        self.clock.advance(30)
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED)))

    def test_restoreAndReleaseAfterReconfigure(self) -> None:
        """The other operations keep working on a reconfigured kind."""
        self.limiter.reconfigure({EventKind.FAILED: 0.0, EventKind.ABORTED: 60.0})
        self.limiter.restore([(EventKind.ABORTED, TASK_A, 1000.0), (EventKind.FAILED, TASK_B, 1000.0)])
        self.assertEqual(self.limiter.remaining(alert(EventKind.ABORTED, TASK_A)), 60)
        self.assertTrue(self.limiter.allow(alert(EventKind.FAILED, TASK_B)))
        self.limiter.release(alert(EventKind.ABORTED, TASK_A))
        self.assertTrue(self.limiter.allow(alert(EventKind.ABORTED, TASK_A)))
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
