"""``butler-tw deliveries`` and ``butler-tw replay``: the daemon's outbox, read and re-queued.

Both work on the SQLite outbox directly, through the store's functions
(:func:`~butler_tw.delivery.stores.sqlite.list_deliveries`,
:func:`~butler_tw.delivery.stores.sqlite.replay_dead`); WAL lets them read
and write while the daemon runs. A replayed delivery starts its retry
schedule afresh when the daemon takes it up: a running one within a few
seconds, a stopped one at its start. ``replay`` re-queues only what the
daemon will send (see :mod:`butler_tw.delivery.replay`) and says why not for the rest.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Sequence, TextIO

from butler_tw.cli.sendtest import select_webhooks
from butler_tw.cli.text import format_table
from butler_tw.config import Config
from butler_tw.core.delivery import Delivery, State, describe_key
from butler_tw.core.words import admin_command, count
from butler_tw.daemon.startup import DEFAULT_CONFIG
from butler_tw.delivery.replay import plan_replay
from butler_tw.delivery.stores import sqlite


def list_deliveries(
    conn: sqlite3.Connection, config: Config, state: str | None, limit: int, out: TextIO
) -> int:
    """The table of up to ``limit`` deliveries, ``state`` ones or pending and dead."""
    rows = sqlite.list_deliveries(conn, State(state) if state else None, limit)
    names = {w.key: w.name for w in config.webhooks}
    table: list[tuple[str, ...]] = [
        ("DELIVERY ID", "STATE", "EVENT", "TASK", "WEBHOOK", "ATTEMPTS", "LAST OUTCOME", "NEXT ATTEMPT")
    ]
    table += [_row(d, names) for d in rows]
    # Ids are never cut (they are what `replay` takes); long free text is.
    out.write(format_table(table, cut=60))
    if not rows:
        out.write(f"(no {state or 'pending or dead'} deliveries)\n")
    return 0


def _row(d: Delivery, names: dict[str, str]) -> tuple[str, ...]:
    due = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.dueAt)) if d.state.value == "pending" else "-"
    return (
        d.id,
        d.state.value,
        d.alert.kind.value,
        f"{d.alert.taskName} ({d.alert.taskId})",
        describe_key(d.webhookKey, names),
        str(d.attempts),
        d.lastOutcome or "-",
        due,
    )


def replay_deliveries(
    conn: sqlite3.Connection,
    config: Config,
    ids: Sequence[str],
    allDead: bool,
    to: str | None,
    out: TextIO,
    err: TextIO,
    configPath: str = DEFAULT_CONFIG,
) -> int:
    """Re-queue the dead deliveries ``ids`` (or all), to ``to`` if given; one line per outcome."""
    target = None
    if to is not None:
        chosen, problem = select_webhooks(config, None, to)
        if problem is not None:
            err.write(f"butler-tw replay: --to: {problem}\n")
            return 2
        if len(chosen) > 1:
            several = ", ".join(f"{w.name} ({w.key})" for _, w in chosen)
            err.write(
                f"butler-tw replay: --to {to!r} names {len(chosen)} webhooks: {several}; give its key\n"
            )
            return 2
        target = chosen[0][1]
    decisions = sqlite.replay_dead(
        conn,
        ids,
        allDead,
        lambda dead, bound, existing: plan_replay(dead, config.webhooks, bound, existing, target),
        time.time(),
    )
    names = {w.key: w.name for w in config.webhooks}
    # One line per (webhook, where to, why not), in the order first met.
    groups: dict[tuple[str, str, str], int] = {}
    for d in decisions:
        group = (d.source, names.get(d.target, ""), d.refusal)
        groups[group] = groups.get(group, 0) + 1
    for (source, dest, refusal), n in groups.items():
        what = count(n, "dead delivery", "dead deliveries")
        if refusal:
            out.write(f"not re-queued: {what} of {source}: {refusal}\n")
        elif source == dest:
            out.write(f"re-queued {what} to {dest}\n")
        else:
            out.write(f"re-queued {what} of {source} to {dest}\n")
    found = {d.delivery.id for d in decisions} | {d.delivery.alert.alertId for d in decisions}
    unknown = [i for i in ids if i not in found]
    listCommand = admin_command(configPath, "deliveries", "--state", "dead")
    for i in unknown:
        out.write(f"not re-queued: no dead delivery has the id {i} (see `{listCommand}`)\n")
    if allDead and not decisions:
        out.write("no dead deliveries to re-queue\n")
    return 1 if unknown or any(d.refusal for d in decisions) else 0
