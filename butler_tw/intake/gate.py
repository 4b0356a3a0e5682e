"""The intake gate: which datagrams are read at all, and the throttled warnings about the rest.

In order: the source must be allowed (``enableSourceValidation``), within its
per-minute budget (``rateLimit``), and the datagram no larger than
``maxMessageSize``. Every refusal is counted; the first of each kind per
source address per minute is logged, the rest are summarised once a minute
by a timer, so hostile input cannot flood the log.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from butler_tw.core.alert import fingerprint
from butler_tw.core.sources import SourceFilter
from butler_tw.core.stats import Stats
from butler_tw.core.throttle import LogThrottle
from butler_tw.core.wireformat import Rejected
from butler_tw.core.words import count
from butler_tw.intake.sourcelimit import SourceRateLimit

log = Logger(namespace="butler_tw.gate")


class Gate:
    """Admits or refuses datagrams before they are parsed; reports what it refused."""

    def __init__(
        self,
        clock: IReactorTime,
        stats: Stats,
        maxMessageSize: int,
        sources: SourceFilter | None = None,
        perSourceLimit: SourceRateLimit | None = None,
    ) -> None:
        self._stats = stats
        self._maxMessageSize = maxMessageSize
        self._sources = sources
        self._perSource = perSourceLimit
        self._log = LogThrottle(clock, self._summarise)
        self._clock = clock
        #: When a source last went over rateLimit.maxMessagesPerMinute (for /health).
        self.lastRateLimitedAt: float | None = None

    def admit(self, data: bytes, source: str) -> bool:
        """Whether to parse ``data`` from ``source``; refusals are counted and reported."""
        if self._sources is not None and not self._sources.allows(source):
            self._stats.incr("datagrams_source_refused")
            self.reject(data, source, Rejected("the source address is not in allowedSources", "source"))
            return False
        if self._perSource is not None and not self._perSource.allow(source):
            self._stats.incr("datagrams_source_rate_limited")
            self.lastRateLimitedAt = self._clock.seconds()
            reason = f"more than rateLimit.maxMessagesPerMinute ({self._perSource.perMinute}) from there"
            self.reject(data, source, Rejected(reason, "rate"))
            return False
        if len(data) > self._maxMessageSize:
            self._stats.incr("datagrams_oversize")
            reason = f"larger than maxMessageSize ({self._maxMessageSize} bytes)"
            self.reject(data, source, Rejected(reason, "oversize"))
            return False
        return True

    def reject(self, data: bytes, source: str, result: Rejected) -> None:
        """Count a datagram that goes no further; log it unless its kind and source did this minute."""
        self._stats.incr("datagrams_rejected", result.kind)
        if self._log.allow((result.kind, source)):
            log.warn(
                "Dropped a datagram of {size} bytes from {source} (sha256 {digest}): {reason}. "
                "More like it from there are counted and summarised once per {period:g} s",
                size=len(data),
                source=source,
                digest=fingerprint(data),
                reason=result.reason,
                period=self._log.period,
            )

    def _summarise(self, swallowed: dict[tuple[str, str], int]) -> None:
        top = sorted(swallowed.items(), key=lambda kv: -kv[1])
        details = ", ".join(f"{n} {kind} from {source}" for (kind, source), n in top[:10])
        if len(top) > 10:
            rest = sum(n for _, n in top[10:])
            others = count(len(top) - 10, "other (problem, source) pair", "other (problem, source) pairs")
            details += f", and {rest} more from {others}"
        total = sum(swallowed.values())
        log.warn(
            "Dropped {datagrams} in the last {period:g} s: {details}",
            datagrams=count(total, "more datagram", "more datagrams"),
            total=total,
            period=self._log.period,
            details=details,
        )

    def stop(self) -> None:
        """On shutdown: summarise what was swallowed, cancel the timers."""
        self._log.stop()
        if self._perSource is not None:
            self._perSource.stop()
