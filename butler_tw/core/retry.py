"""When to try a delivery again. Pure: every decision takes the time as input.

The contract is the one Alertmanager, Svix and Standard Webhooks agree on:
2xx is delivered; connection errors, timeouts, 5xx, 408 and 429 are worth
another try; any other 4xx and every 3xx will fail the same way again. Alerts
go stale, so the schedule is bounded: minutes to half an hour, not days.
"""

from __future__ import annotations

import enum
import random
from typing import Callable

import attrs

#: Seconds after acceptance of each attempt: 0 s, 5 s, 30 s, 2 min, 10 min, 30 min.
DEFAULT_SCHEDULE: tuple[float, ...] = (0.0, 5.0, 30.0, 120.0, 600.0, 1800.0)
#: A delivery older than this is given up whatever the schedule says (1 h).
DEFAULT_MAX_AGE = 3600.0
JITTER = 0.2


class Verdict(enum.Enum):
    """What one attempt's outcome means for the delivery."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


def verdict_for_status(status: int) -> Verdict:
    """Classify an HTTP status code."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status >= 500 or status in (408, 429):
        return Verdict.RETRY
    return Verdict.PERMANENT


@attrs.frozen
class Outcome:
    """What one attempt came to. Safe to log: holds no URL or header value.

    :ivar status: the HTTP status, when a response came.
    :ivar error: what went wrong, when no usable response came.
    """

    status: int | None = None
    error: str | None = None
    retryAfter: float | None = None
    tlsFailure: bool = False
    timedOut: bool = False

    @property
    def verdict(self) -> Verdict:
        if self.status is not None:
            return verdict_for_status(self.status)
        return Verdict.RETRY

    @property
    def kind(self) -> str:
        """The outcome in one word, for metrics: delivered, retry, permanent_failure, timeout, tls_error."""
        if self.tlsFailure:
            return "tls_error"
        if self.timedOut:
            return "timeout"
        return {
            Verdict.DELIVERED: "delivered",
            Verdict.RETRY: "retry",
            Verdict.PERMANENT: "permanent_failure",
        }[self.verdict]

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or "failed"


def hint_for_status(status: int) -> str:
    """A short hint for the log line of a failed attempt, for the 3 a.m. reader."""
    if 300 <= status < 400:
        return "redirects are not followed: put the final URL in webhookURL"
    if status in (401, 403):
        return "the receiver refused our credentials: check the token in webhookURL"
    if status in (404, 410):
        return "check the URL"
    if status == 405:
        return "the receiver does not accept this method: check httpMethod"
    if status in (400, 413, 415, 422):
        return "the receiver rejected the payload"
    if status == 429:
        return "the receiver is rate limiting us"
    if status >= 500:
        return "the receiver had an error"
    return ""


@attrs.frozen
class RetryPolicy:
    """A bounded retry schedule.

    :ivar schedule: seconds after acceptance at which each attempt is due; the
        first is normally 0. Its length is the most attempts made.
    :ivar maxAge: seconds after acceptance after which no attempt is started.
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    maxAge: float = DEFAULT_MAX_AGE

    def next_attempt_at(
        self,
        acceptedAt: float,
        attemptsMade: int,
        now: float,
        retryAfter: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """When to make the next attempt, or ``None`` to give up.

        :param attemptsMade: attempts already made, the failed one included.
        :param retryAfter: seconds the receiver asked us to wait (429/503),
            honoured when it fits in what is left of the schedule and maxAge.
        :param rand: a source of uniform [0, 1) numbers, for the jitter.
        """
        if attemptsMade >= len(self.schedule):
            return None
        offset = self.schedule[attemptsMade]
        jitter = offset * JITTER * (2 * rand() - 1)
        due = max(now, acceptedAt + offset + jitter)
        if retryAfter is not None:
            due = max(due, now + retryAfter)
        if due - acceptedAt > self.maxAge:
            return None
        return due


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
