"""What the attempts to one webhook came to: the dispatcher records, ``/health`` and ``/metrics`` read."""

from __future__ import annotations

import attrs


@attrs.define
class WebhookHealth:
    """What the last attempts to one webhook came to. Reasons are safe to show: no URL."""

    lastSuccess: float | None = None
    lastFailure: float | None = None
    lastFailureReason: str | None = None
    consecutiveFailures: int = 0
    #: When a delivery to it was last given up (a dead letter).
    lastDead: float | None = None

    def success(self, now: float) -> None:
        self.lastSuccess = now
        self.consecutiveFailures = 0

    def failure(self, now: float, reason: str) -> None:
        self.lastFailure = now
        self.lastFailureReason = reason
        self.consecutiveFailures += 1

    @property
    def failing(self) -> bool:
        return self.consecutiveFailures > 0
