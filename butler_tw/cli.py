"""``butler-tw``: the admin command line for the outbox.

    butler-tw deliveries --config F [--state pending|dead] [--limit N]
    butler-tw replay --config F (ID ... | --all-dead)

It opens the daemon's SQLite outbox directly (WAL lets it read and write while
the daemon runs). A replayed delivery starts its retry schedule afresh; a
running daemon picks it up within a few seconds, a stopped one at its start.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence, TextIO

from butler_tw.config import Config, ConfigError, load_config
from butler_tw.outbox import Delivery
from butler_tw.sqlitestore import SELECT_DELIVERIES, StoreError, connect, iter_rows


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="butler-tw", description="Inspect and replay butler-tw deliveries.")
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("deliveries", help="list pending or dead deliveries")
    show.add_argument("--config", "-c", required=True, help="the daemon's config file")
    show.add_argument("--state", choices=("pending", "dead"), help="only this state (default: both)")
    show.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")

    replay = sub.add_parser("replay", help="re-queue dead deliveries")
    replay.add_argument("--config", "-c", required=True, help="the daemon's config file")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], help="delivery ids, or alert ids (all of that alert's)")
    which.add_argument("--all-dead", action="store_true", help="every dead delivery")

    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        conn = connect(config.stateDir, create=False)
    except (ConfigError, StoreError) as e:
        print(f"butler-tw: {e}", file=sys.stderr)
        return 2
    if args.command == "deliveries":
        return list_deliveries(conn, config, args.state, args.limit, out)
    if not args.all_dead and not args.ids:
        parser.error("replay needs delivery ids or --all-dead")
    return replay_deliveries(conn, args.ids, args.all_dead, out)


def list_deliveries(conn, config: Config, state: str | None, limit: int, out: TextIO) -> int:  # type: ignore[no-untyped-def]
    where = "WHERE d.state = ? " if state else ""
    rows = iter_rows(
        conn,
        SELECT_DELIVERIES + where + "ORDER BY d.state, d.due_at LIMIT ?",
        ([state] if state else []) + [limit],
    )
    names = {w.key: w.name for w in config.webhooks}
    table: list[tuple[str, ...]] = [
        ("DELIVERY ID", "STATE", "EVENT", "TASK", "WEBHOOK", "ATTEMPTS", "LAST OUTCOME", "NEXT ATTEMPT")
    ]
    table += [_row(d, names) for d in rows]
    # Ids are never cut (they are what `replay` takes); long free text is.
    widths = [
        max(len(r[i]) for r in table) if i == 0 else min(60, max(len(r[i]) for r in table))
        for i in range(len(table[0]))
    ]
    for r in table:
        out.write("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
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
        names.get(d.webhookKey, d.webhookKey + " (no longer configured)"),
        str(d.attempts),
        d.lastOutcome or "-",
        due,
    )


def replay_deliveries(conn, ids: Sequence[str], allDead: bool, out: TextIO) -> int:  # type: ignore[no-untyped-def]
    now = time.time()
    update = (
        "UPDATE deliveries SET state = 'pending', attempts = 0, accepted_at = ?, due_at = ?, "
        "requeued = 1, updated_at = ? WHERE state = 'dead'"
    )
    with conn:
        if allDead:
            n = conn.execute(update, (now, now, now)).rowcount
        else:
            n = 0
            for i in ids:
                n += conn.execute(update + " AND (id = ? OR alert_id = ?)", (now, now, now, i, i)).rowcount
    out.write(f"re-queued {n} dead deliveries\n")
    if not allDead and n == 0:
        out.write("no dead delivery has these ids: see `butler-tw deliveries --state dead`\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
