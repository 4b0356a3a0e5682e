#!/usr/bin/env python3
"""Does the outbox's cost stay flat as it fills? Enqueue, record, claim and prune at 10k, 100k, 1M pending.

For each store (SQLite; PostgreSQL from a throwaway server with durable settings)
and each size, a fresh outbox is filled with that many pending deliveries (one
alert each, written straight in one transaction: the filling is not what is
measured), then the store object the daemon uses is timed doing what a storm
makes it do, on the real reactor and its writer thread:

- **enqueue**: 2,000 new alerts with one delivery each (``add``), group-committed;
- **record**: 2,000 outcomes (``record``: delivered, i.e. deleted);
- **claim**: PostgreSQL: taking over 1,000 deliveries nobody holds (``requeued``,
  ``FOR UPDATE SKIP LOCKED``); SQLite: picking up 1,000 re-queued by a replay;
- **prune**: the housekeeping every 5 minutes.

Flat per-operation costs from 10k to 1M mean the queries use their indexes.

    .venv/bin/python bench/outbox_scale.py [--sizes 10000,100000,1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, task

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from common import machine, versions  # noqa: E402

from butler_tw.core.delivery import State  # noqa: E402
from butler_tw.delivery.stores.rows import alert_to_json  # noqa: E402
from tests.support.alerts import ALERT  # noqa: E402

KEY = "reloadTaskFailure.webhooks[0]"
OPS = 2000
CLAIMS = 1000


def alerts(n: int, prefix: str) -> list[Any]:
    return [attrs.evolve(ALERT, executionId=str(uuid.uuid4()), taskId=f"{prefix}{i:08d}") for i in range(n)]


def fill_rows(n: int, now: float, owner: bool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows for ``n`` alerts and one pending delivery each (SQLite's columns; PostgreSQL adds owner)."""
    base = attrs.evolve(ALERT, executionId="00000000-0000-4000-8000-000000000000")
    fields = alert_to_json(base)
    alertRows, deliveryRows = [], []
    for i in range(n):
        aid = f"msg_fill{i:012d}"
        alertRows.append((aid, base.kind.value, fields, now))
        deliveryRows.append((f"{aid}/{KEY}", aid, KEY, now, now + 3600 + i % 1000, now))
    return alertRows, deliveryRows


def fill_sqlite(stateDir: str, n: int, now: float) -> None:
    from butler_tw.delivery.stores.sqlite import connect

    conn = connect(stateDir)
    alertRows, deliveryRows = fill_rows(n, now, owner=False)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO alerts (alert_id, kind, fields, accepted_at) VALUES (?, ?, ?, ?)", alertRows
    )
    conn.executemany(
        "INSERT INTO deliveries (id, alert_id, webhook_key, accepted_at, attempts, due_at, state, last_outcome,"
        " updated_at, requeued) VALUES (?, ?, ?, ?, 0, ?, 'pending', '', ?, 0)",
        deliveryRows,
    )
    conn.execute("INSERT OR REPLACE INTO webhooks (key, fingerprint) VALUES (?, ?)", (KEY, "f"))
    conn.execute("COMMIT")
    conn.close()


def fill_postgres(dsn: str, n: int, now: float) -> None:
    from butler_tw.delivery.stores.postgres import SCHEMA, migrate, open_connection

    conn = open_connection(dsn, "bench fill")
    migrate(conn, "bench")
    alertRows, deliveryRows = fill_rows(n, now, owner=True)
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy(
            f"COPY {SCHEMA}.alerts (alert_id, kind, fields, accepted_at, accepted_by) FROM STDIN"
        ) as copy:
            for row in alertRows:
                copy.write_row((*row, "other"))
        # Held by a daemon "other" whose lease is long over: claimable.
        with cur.copy(
            f"COPY {SCHEMA}.deliveries (id, alert_id, webhook_key, accepted_at, attempts, due_at, state, "
            "last_outcome, updated_at, requeued, owner, lease_until) FROM STDIN"
        ) as copy:
            for did, aid, key, acc, due, upd in deliveryRows:
                copy.write_row((did, aid, key, acc, 0, due, "pending", "", upd, False, "other", 0))
        cur.execute(f"INSERT INTO {SCHEMA}.webhooks (key, fingerprint) VALUES (%s, %s)", (KEY, "f"))
    conn.execute(f"ANALYZE {SCHEMA}.deliveries")
    conn.execute(f"ANALYZE {SCHEMA}.alerts")
    conn.close()


async def measure(outbox: Any, prefix: str) -> dict[str, float]:
    outbox.open()
    await outbox.rebind({KEY: "f"})
    fresh = alerts(OPS, prefix)
    t = time.perf_counter()
    added = await defer.gatherResults([outbox.add(a, [KEY], time.time()) for a in fresh])
    await outbox.flushed()
    enqueue = (time.perf_counter() - t) / OPS
    t = time.perf_counter()
    for (d,) in added:
        outbox.record(attrs.evolve(d, state=State.DELIVERED, attempts=1))
    await outbox.flushed()
    record = (time.perf_counter() - t) / OPS
    claim = await measure_claim(outbox)
    t = time.perf_counter()
    outbox.prune()
    await outbox.flushed()
    prune = time.perf_counter() - t
    await outbox.close()
    return {
        "enqueue_us": enqueue * 1e6,
        "record_us": record * 1e6,
        "claim_us": claim * 1e6,
        "prune_ms": prune * 1e3,
    }


async def measure_claim(outbox: Any) -> float:
    from butler_tw.delivery.stores.sqlite import SqliteOutbox

    if isinstance(outbox, SqliteOutbox):
        # As `butler-tw replay` leaves them: re-queued, for the daemon to pick up.
        conn = sqlite3.connect(outbox.where, timeout=10)
        conn.execute(
            "UPDATE deliveries SET requeued = 1 WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' "
            "LIMIT ?)",
            (CLAIMS,),
        )
        conn.commit()
        conn.close()
    t = time.perf_counter()
    got = await outbox.requeued()
    elapsed = time.perf_counter() - t
    if len(got) != CLAIMS:
        raise SystemExit(f"claimed {len(got)}, expected {CLAIMS}")
    return elapsed / CLAIMS


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []

    async def run(reactor: Any) -> None:
        from butler_tw.delivery.stores.sqlite import SqliteOutbox

        for n in sizes:
            stateDir = tempfile.mkdtemp(prefix="butler-tw-scale-")
            fill_sqlite(stateDir, n, time.time())
            result = await measure(SqliteOutbox(stateDir, reactor), "s")
            rows.append({"store": "sqlite", "pending": n, **result})
            print(json.dumps(rows[-1]), flush=True)
        if args.no_postgres:
            return
        from butler_tw.delivery.stores.postgres import PostgresOutbox
        from tests.support.postgres import PostgresServer

        server = PostgresServer(
            settings={"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        )
        try:
            for n in sizes:
                dsn = server.create_database(f"scale{n}")
                fill_postgres(dsn, n, time.time())
                result = await measure(PostgresOutbox(dsn, "bench", "bench", reactor), "p")
                rows.append({"store": "postgresql", "pending": n, **result})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            server.cleanup()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))  # exits the process: print below first
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| store | pending in the outbox | enqueue µs/alert | record µs/outcome | claim µs/delivery | prune ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['pending']:,} | {r['enqueue_us']:.0f} | {r['record_us']:.0f} "
            f"| {r['claim_us']:.0f} | {r['prune_ms']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        rows = [json.loads(line) for line in open(sys.argv[2]) if line.startswith("{")]
        print(f"Machine: {machine()}\n{versions()}\n")
        print(table(rows))
        sys.exit(0)
    sys.exit(main())
