"""``butler-tw deliveries`` and ``butler-tw replay``: the daemon's outbox, read and re-queued.

Both work on the configured outbox directly, through :mod:`butler_tw.cli.store`:
the SQLite file in ``stateDir`` (WAL lets them read and write while the
daemon runs), or the PostgreSQL outbox the daemons of a cluster share (the
listing then says which instance holds each pending delivery). A replayed
delivery starts its retry schedule afresh when a daemon takes it up: a
running one within a few seconds, a stopped one at its start; on a shared
store it belongs to nobody until then, and whichever daemon polls first
takes it. ``replay`` re-queues only what the daemons will send (see
:mod:`butler_tw.delivery.replay`) and says why not for the rest.
"""

from __future__ import annotations

import time
from typing import Sequence, TextIO

from butler_tw.cli.sendtest import select_webhooks
from butler_tw.cli.store import AdminOutbox, Listed
from butler_tw.cli.text import format_table
from butler_tw.config import Config
from butler_tw.core.delivery import Delivery, State, describe_key
from butler_tw.core.words import admin_command, count
from butler_tw.daemon.startup import DEFAULT_CONFIG
from butler_tw.delivery.replay import plan_replay

HEADER = ("DELIVERY ID", "STATE", "EVENT", "TASK", "WEBHOOK", "ATTEMPTS", "LAST OUTCOME", "NEXT ATTEMPT")


def list_deliveries(outbox: AdminOutbox, config: Config, state: str | None, limit: int, out: TextIO) -> int:
    """The table of up to ``limit`` deliveries, ``state`` ones or pending and dead.

    A shared outbox's has one more column, HELD BY: the instance whose lease a
    pending delivery is under.
    """
    rows = outbox.deliveries(State(state) if state else None, limit)
    names = {w.key: w.name for w in config.webhooks}
    table: list[tuple[str, ...]] = [(*HEADER, "HELD BY") if outbox.shared else HEADER]
    table += [_row(r.delivery, names) + ((held_by(r),) if outbox.shared else ()) for r in rows]
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


def held_by(listed: Listed) -> str:
    """Who holds a pending delivery of the shared outbox.

    An instance; ``nobody yet`` (re-queued, or handed back at a clean stop);
    or one whose lease ran out (is it down?). In the last two cases the next
    daemon to poll takes it.
    """
    if listed.delivery.state is not State.PENDING:
        return "-"
    if listed.owner is None:
        return "nobody yet"
    if not listed.leaseLive:
        return f"{listed.owner} (lease ran out)"
    return listed.owner


def replay_deliveries(
    outbox: AdminOutbox,
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
    decisions = outbox.replay(
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
