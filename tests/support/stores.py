"""Reading a whole outbox back in tests: every pending delivery, as the dispatchers would page it in."""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet.defer import Deferred, gatherResults

from butler_tw.core.delivery import Delivery, Page

#: The webhook keys the tests use.
KEYS = ("a", "b", "c", "k0", "k1") + tuple(
    f"{event}.webhooks[{i}]" for event in ("reloadTaskFailure", "reloadTaskAborted") for i in range(4)
)


def all_pending(outbox: Any, keys: Iterable[str] = KEYS) -> Deferred[list[Delivery]]:
    """Every pending delivery of ``keys`` (``IOutbox.due`` of each, in turn), by key then due time."""
    reads = [outbox.due(key, 1_000_000) for key in keys]

    def joined(pages: list[Page]) -> list[Delivery]:
        return [d for page in pages for d in page.deliveries]

    return gatherResults(reads, consumeErrors=True).addCallback(joined)
