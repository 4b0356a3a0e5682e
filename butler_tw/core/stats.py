"""Counters and latency histograms: every stage counts what it does.

Plain in-process numbers, cheap to update on the hot path. They are logged at
shutdown and read by the ``/metrics`` collector at scrape time
(:mod:`butler_tw.metrics`), so there is one source of truth. Names are
``stage_what``; a counter may carry one label (a webhook's config key, an
event kind, a rejection reason), which the collector turns into the right
Prometheus label.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Mapping

#: Upper bounds, in seconds, of the datagram-to-delivery latency buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and number."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(upper bound, observations <= it), …, (inf, all)]``, as Prometheus wants them."""
        out, total = [], 0
        for bound, n in zip([*self.buckets, math.inf], self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Stats:
    """Monotonically increasing counters, optionally labelled, and histograms."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self.histograms: dict[tuple[str, str], Histogram] = {}

    def incr(self, name: str, label: str = "", by: int = 1) -> None:
        self._counts[(name, label)] += by

    def get(self, name: str, label: str | None = None) -> int:
        """The counter for ``label``; without one, summed over every label."""
        if label is not None:
            return self._counts[(name, label)]
        return sum(n for (counter, _), n in self._counts.items() if counter == name)

    def observe(self, name: str, value: float, label: str = "") -> None:
        histogram = self.histograms.get((name, label))
        if histogram is None:
            histogram = self.histograms[(name, label)] = Histogram()
        histogram.observe(value)

    def relabel(self, moves: Mapping[str, str]) -> None:
        """Move every counter and histogram labelled ``old`` to ``new``, for each ``old -> new``.

        At a configuration reload, per-webhook numbers follow their webhook to
        its new position, so that a position taken by another webhook starts
        from its own numbers. All moves happen at once (positions may swap).
        """
        counts: Counter[tuple[str, str]] = Counter()
        for (name, label), n in self._counts.items():
            counts[(name, moves.get(label, label))] += n
        self._counts = counts
        histograms: dict[tuple[str, str], Histogram] = {}
        for (name, label), histogram in self.histograms.items():
            key = (name, moves.get(label, label))
            if key in histograms:
                merged = histograms[key]
                merged.counts = [a + b for a, b in zip(merged.counts, histogram.counts, strict=True)]
                merged.sum += histogram.sum
                merged.count += histogram.count
            else:
                histograms[key] = histogram
        self.histograms = histograms

    def items(self) -> list[tuple[str, str, int]]:
        """Every counter as (name, label, value)."""
        return [(name, label, n) for (name, label), n in self._counts.items()]

    def snapshot(self) -> dict[str, int]:
        """All counters summed over their labels, sorted by name."""
        out: Counter[str] = Counter()
        for (name, _), n in self._counts.items():
            out[name] += n
        return dict(sorted(out.items()))
