#!/usr/bin/env python3
"""A long receiver outage, compressed: 100,000 pending deliveries, and the daemon's RSS while they wait.

Starts the installed ``twistd -n butler-webhook`` with one webhook whose receiver is down (a
port nobody listens on: every attempt is refused at once, and retried on a schedule of
minutes), sends ``--alerts`` failed-reload datagrams at ``--rate``, waits until every delivery
is pending in the SQLite outbox, then holds for ``--hold`` seconds while retries fall due. RSS
is sampled every half second. Each ``--bounds`` value is one run, with that
``butlerWebhook.maxPendingInMemory``: a bound far above the backlog shows what memory a
backlog costs when every pending delivery is held in memory (the design before the bound).

    make install    # the daemon measured is the installed one
    .venv/bin/python bench/outage.py [--alerts 100000] [--rate 1000] [--bounds 10000,1000000]
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Daemon, config_text, free_port, machine, mib, rss_kb, versions  # noqa: E402

#: Seconds after acceptance of each attempt: the first retries fall due while the run holds.
SCHEDULE = [0, 15, 30, 45, 60, 600, 3600, 7200, 14400, 28800, 57600, 86400]


def datagram(executionId: str) -> bytes:
    return (
        f"/scheduler-task-failed/;pro2-win1;Reload {executionId[:8]};Finance KPIs;LAB\\anna;{uuid.uuid4()};"
        f"a4c6e8f0-1b3d-4f5a-8c7e-9d0b2f4a6c81;2026-12-03 10:42:31,870;INFO;{executionId};Max retries reached"
    ).encode()


def pending(outbox: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5)
        try:
            (n,) = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()
        finally:
            conn.close()
        return int(n)
    except sqlite3.Error:
        return -1


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.done = pid, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            kb = rss_kb(self.pid)
            if kb:
                self.samples.append(kb)
            time.sleep(0.5)


def run(bound: int, alerts: int, rate: int, hold: float, workdir: Path, dedup: bool = True) -> dict:
    udp, sink = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)  # nobody listens on sink
    schedule = ", ".join(str(s) for s in SCHEDULE)
    ours = (
        f"butlerWebhook:\n  maxPendingInMemory: {bound}\n  maxBufferedAlerts: {alerts}\n"
        f"  delivery:\n    retrySchedule: [{schedule}]\n    maxAge: 90000\n"
    )
    # De-duplication keeps each alert's key for 10 minutes: a cost of the alert rate, not of the backlog.
    extra = "" if dedup else "\n    deduplication:\n      enable: false"
    daemon = Daemon(workdir, config_text(udp, sink, 1, udp_extra=extra, ours=ours), name=f"outage-{bound}")
    daemon.start()
    sampler = Sampler(daemon.pid)
    sampler.start()
    outbox = daemon.workdir / "state" / "outbox.sqlite3"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.time()
    for i in range(alerts):
        sock.sendto(datagram(str(uuid.uuid4())), ("127.0.0.1", udp))
        if i % 100 == 99:
            ahead = started + (i + 1) / rate - time.time()
            if ahead > 0:
                time.sleep(ahead)
    sent = time.time() - started
    deadline = time.time() + 600
    while pending(outbox) < alerts and time.time() < deadline and daemon.alive():
        time.sleep(1)
    stored = time.time() - started
    atStored = rss_kb(daemon.pid)
    time.sleep(hold)
    atEnd, inOutbox = rss_kb(daemon.pid), pending(outbox)
    sampler.done.set()
    sampler.join()
    counters = daemon.stop()
    return {
        "bound": bound,
        "alerts": alerts,
        "pending": inOutbox,
        "sent_s": round(sent, 1),
        "stored_s": round(stored, 1),
        "idle": mib(daemon.idle_rss_kb),
        "stored": mib(atStored),
        "end": mib(atEnd),
        "max": mib(max(sampler.samples, default=0)),
        "attempts": counters.get("attempts_started", 0),
        "spilled": counters.get("deliveries_spilled", 0),
        "paged_in": counters.get("deliveries_paged_in", 0),
        "shed": counters.get("alerts_shed", 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000, help="datagrams per second")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to wait once all are stored")
    parser.add_argument("--bounds", default="10000,1000000", help="maxPendingInMemory of each run")
    parser.add_argument(
        "--no-dedup", action="store_true", help="de-duplication off (its keys cost memory too)"
    )
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="butler-tw-outage-") as tmp:
        for bound in (int(b) for b in opts.bounds.split(",")):
            row = run(bound, opts.alerts, opts.rate, opts.hold, Path(tmp), dedup=not opts.no_dedup)
            print(row, file=sys.stderr)
            rows.append(row)
    print(f"Machine: {machine()}; {versions()}; de-duplication {'off' if opts.no_dedup else 'on'}\n")
    print(
        "| maxPendingInMemory | alerts | pending in the outbox at the end | stored after s | "
        "RSS idle / all stored / end / max MiB | attempts | left to the outbox / read back | shed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['bound']:,} | {r['alerts']:,} | {r['pending']:,} | {r['stored_s']} | "
            f"{r['idle']} / {r['stored']} / {r['end']} / {r['max']} | {r['attempts']:,} | "
            f"{r['spilled']:,} / {r['paged_in']:,} | {r['shed']:,} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
