"""Tests for :mod:`butler_tw.retry`: status verdicts, the retry schedule, Retry-After."""

from __future__ import annotations

import calendar

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from butler_tw.core.retry import (
    DEFAULT_MAX_AGE,
    DEFAULT_SCHEDULE,
    JITTER,
    RetryPolicy,
    Verdict,
    hint_for_status,
    parse_retry_after,
    verdict_for_status,
)

ACCEPTED = 1000.0


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


class VerdictTests(SynchronousTestCase):
    def test_delivered(self) -> None:
        for status in (200, 201, 202, 204, 299):
            self.assertIs(verdict_for_status(status), Verdict.DELIVERED, status)

    def test_retry(self) -> None:
        for status in (500, 502, 503, 504, 599, 408, 429):
            self.assertIs(verdict_for_status(status), Verdict.RETRY, status)

    def test_permanent4xx(self) -> None:
        for status in (400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 499):
            self.assertIs(verdict_for_status(status), Verdict.PERMANENT, status)

    def test_permanent3xx(self) -> None:
        for status in (300, 301, 302, 303, 304, 307, 308):
            self.assertIs(verdict_for_status(status), Verdict.PERMANENT, status)

    def test_hints(self) -> None:
        self.assertEqual(hint_for_status(301), "redirects are not followed: put the final URL in webhookURL")
        self.assertEqual(hint_for_status(308), "redirects are not followed: put the final URL in webhookURL")
        self.assertEqual(
            hint_for_status(401), "the receiver refused our credentials: check the token in webhookURL"
        )
        self.assertEqual(
            hint_for_status(403), "the receiver refused our credentials: check the token in webhookURL"
        )
        self.assertEqual(hint_for_status(404), "check the URL")
        self.assertEqual(hint_for_status(410), "check the URL")
        self.assertEqual(hint_for_status(405), "the receiver does not accept this method: check httpMethod")
        for status in (400, 413, 415, 422):
            self.assertEqual(hint_for_status(status), "the receiver rejected the payload", status)
        self.assertEqual(hint_for_status(429), "the receiver is rate limiting us")
        self.assertEqual(hint_for_status(500), "the receiver had an error")
        self.assertEqual(hint_for_status(503), "the receiver had an error")
        self.assertEqual(hint_for_status(418), "")
        self.assertEqual(hint_for_status(408), "")


class ScheduleTests(SynchronousTestCase):
    """next_attempt_at: the schedule, jitter, maxAge and Retry-After."""

    def setUp(self) -> None:
        self.policy = RetryPolicy()

    def test_defaults(self) -> None:
        self.assertEqual(DEFAULT_SCHEDULE, (0.0, 5.0, 30.0, 120.0, 600.0, 1800.0))
        self.assertEqual(DEFAULT_MAX_AGE, 3600.0)
        self.assertEqual(JITTER, 0.2)
        self.assertEqual(self.policy, RetryPolicy(DEFAULT_SCHEDULE, DEFAULT_MAX_AGE))

    def test_noJitterAtHalf(self) -> None:
        """rand() == 0.5 is the middle: exactly the scheduled offsets."""
        got = [self.policy.next_attempt_at(ACCEPTED, n, now=ACCEPTED, rand=fixed(0.5)) for n in range(6)]
        self.assertEqual(got, [1000.0, 1005.0, 1030.0, 1120.0, 1600.0, 2800.0])

    def test_jitterLow(self) -> None:
        """rand() == 0: 20 % early."""
        got = [self.policy.next_attempt_at(ACCEPTED, n, now=ACCEPTED, rand=fixed(0.0)) for n in range(1, 6)]
        self.assertEqual(got, [1004.0, 1024.0, 1096.0, 1480.0, 2440.0])

    def test_jitterHigh(self) -> None:
        """rand() close to 1: close to 20 % late, never more."""
        got = [
            self.policy.next_attempt_at(ACCEPTED, n, now=ACCEPTED, rand=fixed(0.9999999)) for n in range(1, 6)
        ]
        for value, want in zip(got, [1006.0, 1036.0, 1144.0, 1720.0, 3160.0]):
            assert value is not None
            self.assertAlmostEqual(value, want, places=2)
            self.assertLess(value, want)

    def test_jitterQuarter(self) -> None:
        self.assertEqual(self.policy.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.75)), 1005.5)
        self.assertEqual(self.policy.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.25)), 1004.5)

    def test_firstAttemptHasNoJitter(self) -> None:
        for r in (0.0, 0.5, 0.9999):
            self.assertEqual(self.policy.next_attempt_at(ACCEPTED, 0, ACCEPTED, rand=fixed(r)), ACCEPTED)

    def test_neverInThePast(self) -> None:
        """An attempt that is overdue (a slow receiver) is due now, not earlier."""
        self.assertEqual(
            self.policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 100, rand=fixed(0.5)), 1100.0
        )

    def test_givesUpAfterSchedule(self) -> None:
        self.assertIsNone(self.policy.next_attempt_at(ACCEPTED, 6, now=ACCEPTED + 10, rand=fixed(0.5)))
        self.assertIsNone(self.policy.next_attempt_at(ACCEPTED, 60, now=ACCEPTED + 10, rand=fixed(0.5)))
        short = RetryPolicy(schedule=(0.0, 1.0))
        self.assertEqual(short.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.5)), 1001.0)
        self.assertIsNone(short.next_attempt_at(ACCEPTED, 2, ACCEPTED, rand=fixed(0.5)))

    def test_givesUpAfterMaxAge(self) -> None:
        policy = RetryPolicy(schedule=(0.0, 10.0, 100.0), maxAge=50.0)
        self.assertEqual(policy.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.5)), 1010.0)
        self.assertIsNone(policy.next_attempt_at(ACCEPTED, 2, ACCEPTED, rand=fixed(0.5)))

    def test_givesUpWhenNowPastMaxAge(self) -> None:
        policy = RetryPolicy(schedule=(0.0, 10.0), maxAge=50.0)
        self.assertIsNone(policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 51, rand=fixed(0.5)))
        self.assertEqual(policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 50, rand=fixed(0.5)), 1050.0)

    def test_maxAgeBoundary(self) -> None:
        """Due exactly at maxAge is still allowed."""
        policy = RetryPolicy(schedule=(0.0, 50.0), maxAge=50.0)
        self.assertEqual(policy.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.5)), 1050.0)
        self.assertIsNone(policy.next_attempt_at(ACCEPTED, 1, ACCEPTED, rand=fixed(0.75)))

    def test_defaultMaxAgeCutsJitteredLastAttempt(self) -> None:
        """Schedule (.., 1800) with maxAge 3600: even +20 % fits."""
        self.assertEqual(self.policy.next_attempt_at(ACCEPTED, 5, ACCEPTED, rand=fixed(0.5)), 2800.0)

    def test_retryAfterLonger(self) -> None:
        got = self.policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 1, retryAfter=60.0, rand=fixed(0.5))
        self.assertEqual(got, 1061.0)

    def test_retryAfterShorter(self) -> None:
        """A Retry-After sooner than the schedule does not make us retry sooner."""
        got = self.policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 1, retryAfter=1.0, rand=fixed(0.5))
        self.assertEqual(got, 1005.0)

    def test_retryAfterZero(self) -> None:
        got = self.policy.next_attempt_at(ACCEPTED, 2, now=ACCEPTED + 2, retryAfter=0.0, rand=fixed(0.5))
        self.assertEqual(got, 1030.0)

    def test_retryAfterBeyondMaxAge(self) -> None:
        """Retry-After past maxAge: give up rather than deliver a stale alert."""
        self.assertIsNone(
            self.policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 1, retryAfter=3600.0, rand=fixed(0.5))
        )
        self.assertEqual(
            self.policy.next_attempt_at(ACCEPTED, 1, now=ACCEPTED + 1, retryAfter=3599.0, rand=fixed(0.5)),
            ACCEPTED + 3600.0,
        )

    def test_retryAfterDoesNotExtendSchedule(self) -> None:
        self.assertIsNone(
            self.policy.next_attempt_at(ACCEPTED, 6, now=ACCEPTED + 1, retryAfter=1.0, rand=fixed(0.5))
        )

    @settings(max_examples=300, deadline=None)
    @given(
        schedule=st.lists(st.floats(0, 1e5), min_size=1, max_size=8).map(lambda s: tuple(sorted(s))),
        maxAge=st.floats(1, 1e6),
        attempts=st.integers(0, 10),
        elapsed=st.floats(0, 2e6),
        retryAfter=st.none() | st.floats(0, 1e7),
        r=st.floats(0, 1, exclude_max=True),
    )
    def test_bounds(
        self,
        schedule: tuple[float, ...],
        maxAge: float,
        attempts: int,
        elapsed: float,
        retryAfter: float | None,
        r: float,
    ) -> None:
        """Never earlier than now, never past maxAge, never beyond the schedule."""
        policy = RetryPolicy(schedule, maxAge)
        now = ACCEPTED + elapsed
        due = policy.next_attempt_at(ACCEPTED, attempts, now, retryAfter, rand=fixed(r))
        if attempts >= len(schedule):
            self.assertIsNone(due)
        if due is None:
            return
        self.assertGreaterEqual(due, now)
        self.assertLessEqual(due - ACCEPTED, maxAge)
        if retryAfter is not None:
            self.assertGreaterEqual(due, now + retryAfter)
        offset = schedule[attempts]
        self.assertGreaterEqual(due, ACCEPTED + offset * (1 - JITTER) - 1e-6)


class RetryAfterTests(SynchronousTestCase):
    NOW = float(calendar.timegm((2015, 10, 21, 7, 28, 0)))

    def test_seconds(self) -> None:
        self.assertEqual(parse_retry_after("120", self.NOW), 120.0)
        self.assertEqual(parse_retry_after(" 5 ", self.NOW), 5.0)
        self.assertEqual(parse_retry_after("0", self.NOW), 0.0)

    def test_missing(self) -> None:
        self.assertIsNone(parse_retry_after(None, self.NOW))
        self.assertIsNone(parse_retry_after("", self.NOW))

    def test_httpDate(self) -> None:
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", self.NOW), 30.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 08:28:00 GMT", self.NOW), 3600.0)

    def test_obsoleteRfc850Date(self) -> None:
        self.assertEqual(parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", self.NOW), 60.0)

    def test_dateWithOffset(self) -> None:
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 09:28:10 +0200", self.NOW), 10.0)

    def test_dateInThePast(self) -> None:
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", self.NOW), 0.0)

    def test_garbage(self) -> None:
        for value in ("soon", "-5", "1.5", "5s", "Wed, 32 Oct 2015 07:28:00 GMT", "\u00b2", "\u0661\u0662"):
            self.assertIsNone(parse_retry_after(value, self.NOW), value)

    def test_dateWithoutZone(self) -> None:
        """'-0000' means "zone unknown": not trusted."""
        self.assertIsNone(parse_retry_after("Wed, 21 Oct 2015 07:28:30 -0000", self.NOW))

    @settings(max_examples=500, deadline=None)
    @given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
    def test_neverRaises(self, value: str) -> None:
        """Header values arrive decoded as latin-1: anything at all must not raise."""
        result = parse_retry_after(value, self.NOW)
        if result is not None:
            self.assertGreaterEqual(result, 0.0)
