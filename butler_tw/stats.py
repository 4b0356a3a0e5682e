"""Counters: every stage counts what it does.

Plain in-process counters; they are logged at shutdown and are the source for
any exporter. Names are ``stage_what``; per-webhook counters carry the
webhook's config key as a label.
"""

from __future__ import annotations

from collections import Counter


class Stats:
    """A bag of monotonically increasing counters."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def incr(self, name: str, webhook: str = "", by: int = 1) -> None:
        self._counts[(name, webhook)] += by

    def get(self, name: str, webhook: str = "") -> int:
        return self._counts[(name, webhook)]

    def snapshot(self) -> dict[str, int]:
        """All counters summed over webhooks, sorted by name."""
        out: Counter[str] = Counter()
        for (name, _), n in self._counts.items():
            out[name] += n
        return dict(sorted(out.items()))
