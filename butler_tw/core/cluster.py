"""What a store shared by several daemons knows of them: value objects, read every few seconds."""

from __future__ import annotations

import attrs


@attrs.frozen
class Member:
    """One daemon of the cluster, as the store sees it."""

    name: str
    host: str
    pid: int
    version: str
    #: Seconds since it last renewed (by the database's clock).
    silentFor: float
    stopped: bool
    #: Pending deliveries it holds a lease on.
    holds: int


@attrs.frozen
class ClusterView:
    """The shared outbox, read every few seconds (for /health and /metrics)."""

    readAt: float
    members: tuple[Member, ...]
    pending: int
    dead: int
    oldestPendingAt: float | None
    #: Pending deliveries nobody holds (released, replayed, or their owner's lease ran out).
    unowned: int
