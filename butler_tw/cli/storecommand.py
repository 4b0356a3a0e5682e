"""``butler-tw store init`` and ``butler-tw store status``: the outbox store itself.

``init`` creates the configured store, or brings its schema up to date
(what a daemon also does at its start): for a shared PostgreSQL store, so
that it can be set up, and the admin commands used, before any daemon runs.
``status`` shows the cluster as the shared store sees it: every instance,
what each holds, how deep the outbox is (the same view as ``/health``'s
``cluster``).
"""

from __future__ import annotations

import time
from typing import TextIO

from butler_tw.cli import store
from butler_tw.cli.store import EX_STORE
from butler_tw.cli.text import format_table
from butler_tw.config import Config
from butler_tw.core.words import DEFAULT_CONFIG, admin_command, count
from butler_tw.web.health import cluster_body


def store_init(config: Config, out: TextIO, err: TextIO) -> int:
    try:
        out.write(store.init_store(config) + "\n")
    except store.StoreUnavailable as e:
        err.write(f"butler-tw: {e}\n")
        return EX_STORE
    return 0


def store_status(config: Config, out: TextIO, err: TextIO, configPath: str = DEFAULT_CONFIG) -> int:
    now = time.time()
    try:
        view = store.read_cluster(config, now, configPath)
    except store.StoreUnavailable as e:
        err.write(f"butler-tw: {e}\n")
        return EX_STORE
    if view is None:
        out.write(
            f"outbox      SQLite in stateDir ({config.stateDir}), for one daemon: no cluster to show "
            f"(`{admin_command(configPath, 'deliveries')}` lists what it holds)\n"
        )
        return 0
    body = cluster_body(now, view, None, config.leaseSeconds)
    pending = count(view.pending, "pending delivery", "pending deliveries")
    if view.unowned:
        pending += f" ({view.unowned} unclaimed: the next daemon to poll takes them)"
    oldest = body["oldestPendingSeconds"]
    if oldest is not None:
        pending += f", the oldest accepted {ago(oldest)} ago"
    dead = count(view.dead, "dead letter", "dead letters")
    out.write(f"outbox      PostgreSQL {config.store.loggable}, shared\n")
    out.write(f"deliveries  {pending}; {dead}\n")
    if not body["instances"]:
        out.write("instances   none yet (no daemon has run with this store)\n")
        return 0
    table = [("INSTANCE", "HOST", "PID", "VERSION", "STATE", "LAST SEEN", "HOLDS")]
    table += [
        (
            m["name"],
            m["host"],
            str(m["pid"]),
            m["version"],
            m["state"],
            f"{ago(m['lastSeenSecondsAgo'])} ago",
            str(m["holds"]),
        )
        for m in body["instances"]
    ]
    out.write(format_table(table))
    return 0


def ago(seconds: float) -> str:
    """``12 s``, ``5 min``, ``3 h``, ``2 d``: how long ago, roughly."""
    seconds = max(0.0, seconds)
    for unit, size, below in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < below:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds / 86400:.0f} d"
